"""Tests of the MultiBoxTarget operator: hand-computed fixtures, the numpy reference, and
differential comparison with MXNet's built-in ``mx.contrib.nd.MultiBoxTarget``."""
import math

import mxnet as mx
import numpy as np
import pytest

import ssdkit  # noqa: F401  (registers mx.nd.MultiBoxTarget)
from ssdkit.anchors import ssd_anchors
from ssdkit.reference.multibox_target import multibox_target as reference_target

LOC_TOL = dict(rtol=1e-5, atol=1e-5)


def run_op(anchor, label, cls_pred, **kwargs):
    """Our operator on numpy inputs -> (loc_target, loc_mask, cls_target) numpy arrays."""
    out = mx.nd.MultiBoxTarget(mx.nd.array(anchor), mx.nd.array(label), mx.nd.array(cls_pred), **kwargs)
    return tuple(o.asnumpy() for o in out)


def run_contrib(anchor, label, cls_pred, **kwargs):
    """MXNet's built-in operator on the same inputs."""
    out = mx.contrib.nd.MultiBoxTarget(mx.nd.array(anchor), mx.nd.array(label), mx.nd.array(cls_pred),
                                       **kwargs)
    return tuple(o.asnumpy() for o in out)


def assert_same_targets(got, expected):
    loc, mask, cls = got
    np.testing.assert_allclose(loc, expected[0], **LOC_TOL)
    np.testing.assert_array_equal(mask, expected[1])
    np.testing.assert_array_equal(cls, expected[2])


def random_boxes(rng, n, min_size=0.03, max_size=0.6):
    """(n, 4) corner boxes with centres in [0, 1] and sizes in [min_size, max_size]."""
    xy = rng.uniform(0, 1, (n, 2))
    wh = rng.uniform(min_size, max_size, (n, 2))
    return np.concatenate([xy - wh / 2, xy + wh / 2], axis=1).astype(np.float32)


def multi_layer_anchors(maps, sizes=None):
    """(1, N, 4) SSD anchors over feature maps of the given sizes (6 shapes per location)."""
    layers = []
    for i, m in enumerate(maps):
        s = 0.1 + 0.8 * i / max(1, len(maps) - 1)
        layers.append(ssd_anchors(m, m, sizes=(s, math.sqrt(s * (s + 0.1))), ratios=(1, 2, 0.5, 3, 1 / 3)))
    return np.concatenate(layers)[None]


def random_labels(rng, batch, max_gt, num_classes, width=5, counts=None):
    """(B, M, width) labels padded with -1; counts[b] valid rows (random when None)."""
    label = -np.ones((batch, max_gt, width), dtype=np.float32)
    for b in range(batch):
        k = rng.randint(0, max_gt + 1) if counts is None else counts[b]
        label[b, :k, 0] = rng.randint(0, num_classes, k)
        label[b, :k, 1:5] = random_boxes(rng, k)
        if width > 5:
            label[b, :k, 5:] = rng.randint(0, 2, (k, width - 5))
    return label


# ---------------------------------------------------------------------------------------------
# Hand-computed fixtures
# ---------------------------------------------------------------------------------------------

def test_two_anchors_one_ground_truth_with_mining():
    anchor = np.array([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]], dtype=np.float32)
    label = np.array([[[2, 0.1, 0.1, 0.5, 0.5]]], dtype=np.float32)
    cls_pred = np.zeros((1, 4, 2), dtype=np.float32)
    # IoU(anchor 0, gt) = 0.16 / 0.25 = 0.64 -> positive; anchor 1 does not overlap.
    # 1 positive * ratio 3 = 3 negatives, limited to the 1 anchor left.
    loc, mask, cls = run_op(anchor, label, cls_pred, negative_mining_ratio=3)
    # centre offset 0.05 / 0.5 / 0.1 = 1; size log(0.4 / 0.5) / 0.2
    tw = math.log(0.8) / 0.2
    np.testing.assert_allclose(loc, [[1.0, 1.0, tw, tw, 0, 0, 0, 0]], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(cls, [[3, 0]])


def grid_3x3():
    """(1, 9, 4) anchors: the cells of a 3x3 grid, row-major."""
    cells = [[c / 3, r / 3, (c + 1) / 3, (r + 1) / 3] for r in range(3) for c in range(3)]
    return np.array([cells], dtype=np.float32)


GRID_LABEL = np.array([[[0, 0, 0, 1 / 3, 1 / 3],             # exactly cell 0: IoU 1
                        [4, 1 / 3, 1 / 3, 1.0, 2 / 3],       # cells 4 and 5: IoU 0.5 each
                        [-1, -1, -1, -1, -1]]], dtype=np.float32)


def test_grid_tie_goes_to_lowest_anchor_and_threshold_is_strict():
    cls_pred = np.zeros((1, 6, 9), dtype=np.float32)
    # gt 1 ties between anchors 4 and 5: the bipartite step claims anchor 4; anchor 5's IoU of
    # exactly 0.5 is not > 0.5.
    _, mask, cls = run_op(grid_3x3(), GRID_LABEL, cls_pred)
    np.testing.assert_array_equal(cls, [[1, 0, 0, 0, 5, 0, 0, 0, 0]])
    np.testing.assert_array_equal(mask.reshape(9, 4)[:, 0], [1, 0, 0, 0, 1, 0, 0, 0, 0])
    _, _, cls = run_op(grid_3x3(), GRID_LABEL, cls_pred, overlap_threshold=0.4)
    np.testing.assert_array_equal(cls, [[1, 0, 0, 0, 5, 5, 0, 0, 0]])


def test_grid_hard_negative_mining():
    cls_pred = np.zeros((1, 6, 9), dtype=np.float32)
    cls_pred[0, 0] = [0, 5, 1, -2, 0, 3, -1, -1, 2]   # background logits; other classes 0
    # positives: anchors 0 and 4 -> ratio 1 gives 2 negatives. Candidates (best IoU < 0.5):
    # 1, 2, 3, 6, 7, 8 (anchor 5 has IoU 0.5). Lowest background probability: 3, then 6 and 7
    # tie -> the lower index 6 wins.
    loc, mask, cls = run_op(grid_3x3(), GRID_LABEL, cls_pred, negative_mining_ratio=1)
    np.testing.assert_array_equal(cls, [[1, -1, -1, 0, 5, -1, 0, -1, -1]])
    # ratio 2 -> 4 negatives: 3, 6, 7, then 2 (logit 1).
    _, _, cls = run_op(grid_3x3(), GRID_LABEL, cls_pred, negative_mining_ratio=2, ignore_label=-7)
    np.testing.assert_array_equal(cls, [[1, -7, 0, 0, 5, -7, 0, 0, -7]])
    # contrib agrees on both.
    for ratio in (1, 2):
        assert_same_targets(run_op(grid_3x3(), GRID_LABEL, cls_pred, negative_mining_ratio=ratio),
                            run_contrib(grid_3x3(), GRID_LABEL, cls_pred, negative_mining_ratio=ratio))


def test_grid_loc_targets_and_variances():
    cls_pred = np.zeros((1, 6, 9), dtype=np.float32)
    loc, _, _ = run_op(grid_3x3(), GRID_LABEL, cls_pred, variances=(0.5, 0.25, 1.0, 2.0))
    loc = loc.reshape(9, 4)
    np.testing.assert_allclose(loc[0], [0, 0, 0, 0], atol=1e-6)
    # anchor 4: centre (0.5, 0.5), size 1/3; gt 1: centre (2/3, 0.5), size (2/3, 1/3)
    np.testing.assert_allclose(loc[4], [(1 / 6) / (1 / 3) / 0.5, 0, math.log(2) / 1.0, 0], atol=1e-5)
    np.testing.assert_allclose(loc[[1, 2, 3, 5, 6, 7, 8]], 0)


def test_image_without_ground_truth_is_ignored_and_rows_after_padding_are_not_used():
    anchor = grid_3x3()
    label = -np.ones((2, 3, 5), dtype=np.float32)
    label[1, 1] = [1, 0, 0, 1 / 3, 1 / 3]     # after the padding row 0: not a ground truth
    cls_pred = np.zeros((2, 3, 9), dtype=np.float32)
    for kwargs in ({}, {"negative_mining_ratio": 3}):
        loc, mask, cls = run_op(anchor, label, cls_pred, ignore_label=-5, **kwargs)
        np.testing.assert_array_equal(cls, -5)
        np.testing.assert_array_equal(loc, 0)
        np.testing.assert_array_equal(mask, 0)


def test_reference_matches_hand_fixtures():
    cls_pred = np.zeros((1, 6, 9), dtype=np.float32)
    cls_pred[0, 0] = [0, 5, 1, -2, 0, 3, -1, -1, 2]
    for kwargs in ({}, {"overlap_threshold": 0.4}, {"negative_mining_ratio": 1}):
        assert_same_targets(reference_target(grid_3x3(), GRID_LABEL, cls_pred, **kwargs),
                            run_op(grid_3x3(), GRID_LABEL, cls_pred, **kwargs))


# ---------------------------------------------------------------------------------------------
# Differential tests against mx.contrib.nd.MultiBoxTarget and the numpy reference
# ---------------------------------------------------------------------------------------------

SETTINGS = [
    {},
    {"negative_mining_ratio": 3},
    {"negative_mining_ratio": 3, "negative_mining_thresh": 0.4, "overlap_threshold": 0.6},
    {"overlap_threshold": 0.3, "ignore_label": -2, "variances": (0.2, 0.15, 0.3, 0.25)},
    {"overlap_threshold": 0.7, "negative_mining_ratio": 1.5, "negative_mining_thresh": 0.3},
    {"overlap_threshold": 0.0, "negative_mining_ratio": 2.5},
    {"overlap_threshold": -1.0},
]


@pytest.mark.parametrize("seed", range(24))
def test_matches_contrib_on_random_cases(seed):
    rng = np.random.RandomState(seed)
    batch = 1 + seed % 9
    num_classes = int(rng.choice([1, 3, 20, 80]))
    anchor = random_boxes(rng, int(rng.randint(1, 2500)), 0.02, 0.5)[None]
    counts = rng.randint(0, 9, batch)
    counts[rng.rand(batch) < 0.2] = 0                       # some images have no ground truth
    label = random_labels(rng, batch, 8 + seed % 3, num_classes, width=5 + seed % 2, counts=counts)
    cls_pred = rng.randn(batch, num_classes + 1, anchor.shape[1]).astype(np.float32) * 3
    kwargs = SETTINGS[seed % len(SETTINGS)]
    expected = run_contrib(anchor, label, cls_pred, **kwargs)
    assert_same_targets(run_op(anchor, label, cls_pred, **kwargs), expected)
    assert_same_targets(reference_target(anchor, label, cls_pred, **kwargs), expected)


@pytest.mark.parametrize("maps, batch, num_classes", [
    ((38, 19, 10, 5, 3, 1), 2, 20),          # N = 11640 (6 shapes per location)
    ((64, 32, 16, 8, 4, 2, 1), 1, 80),       # N = 32766
])
def test_matches_contrib_on_ssd_anchor_sets(maps, batch, num_classes):
    rng = np.random.RandomState(len(maps))
    anchor = multi_layer_anchors(maps)
    label = random_labels(rng, batch, 6, num_classes, counts=[6] * batch)
    cls_pred = rng.randn(batch, num_classes + 1, anchor.shape[1]).astype(np.float32)
    for kwargs in ({"negative_mining_ratio": 3}, {}):
        assert_same_targets(run_op(anchor, label, cls_pred, **kwargs),
                            run_contrib(anchor, label, cls_pred, **kwargs))


def test_many_ground_truths_compete_for_few_anchors():
    # More ground truths than anchors and many exact IoU ties: stresses the bipartite step.
    rng = np.random.RandomState(7)
    anchor = grid_3x3()
    label = -np.ones((4, 12, 5), dtype=np.float32)
    for b in range(4):
        k = 12 - b
        cells = rng.randint(0, 9, k)
        label[b, :k, 0] = rng.randint(0, 4, k)
        label[b, :k, 1:] = anchor[0, cells] + rng.choice([0, 0.05], (k, 4)).astype(np.float32)
    cls_pred = rng.randn(4, 5, 9).astype(np.float32)
    for kwargs in ({}, {"negative_mining_ratio": 0.5}, {"overlap_threshold": 0.2}):
        assert_same_targets(run_op(anchor, label, cls_pred, **kwargs),
                            run_contrib(anchor, label, cls_pred, **kwargs))


def test_minimum_negative_samples_matches_contrib_when_not_binding():
    # Every image has a ground truth that is an anchor, so >= 1 positive and 3 * 1 >= 2.
    rng = np.random.RandomState(3)
    anchor = random_boxes(rng, 600)[None]
    label = random_labels(rng, 4, 5, 6, counts=[1, 2, 3, 5])
    label[:, 0, 1:5] = anchor[0, :4]
    cls_pred = rng.randn(4, 7, 600).astype(np.float32)
    kwargs = {"negative_mining_ratio": 3, "minimum_negative_samples": 2}
    assert_same_targets(run_op(anchor, label, cls_pred, **kwargs),
                        run_contrib(anchor, label, cls_pred, **kwargs))


def test_inputs_are_not_modified():
    rng = np.random.RandomState(11)
    anchor = random_boxes(rng, 300)[None]
    label = random_labels(rng, 3, 4, 5)
    cls_pred = rng.randn(3, 6, 300).astype(np.float32)
    arrays = [mx.nd.array(x) for x in (anchor, label, cls_pred)]
    mx.nd.MultiBoxTarget(*arrays, negative_mining_ratio=3)[2].wait_to_read()
    for arr, original in zip(arrays, (anchor, label, cls_pred)):
        np.testing.assert_array_equal(arr.asnumpy(), original)


def test_thread_counts_give_identical_results():
    rng = np.random.RandomState(5)
    anchor = random_boxes(rng, 5000, 0.02, 0.4)[None]
    label = random_labels(rng, 3, 10, 20)
    cls_pred = rng.randn(3, 21, 5000).astype(np.float32)
    before = ssdkit.ops.num_threads()
    try:
        ssdkit.ops.set_num_threads(1)
        one = run_op(anchor, label, cls_pred, negative_mining_ratio=3)
        ssdkit.ops.set_num_threads(3)
        three = run_op(anchor, label, cls_pred, negative_mining_ratio=3)
    finally:
        ssdkit.ops.set_num_threads(before)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)
