"""Tests of the MultiBoxTarget operator: hand-computed fixtures, the numpy reference, and
differential comparison with MXNet's built-in ``mx.contrib.nd.MultiBoxTarget``."""
import math

import mxnet as mx
import numpy as np
import pytest

import op_cases

import ssdkit.ops  # noqa: F401  (registers mx.nd.MultiBoxTarget)
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


# ---------------------------------------------------------------------------------------------
# Deliberate differences from contrib (multibox_target-inl.h), each on its own
# ---------------------------------------------------------------------------------------------

def test_minimum_negative_samples_is_honoured():
    rng = np.random.RandomState(2)
    anchor = grid_3x3()
    label = -np.ones((2, 2, 5), dtype=np.float32)
    label[0, 0] = [0, 0, 0, 1 / 3, 1 / 3]          # image 0: one positive (anchor 0)
    cls_pred = rng.randn(2, 3, 9).astype(np.float32)  # image 1: no ground truth at all
    kwargs = {"negative_mining_ratio": 1, "minimum_negative_samples": 5}
    _, _, cls = run_op(anchor, label, cls_pred, **kwargs)
    np.testing.assert_array_equal((cls == 0).sum(axis=1), [5, 5])
    assert cls[0, 0] == 1
    assert_same_targets(run_op(anchor, label, cls_pred, **kwargs),
                        reference_target(anchor, label, cls_pred, **kwargs))
    # the 5 negatives of image 1 are its 5 lowest background probabilities
    prob = np.exp(cls_pred[1, 0]) / np.exp(cls_pred[1]).sum(axis=0)
    np.testing.assert_array_equal(np.flatnonzero(cls[1] == 0), np.sort(np.argsort(prob)[:5]))
    # contrib's CPU kernel ignores the minimum: 1 negative, and image 1 all ignored.
    _, _, contrib_cls = run_contrib(anchor, label, cls_pred, **kwargs)
    np.testing.assert_array_equal((contrib_cls == 0).sum(axis=1), [1, 0])


def test_fewer_candidates_than_wanted_takes_them_all():
    # One ground truth covering the image: every cell has IoU 1/9, so with
    # negative_mining_thresh 0.1 no anchor may be a negative although 3 are wanted.
    label = np.array([[[1, 0, 0, 1, 1]]], dtype=np.float32)
    cls_pred = np.zeros((1, 3, 9), dtype=np.float32)
    kwargs = {"negative_mining_ratio": 3, "negative_mining_thresh": 0.1}
    _, _, cls = run_op(grid_3x3(), label, cls_pred, **kwargs)
    np.testing.assert_array_equal(cls, [[2] + [-1] * 8])
    with pytest.raises(mx.MXNetError):
        run_contrib(grid_3x3(), label, cls_pred, **kwargs)


def test_padding_row_needs_only_class_minus_one():
    label = GRID_LABEL.copy()
    label[0, 2] = [-1, 0.2, 0.2, 0.9, 0.9]      # class -1, box not -1
    cls_pred = np.zeros((1, 6, 9), dtype=np.float32)
    assert_same_targets(run_op(grid_3x3(), label, cls_pred), run_op(grid_3x3(), GRID_LABEL, cls_pred))
    with pytest.raises(mx.MXNetError):
        run_contrib(grid_3x3(), label, cls_pred)


@pytest.mark.parametrize("bad", [[7, 0.1, 0.1, 0.6, 0.6], [-2, 0.1, 0.1, 0.6, 0.6],
                                 [np.nan, 0.1, 0.1, 0.6, 0.6], [1, np.nan, 0.1, 0.6, 0.6],
                                 [1, 0.1, 0.1, np.inf, 0.6], [np.inf, 0.1, 0.1, 0.6, 0.6]])
def test_invalid_label_rows_are_dropped(bad):
    # Our op on labels with an invalid row == contrib on the same labels without that row.
    rng = np.random.RandomState(4)
    anchor = random_boxes(rng, 400)[None]
    label = random_labels(rng, 2, 6, 5, counts=[4, 3])                 # C = 5: class 7 is out
    cls_pred = rng.randn(2, 6, 400).astype(np.float32)
    dirty = label.copy()
    dirty[:, 1] = bad
    clean = -np.ones_like(label)
    clean[:, :5] = np.delete(label, 1, axis=1)
    for kwargs in ({}, {"negative_mining_ratio": 3}):
        assert_same_targets(run_op(anchor, dirty, cls_pred, **kwargs),
                            run_contrib(anchor, clean, cls_pred, **kwargs))


# ---------------------------------------------------------------------------------------------
# Robustness: bad values give defined output, bad shapes / attributes give MXNet errors
# ---------------------------------------------------------------------------------------------

def test_fuzz_bad_values_give_defined_output():
    rng = np.random.RandomState(123)
    for it in range(40):
        n, batch, num_classes = int(rng.randint(1, 200)), int(rng.randint(1, 5)), int(rng.randint(1, 6))
        anchor = random_boxes(rng, n)[None]
        degenerate = rng.rand(n) < 0.05
        anchor[0, degenerate, 2] = anchor[0, degenerate, 0]                # zero-width anchors
        label = random_labels(rng, batch, 6, num_classes + 2, width=6)   # some classes >= C
        cls_pred = (rng.randn(batch, num_classes + 1, n) * rng.choice([1, 50])).astype(np.float32)
        rows = label[:, :, 0] >= 0
        corrupt = rows & (rng.rand(*rows.shape) < 0.4)
        for b, r in zip(*np.nonzero(corrupt)):
            kind = rng.randint(5)
            if kind == 0:
                label[b, r, 1 + rng.randint(4)] = rng.choice([np.nan, np.inf, -np.inf])
            elif kind == 1:
                label[b, r, 3:5] = label[b, r, 1:3]                  # zero area
            elif kind == 2:
                label[b, r, 1:5] = label[b, r, [3, 4, 1, 2]]          # inverted
            elif kind == 3:
                label[b, r, 1:5] = label[b, r, 1:5] * 3 - 1           # outside [0, 1]
            else:
                label[b, r, 0] = rng.choice([np.nan, -3, 1e9])
        cls_pred[rng.rand(*cls_pred.shape) < 0.05] = rng.choice([np.nan, np.inf, -np.inf])
        kwargs = {"negative_mining_ratio": float(rng.choice([-1, 3])),
                  "minimum_negative_samples": int(rng.choice([0, 4])),
                  "overlap_threshold": float(rng.choice([0, 0.5]))}
        label_copy = label.copy()
        loc, mask, cls = run_op(anchor, label, cls_pred, **kwargs)
        np.testing.assert_array_equal(label, label_copy)
        assert np.isfinite(loc).all() and np.isfinite(cls).all(), it
        assert set(np.unique(mask)) <= {0.0, 1.0}
        np.testing.assert_array_equal(mask.reshape(batch, n, 4)[..., 0], (cls > 0).astype(np.float32))
        assert ((cls == -1) | (cls == 0) | ((cls >= 1) & (cls <= num_classes))).all(), it
        assert_same_targets((loc, mask, cls), reference_target(anchor, label, cls_pred, **kwargs))


@pytest.mark.parametrize("shapes, kwargs, message", [
    (((10, 4), (2, 3, 5), (2, 4, 10)), {}, "anchor must have shape"),
    (((1, 10, 5), (2, 3, 5), (2, 4, 10)), {}, "anchor must have shape"),
    (((2, 10, 4), (2, 3, 5), (2, 4, 10)), {}, "anchor must have shape"),
    (((1, 10, 4), (2, 3, 4), (2, 4, 10)), {}, "label must have shape"),
    (((1, 10, 4), (2, 3), (2, 4, 10)), {}, "label must have shape"),
    (((1, 10, 4), (2, 3, 5), (2, 4, 11)), {}, "number of anchors mismatch"),
    (((1, 10, 4), (2, 3, 5), (3, 4, 10)), {}, "batch size mismatch"),
    (((1, 10, 4), (2, 3, 5), (2, 1, 10)), {}, "cls_pred must have shape"),
    (((1, 10, 4), (2, 3, 5), (2, 4, 10)), {"variances": (0.1, 0.2)}, "variances"),
    (((1, 10, 4), (2, 3, 5), (2, 4, 10)), {"variances": (0.1, 0.1, 0, 0.2)}, "variance"),
    (((1, 10, 4), (2, 3, 5), (2, 4, 10)), {"negative_mining_ratio": 3, "negative_mining_thresh": 0},
     "negative_mining_thresh"),
    (((1, 10, 4), (2, 3, 5), (2, 4, 10)), {"minimum_negative_samples": -1}, "minimum_negative_samples"),
    (((1, 10, 4), (2, 3, 5), (2, 4, 10)), {"overlap_treshold": 0.5}, "unknown attribute"),
])
def test_bad_shapes_and_attributes_are_mxnet_errors(shapes, kwargs, message):
    arrays = [mx.nd.zeros(s) for s in shapes]
    with pytest.raises(mx.MXNetError, match=message):
        mx.nd.MultiBoxTarget(*arrays, **kwargs)[0].wait_to_read()


def test_non_float32_input_is_an_error():
    arrays = [mx.nd.zeros((1, 10, 4)), mx.nd.zeros((2, 3, 5), dtype="float64"), mx.nd.zeros((2, 4, 10))]
    with pytest.raises(mx.MXNetError, match="float32"):
        mx.nd.MultiBoxTarget(*arrays)[0].wait_to_read()


# ---------------------------------------------------------------------------------------------
# Symbol use
# ---------------------------------------------------------------------------------------------

def test_symbol_in_a_module_with_a_loss_graph():
    rng = np.random.RandomState(9)
    num_classes, batch = 3, 2
    num_anchors = 8 * 8 * 3
    label = random_labels(rng, batch, 4, num_classes, width=6, counts=[2, 4])
    data = mx.sym.var("data")
    anchor = mx.sym.MultiBoxPrior(mx.sym.reshape(data, shape=(0, 1, 8, 8)), sizes=(0.2, 0.4), ratios=(1, 2))
    cls_pred = mx.sym.reshape(mx.sym.FullyConnected(data, num_hidden=(num_classes + 1) * num_anchors),
                              shape=(0, num_classes + 1, num_anchors))
    loc_pred = mx.sym.FullyConnected(data, num_hidden=4 * num_anchors)
    loc_target, loc_mask, cls_target = mx.sym.MultiBoxTarget(
        anchor, mx.sym.var("label"), cls_pred, negative_mining_ratio=3)
    cls_prob = mx.sym.SoftmaxOutput(cls_pred, cls_target, ignore_label=-1, use_ignore=True,
                                    multi_output=True, normalization="valid")
    loc_loss = mx.sym.MakeLoss(mx.sym.smooth_l1(loc_mask * (loc_pred - loc_target), scalar=1.0))
    net = mx.sym.Group([cls_prob, loc_loss, mx.sym.BlockGrad(cls_target)])
    mod = mx.mod.Module(net, data_names=("data",), label_names=("label",), context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch, 64))], label_shapes=[("label", label.shape)])
    mod.init_params(mx.init.Xavier())
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01})
    x = rng.rand(batch, 64).astype(np.float32)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)], [mx.nd.array(label)]), is_train=True)
    mod.backward()
    mod.update()
    got_cls = mod.get_outputs()[2].asnumpy()
    assert got_cls.shape == (batch, num_anchors)
    assert ((got_cls > 0).sum(axis=1) >= [2, 4]).all()    # every ground truth claimed an anchor
    assert ((got_cls == 0).sum(axis=1) >= [6, 12]).all()   # 3 negatives per positive
    assert all(np.isfinite(v.asnumpy()).all() for v in mod.get_params()[0].values())


def test_backward_writes_zero_gradients():
    rng = np.random.RandomState(10)
    sym = mx.sym.MultiBoxTarget(mx.sym.var("anchor"), mx.sym.var("label"), mx.sym.var("cls_pred"))
    exe = sym.simple_bind(mx.cpu(), anchor=(1, 20, 4), label=(2, 3, 5), cls_pred=(2, 4, 20))
    exe.arg_dict["anchor"][:] = random_boxes(rng, 20)[None]
    exe.arg_dict["label"][:] = random_labels(rng, 2, 3, 3, counts=[2, 3])
    exe.arg_dict["cls_pred"][:] = rng.randn(2, 4, 20)
    for grad in exe.grad_arrays:
        grad[:] = 7.0
    exe.forward(is_train=True)
    exe.backward([mx.nd.ones(o.shape) for o in exe.outputs])
    for name, grad in zip(sym.list_arguments(), exe.grad_arrays):
        np.testing.assert_array_equal(grad.asnumpy(), 0, err_msg=name)


@pytest.mark.parametrize("case", op_cases.cases_for("MultiBoxTarget"), ids=lambda c: c.name)
def test_op_cases_match_reference(case):
    # the cases the GPU self-test and `pytest -m gpu` run (tests/op_cases.py) against the numpy reference
    got = op_cases.run_case(case, mx.cpu())
    assert_same_targets(got, reference_target(*case.inputs, **op_cases.case_kwargs(case)))
