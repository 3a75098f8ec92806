"""RPNTarget: hand-computed fixtures, the numpy reference (matching and box targets exactly,
sampling by its counts and subsets), reproducibility under mx.random.seed, robustness, errors."""
import math

import mxnet as mx
import numpy as np
import pytest

import op_cases

from fuzz_inputs import corrupt_label_rows

import ssdkit  # noqa: F401  (registers mx.nd.RPNTarget)
from ssdkit import ops
from ssdkit.anchors import rpn_anchors
from ssdkit.reference.rpn_target import (IGNORED, NEGATIVE, POSITIVE, rpn_match, rpn_target,
                                         sample_labels)

BOX_TOL = dict(rtol=1e-5, atol=1e-5)


def run_op(anchor, label, im_info, **kwargs):
    """Our operator on numpy inputs -> (cls_target, box_target, box_weight) numpy arrays."""
    out = mx.nd.RPNTarget(mx.nd.array(anchor), mx.nd.array(label), mx.nd.array(im_info), **kwargs)
    return tuple(o.asnumpy() for o in out)


def fpn_anchors(height, width, strides=(4, 8, 16)):
    """(1, N, 4) anchors of FPN levels for an image of height x width pixels."""
    return np.concatenate([rpn_anchors(height // s, width // s, s) for s in strides])[None]


def random_labels(rng, batch, max_gt, height, width, counts=None, width_cols=5):
    """(B, M, width_cols) pixel labels padded with -1; counts[b] ground truths (random if None)."""
    label = -np.ones((batch, max_gt, width_cols), dtype=np.float32)
    for b in range(batch):
        k = int(rng.integers(0, max_gt + 1)) if counts is None else counts[b]
        centre = rng.uniform(0, 1, (k, 2)) * [width, height]
        size = rng.uniform(8, 0.6 * min(height, width), (k, 2))
        label[b, :k, 0] = rng.integers(0, 20, k)
        label[b, :k, 1:5] = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        if width_cols > 5:
            label[b, :k, 5:] = rng.integers(0, 2, (k, width_cols - 5))
    return label


def check_against_reference(got, anchor, label, im_info, **kwargs):
    """The deterministic parts equal the reference; the sample has the right counts and subsets."""
    cls, box_target, box_weight = got
    ref_kwargs = {k: v for k, v in kwargs.items() if k not in ("batch_size_per_image", "positive_fraction")}
    labels, ref_target = rpn_match(anchor, label, im_info, **ref_kwargs)
    batch_size = kwargs.get("batch_size_per_image", 256)
    max_pos = int(batch_size * kwargs.get("positive_fraction", 0.5))
    np.testing.assert_allclose(box_target, ref_target, **BOX_TOL)
    np.testing.assert_array_equal(box_weight, np.repeat((cls == 1).astype(np.float32), 4, axis=1))
    assert set(np.unique(cls)) <= {-1.0, 0.0, 1.0}
    for b in range(len(cls)):
        ref_pos = labels[b] == POSITIVE
        ref_neg = labels[b] == NEGATIVE
        pos, neg = cls[b] == 1, cls[b] == 0
        assert not (pos & ~ref_pos).any(), "a sampled positive is not a matched positive"
        assert not (neg & ~ref_neg).any(), "a sampled negative is not a negative candidate"
        assert pos.sum() == min(ref_pos.sum(), max_pos)
        assert neg.sum() == min(ref_neg.sum(), batch_size - pos.sum())
    return labels


# ---------------------------------------------------------------------------------------------
# Hand-computed fixtures
# ---------------------------------------------------------------------------------------------

# Five 10x10 anchors and one 10x20 anchor, image 20 x 20.
HAND_ANCHORS = np.array([[[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [10, 10, 20, 20],
                          [0, 0, 10, 20], [15, 15, 25, 25]]], dtype=np.float32)
HAND_LABEL = np.array([[[3, 0, 0, 10, 8],        # IoU 0.8 with anchor 0, 0.4 with anchor 4
                        [7, 12, 12, 30, 30],     # IoU 64/360 = 0.18 with anchor 3 (its best usable)
                        [-1, -1, -1, -1, -1]]], dtype=np.float32)
HAND_INFO = np.array([[20, 20, 1]], dtype=np.float32)


def test_hand_fixture_thresholds_low_quality_match_and_border():
    cls, target, weight = run_op(HAND_ANCHORS, HAND_LABEL, HAND_INFO)
    # anchor 0: IoU 0.8 >= 0.7 -> positive; anchor 3: only the best anchor of gt 1 (0.18) ->
    # positive; anchor 4: 0.4 in [0.3, 0.7) -> ignored; anchors 1, 2: IoU 0 -> negative;
    # anchor 5 crosses the border (x1 = 25 > 20) -> ignored.
    np.testing.assert_array_equal(cls, [[1, 0, 0, 1, -1, -1]])
    t = target.reshape(6, 4)
    # anchor 0 (centre (5, 5), 10x10) -> gt 0 (centre (5, 4), 10x8)
    np.testing.assert_allclose(t[0], [0, -0.1, 0, math.log(0.8)], atol=1e-6)
    # anchor 3 (centre (15, 15), 10x10) -> gt 1 (centre (21, 21), 18x18)
    np.testing.assert_allclose(t[3], [0.6, 0.6, math.log(1.8), math.log(1.8)], rtol=1e-5)
    np.testing.assert_array_equal(t[[1, 2, 4, 5]], 0)
    np.testing.assert_array_equal(weight.reshape(6, 4)[:, 0], [1, 0, 0, 1, 0, 0])


def test_hand_fixture_allowed_border_and_stds():
    # With 5 pixels of border anchor 5 is usable: IoU with gt 1 = 100 / 324 = 0.31 becomes gt 1's
    # best, so anchor 3 (0.18 < 0.3) turns negative; anchor 5 is positive as gt 1's best anchor.
    cls, target, _ = run_op(HAND_ANCHORS, HAND_LABEL, HAND_INFO, allowed_border=5, stds=(0.5, 0.5, 2, 2))
    np.testing.assert_array_equal(cls, [[1, 0, 0, 0, -1, 1]])
    np.testing.assert_allclose(target.reshape(6, 4)[0], [0, -0.2, 0, math.log(0.8) / 2], atol=1e-6)
    # anchor 5 (centre (20, 20)) -> gt 1 (centre (21, 21), 18x18)
    np.testing.assert_allclose(target.reshape(6, 4)[5], [0.2, 0.2, math.log(1.8) / 2, math.log(1.8) / 2],
                               rtol=1e-5)
    # Negative border: no check at all -> the same as a large border here.
    np.testing.assert_array_equal(run_op(HAND_ANCHORS, HAND_LABEL, HAND_INFO, allowed_border=-1)[0], cls)


def test_every_tied_best_anchor_is_positive():
    # gt centred between anchors 0 and 1 overlaps both by 25 / 175: both are its best anchors.
    anchor = np.array([[[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [0, 10, 10, 20]]], np.float32)
    label = np.array([[[0, 5, 0, 15, 5]]], dtype=np.float32)
    cls, _, _ = run_op(anchor, label, np.array([[20, 30, 1]], np.float32))
    np.testing.assert_array_equal(cls, [[1, 1, 0, 0]])


def test_threshold_positive_takes_its_own_best_ground_truth():
    # Anchor 0 is gt 1's only overlapping anchor (IoU 0.09) but its best gt is gt 0 (IoU 0.8):
    # positive, regressing to gt 0, as in Detectron / torchvision.
    anchor = np.array([[[0, 0, 10, 10], [30, 30, 40, 40]]], dtype=np.float32)
    label = np.array([[[0, 0, 0, 10, 8], [1, 9, 9, 19, 19]]], dtype=np.float32)
    cls, target, _ = run_op(anchor, label, np.array([[50, 50, 1]], np.float32))
    np.testing.assert_array_equal(cls, [[1, 0]])
    np.testing.assert_allclose(target[0, :4], [0, -0.1, 0, math.log(0.8)], atol=1e-6)


def test_sampling_limits_and_fraction():
    anchor = fpn_anchors(128, 128, strides=(4,))
    label = np.array([[[0, 10, 10, 120, 120], [1, 40, 0, 100, 64]]], dtype=np.float32)
    info = np.array([[128, 128, 1]], np.float32)
    labels, _ = rpn_match(anchor, label, info)
    assert (labels == POSITIVE).sum() > 12 and (labels == NEGATIVE).sum() > 40
    for kwargs in ({"batch_size_per_image": 16}, {"batch_size_per_image": 40, "positive_fraction": 0.25},
                   {"batch_size_per_image": 10, "positive_fraction": 0.0},
                   {"batch_size_per_image": 12, "positive_fraction": 1.0}):
        check_against_reference(run_op(anchor, label, info, **kwargs), anchor, label, info, **kwargs)


# ---------------------------------------------------------------------------------------------
# Random cases against the numpy reference
# ---------------------------------------------------------------------------------------------

SETTINGS = [
    {},
    {"allowed_border": -1},
    {"allowed_border": 16, "positive_iou": 0.6, "negative_iou": 0.4},
    {"batch_size_per_image": 64, "positive_fraction": 0.25, "stds": (0.5, 0.5, 0.25, 0.25)},
    {"positive_iou": 0.5, "negative_iou": 0.5, "allowed_border": 0},
]


@pytest.mark.parametrize("case", range(len(SETTINGS)))
def test_random_cases_match_reference(case):
    rng = np.random.default_rng(100 + case)
    kwargs = SETTINGS[case]
    height, width = 256, 320
    anchor = fpn_anchors(height, width)                     # 20160 anchors
    batch = int(rng.integers(1, 5))
    label = random_labels(rng, batch, int(rng.integers(1, 12)), height, width, width_cols=6)
    im_info = np.stack([[rng.integers(160, height + 1), rng.integers(200, width + 1), 1.0]
                        for _ in range(batch)]).astype(np.float32)
    got = run_op(anchor, label, im_info, **kwargs)
    assert got[0].shape == (batch, anchor.shape[1])
    labels = check_against_reference(got, anchor, label, im_info, **kwargs)
    assert (labels == POSITIVE).any()


def test_without_ground_truths_every_usable_anchor_is_a_negative_candidate():
    anchor = fpn_anchors(128, 160)
    label = -np.ones((3, 4, 5), dtype=np.float32)
    label[2, 0] = [1, 10, 10, 60, 60]
    label[1, 1] = [1, 10, 10, 60, 60]        # after the padding row: not a ground truth
    info = np.array([[128, 160, 1], [100, 100, 1], [128, 160, 1]], np.float32)
    cls, target, weight = run_op(anchor, label, info)
    labels = check_against_reference((cls, target, weight), anchor, label, info)
    assert (cls[:2] == 1).sum() == 0 and (target[:2] == 0).all()
    np.testing.assert_array_equal((cls[:2] == 0).sum(axis=1), [256, 256])
    assert (labels[2] == POSITIVE).any()


def test_reference_sampler_obeys_the_same_rules():
    rng = np.random.default_rng(3)
    anchor = fpn_anchors(128, 128)
    label = random_labels(rng, 2, 6, 128, 128, counts=[3, 6])
    info = np.array([[128, 128, 1]] * 2, np.float32)
    got = rpn_target(anchor, label, info, batch_size_per_image=32, rng=rng)
    check_against_reference(got, anchor, label, info, batch_size_per_image=32)
    labels = sample_labels(np.array([POSITIVE] * 5 + [NEGATIVE] * 5 + [IGNORED] * 2), 4, 0.5, rng)
    assert (labels == POSITIVE).sum() == 2 and (labels == NEGATIVE).sum() == 2


# ---------------------------------------------------------------------------------------------
# Randomness: seeds, thread counts, uniformity
# ---------------------------------------------------------------------------------------------

def sampling_case():
    rng = np.random.default_rng(8)
    anchor = fpn_anchors(256, 256)
    label = random_labels(rng, 3, 8, 256, 256, counts=[8, 2, 5])
    info = np.array([[256, 256, 1]] * 3, np.float32)
    return anchor, label, info


def test_reproducible_under_mx_random_seed_and_different_across_seeds():
    anchor, label, info = sampling_case()
    kwargs = {"batch_size_per_image": 32}      # <= 16 of the 20+ positives of images 0 and 2
    mx.random.seed(11)
    first = run_op(anchor, label, info, **kwargs)
    second = run_op(anchor, label, info, **kwargs)       # the states moved on: another sample
    mx.random.seed(11)
    again = run_op(anchor, label, info, **kwargs)
    mx.random.seed(12)
    other = run_op(anchor, label, info, **kwargs)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for b in range(3):
        assert not np.array_equal(first[0][b] == 0, second[0][b] == 0)
        assert not np.array_equal(first[0][b] == 0, other[0][b] == 0)
    for b in (0, 2):
        assert not np.array_equal(first[0][b] == 1, other[0][b] == 1)
    check_against_reference(other, anchor, label, info, **kwargs)


def test_thread_counts_give_identical_samples():
    anchor, label, info = sampling_case()
    before = ops.num_threads()
    try:
        ops.set_num_threads(1)
        mx.random.seed(5)
        one = run_op(anchor, label, info)
        ops.set_num_threads(3)
        mx.random.seed(5)
        three = run_op(anchor, label, info)
    finally:
        ops.set_num_threads(before)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)


def test_more_images_than_cpu_random_states():
    # 1030 images > 1024 states: images b and b + 1024 share a state and run in order.
    rng = np.random.default_rng(17)
    anchor = HAND_ANCHORS
    label = np.repeat(HAND_LABEL, 1030, axis=0)
    info = np.repeat(np.array([[20, 20, 1]], np.float32), 1030, axis=0)
    kwargs = {"batch_size_per_image": 2, "allowed_border": -1}
    mx.random.seed(int(rng.integers(1000)))
    first = run_op(anchor, label, info, **kwargs)
    mx.random.seed(99)
    second = run_op(anchor, label, info, **kwargs)
    mx.random.seed(99)
    again = run_op(anchor, label, info, **kwargs)
    check_against_reference(first, anchor, label, info, **kwargs)
    for a, b in zip(second, again):
        np.testing.assert_array_equal(a, b)
    assert len({tuple(row) for row in second[0]}) > 1          # images draw different samples


def test_negatives_are_chosen_uniformly():
    # 20 negative candidates, 5 kept per call: over 400 seeded calls each is kept ~100 times
    # (binomial sd 8.7); a biased sampler (e.g. always the first ones) fails the bounds.
    anchor = np.array([[[10 * i, 0, 10 * i + 10, 10] for i in range(20)]], dtype=np.float32)
    label = -np.ones((1, 1, 5), dtype=np.float32)
    info = np.array([[10, 200, 1]], np.float32)
    mx.random.seed(2024)
    counts = np.zeros(20)
    for _ in range(400):
        cls = run_op(anchor, label, info, batch_size_per_image=5)[0][0]
        assert (cls == 0).sum() == 5
        counts += cls == 0
    assert counts.min() > 60 and counts.max() < 140, counts


# ---------------------------------------------------------------------------------------------
# Robustness: bad values give defined output, bad shapes / attributes give MXNet errors
# ---------------------------------------------------------------------------------------------

def _far_outside(row):
    row[1:5] = row[1:5] * 4 - 100


def test_fuzz_bad_values_give_defined_output():
    rng = np.random.default_rng(123)
    anchor = fpn_anchors(96, 128, strides=(8, 16))
    for it in range(25):
        batch = int(rng.integers(1, 4))
        label = random_labels(rng, batch, 6, 96, 128, width_cols=6)
        corrupt_label_rows(rng, label, 0.5, [np.nan, np.inf, -3, -np.inf], extra_kinds=[_far_outside])
        info = np.tile(np.array([[96, 128, 1]], np.float32), (batch, 1))
        bad_anchor = anchor.copy()
        bad_anchor[0, rng.integers(0, anchor.shape[1], 5), rng.integers(0, 4)] = np.nan
        inputs = [bad_anchor, label, info]
        copies = [x.copy() for x in inputs]
        kwargs = {"allowed_border": float(rng.choice([-1, 0, 8]))}
        got = run_op(*inputs, **kwargs)
        for x, c in zip(inputs, copies):
            np.testing.assert_array_equal(x, c)
        assert all(np.isfinite(g).all() for g in got), it
        check_against_reference(got, bad_anchor, label, info, **kwargs)


@pytest.mark.parametrize("allowed_border", [0, -1])
@pytest.mark.parametrize("bad", [(np.nan, 10), (10, 0), (-5, 10), (10, np.inf)])
def test_bad_im_info_values_are_mxnet_errors(bad, allowed_border):
    """The im_info check of every FPN op (common/two_stage.h), also when allowed_border < 0 leaves
    im_info unused; the reference raises the same message."""
    anchor, label, _ = sampling_case()
    info = np.array([[256, 256, 1], [256, 256, 1], [bad[0], bad[1], 1]], np.float32)
    message = "im_info row 2 .* finite positive height and width"
    with pytest.raises(mx.MXNetError, match=message) as err:
        run_op(anchor, label, info, allowed_border=allowed_border)
    assert str(err.value).count("RPNTarget:") == 1
    with pytest.raises(ValueError, match=message):
        rpn_match(anchor, label, info, allowed_border=allowed_border)


def test_inputs_are_not_modified():
    anchor, label, info = sampling_case()
    arrays = [mx.nd.array(x) for x in (anchor, label, info)]
    mx.nd.RPNTarget(*arrays)[0].wait_to_read()
    for arr, original in zip(arrays, (anchor, label, info)):
        np.testing.assert_array_equal(arr.asnumpy(), original)


@pytest.mark.parametrize("shapes, kwargs, message", [
    (((10, 4), (2, 3, 5), (2, 3)), {}, "anchor must have shape"),
    (((2, 10, 4), (2, 3, 5), (2, 3)), {}, "anchor must have shape"),
    (((1, 10, 5), (2, 3, 5), (2, 3)), {}, "anchor must have shape"),
    (((1, 10, 4), (2, 3, 4), (2, 3)), {}, "label must have shape"),
    (((1, 10, 4), (2, 3), (2, 3)), {}, "label must have shape"),
    (((1, 10, 4), (2, 3, 5), (2, 4)), {}, "im_info must have shape"),
    (((1, 10, 4), (2, 3, 5), (3, 3)), {}, "batch size mismatch"),
    (((1, 10, 4), (2, 3, 5), (2, 3)), {"positive_iou": 0}, "positive_iou"),
    (((1, 10, 4), (2, 3, 5), (2, 3)), {"positive_iou": 0.5, "negative_iou": 0.6}, "negative_iou"),
    (((1, 10, 4), (2, 3, 5), (2, 3)), {"batch_size_per_image": 0}, "batch_size_per_image"),
    (((1, 10, 4), (2, 3, 5), (2, 3)), {"positive_fraction": 1.5}, "positive_fraction"),
    (((1, 10, 4), (2, 3, 5), (2, 3)), {"allowed_border": float("nan")}, "allowed_border"),
    (((1, 10, 4), (2, 3, 5), (2, 3)), {"stds": (1, 1, 1)}, "stds"),
    (((1, 10, 4), (2, 3, 5), (2, 3)), {"stds": (1, 1, 0, 1)}, "stds"),
    (((1, 10, 4), (2, 3, 5), (2, 3)), {"positive_iuo": 0.5}, "unknown attribute"),
])
def test_bad_shapes_and_attributes_are_mxnet_errors(shapes, kwargs, message):
    arrays = [mx.nd.zeros(s) for s in shapes]
    with pytest.raises(mx.MXNetError, match=message) as info:
        mx.nd.RPNTarget(*arrays, **kwargs)[0].wait_to_read()
    assert str(info.value).count("RPNTarget:") == 1


def test_non_float32_input_is_an_error():
    arrays = [mx.nd.zeros((1, 10, 4)), mx.nd.zeros((2, 3, 5)), mx.nd.zeros((2, 3), dtype="float64")]
    with pytest.raises(mx.MXNetError, match="float32"):
        mx.nd.RPNTarget(*arrays)[0].wait_to_read()


# ---------------------------------------------------------------------------------------------
# Symbol use
# ---------------------------------------------------------------------------------------------

def test_symbol_with_rpn_anchors_and_zero_backward():
    rng = np.random.default_rng(9)
    data = mx.sym.var("data")
    anchors = mx.sym.RPNAnchors(data, stride=8)
    cls, target, weight = mx.sym.RPNTarget(anchors, mx.sym.var("label"), mx.sym.var("im_info"))
    net = mx.sym.Group([cls, mx.sym.MakeLoss(mx.sym.sum(target * weight) + mx.sym.sum(data))])
    label = random_labels(rng, 2, 4, 128, 96, counts=[2, 4])
    exe = net.simple_bind(mx.cpu(), data=(2, 4, 16, 12), label=label.shape, im_info=(2, 3))
    exe.arg_dict["label"][:] = label
    exe.arg_dict["im_info"][:] = np.array([[128, 96, 1], [128, 96, 1]])
    for name in ("label", "im_info"):
        exe.grad_dict[name][:] = 7.0
    exe.forward(is_train=True)
    exe.backward([mx.nd.ones(o.shape) for o in exe.outputs])
    got = exe.outputs[0].asnumpy()
    ref_anchor = rpn_anchors(16, 12, 8)[None]
    labels, _ = rpn_match(ref_anchor, label, np.array([[128, 96, 1]] * 2, np.float32))
    np.testing.assert_array_equal((got == 1).sum(axis=1), np.minimum((labels == POSITIVE).sum(axis=1), 128))
    for name in ("label", "im_info"):
        np.testing.assert_array_equal(exe.grad_dict[name].asnumpy(), 0, err_msg=name)
    np.testing.assert_array_equal(exe.grad_dict["data"].asnumpy(), 1)   # only the sum's gradient


@pytest.mark.parametrize("case", op_cases.cases_for("RPNTarget"), ids=lambda c: c.name)
def test_op_cases_match_reference(case):
    # the cases the GPU self-test and `pytest -m gpu` run (tests/op_cases.py): matching and targets
    # equal the reference's, samples have its counts and are subsets of its candidates
    got = op_cases.run_case(case, mx.cpu())
    labels = check_against_reference(got, *case.inputs, **op_cases.case_kwargs(case))
    assert (labels == POSITIVE).any() and (labels == NEGATIVE).any()
