"""MaskTarget: a hand-computed fixture, the numpy reference on random cases (bit for bit, every
sampling setting), ProposalTarget followed by MaskTarget (targets from a ground truth of the RoI's
class), thread-count independence, bad input, errors, symbol shapes and the zero backward."""
import time

import mxnet as mx
import numpy as np
import pytest

import op_cases
from fuzz_inputs import corrupt_label_rows

import ssdkit  # noqa: F401  (registers mx.nd.MaskTarget)
from ssdkit import ops
from ssdkit.boxes import VARIANCES, decode
from ssdkit.reference.mask_target import mask_soft_target, mask_target, matched_rows


def run_op(rois, labels, gt, gt_masks, **kwargs):
    """Our operator on numpy inputs -> (R, S, S) numpy array."""
    return mx.nd.MaskTarget(mx.nd.array(rois), mx.nd.array(labels), mx.nd.array(gt), mx.nd.array(gt_masks),
                            **kwargs).asnumpy()


def random_gt(rng, batch, max_gt, size, num_classes, counts=None):
    """(B, M, 5) pixel label rows padded with -1."""
    gt = -np.ones((batch, max_gt, 5), np.float32)
    for b in range(batch):
        k = int(rng.integers(0, max_gt + 1)) if counts is None else counts[b]
        centre = rng.uniform(0.15, 0.85, (k, 2)) * size
        wh = rng.uniform(12, 0.5 * size, (k, 2))
        gt[b, :k, 0] = rng.integers(0, num_classes, k)
        gt[b, :k, 1:5] = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
    return gt


def random_masks(rng, gt, size, stride, soft=False):
    """(B, M, ceil(size / stride), ...) masks: an ellipse in each ground truth's box plus a few stray
    pixels; with ``soft`` values in [0, 1] instead of 0/1."""
    batch, rows = gt.shape[:2]
    side = -(-size // stride)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    masks = np.zeros((batch, rows, side, side), np.float32)
    for b in range(batch):
        for m in range(rows):
            if gt[b, m, 0] < 0:
                continue
            x0, y0, x1, y1 = gt[b, m, 1:5] / stride
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
            inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            masks[b, m] = inside
            masks[b, m][rng.random((side, side)) < 0.02] = 1
    if soft:
        masks = np.clip(masks * rng.uniform(0.3, 1.0, masks.shape) + rng.uniform(0, 0.3, masks.shape), 0, 1)
    return masks.astype(np.float32)


def random_rois_and_labels(rng, gt, per_image, size, num_classes, wrong_class=0.1):
    """(R, 5) RoIs (jittered ground truths, random boxes, padding rows) and (R,) labels as ProposalTarget
    gives them: best ground truth's class + 1 at IoU >= 0.5, else 0; padding -1; a few foreground labels
    (at least one) of another class (their targets must be -1; ``num_classes`` >= 2)."""
    rows = []
    batch = gt.shape[0]
    for b in range(batch):
        gts = gt[b, gt[b, :, 0] >= 0, 1:5]
        for _ in range(per_image):
            u = rng.random()
            if u < 0.1:
                rows.append([b, 0, 0, 0, 0])
            elif u < 0.7 and len(gts):
                g = gts[rng.integers(len(gts))]
                wh = g[2:] - g[:2]
                rows.append([b, *(g + rng.normal(0, 0.1, 4) * np.concatenate([wh, wh]))])
            else:
                xy = rng.uniform(0, size, 2)
                rows.append([b, *xy, *(xy + rng.uniform(4, size / 2, 2))])
    rois = np.asarray(rows, np.float32)
    rng.shuffle(rois)
    agnostic = gt[..., :5].copy()
    agnostic[agnostic[..., 0] >= 0, 0] = 0
    images, best = matched_rows(rois, np.ones(len(rois)), agnostic)        # best ground truth, any class
    labels = np.zeros(len(rois), np.float32)
    for r in np.flatnonzero(best >= 0):
        b, g = images[r], best[r]
        box = gt[b, g, 1:5]
        inter = np.maximum(np.minimum(rois[r, 3:5], box[2:]) - np.maximum(rois[r, 1:3], box[:2]), 0).prod()
        union = np.prod(rois[r, 3:5] - rois[r, 1:3]) + np.prod(box[2:] - box[:2]) - inter
        if inter / union >= 0.5:
            labels[r] = gt[b, g, 0] + 1
    labels[rois[:, 3] <= rois[:, 1]] = -1
    wrong = (labels > 0) & (rng.random(len(rois)) < wrong_class)
    wrong[np.flatnonzero(labels > 0)[:1]] = True
    labels[wrong] = labels[wrong] % num_classes + 1                   # another class
    return rois, labels


def random_case(rng, stride=1, size=96, soft=False, batch=2, num_classes=3):
    gt = random_gt(rng, batch, 5, size, num_classes, counts=[int(rng.integers(1, 6)) for _ in range(batch)])
    masks = random_masks(rng, gt, size, stride, soft)
    rois, labels = random_rois_and_labels(rng, gt, 24, size, num_classes)
    return rois, labels, gt, masks


# ---------------------------------------------------------------------------------------------
# Hand-computed fixture
# ---------------------------------------------------------------------------------------------

def hand_case():
    gt = -np.ones((2, 3, 5), np.float32)
    gt[0, 0] = [1, 0, 0, 10, 10]
    gt[0, 1] = [0, 20, 20, 30, 30]
    gt[1, 0] = [2, 0, 0, 10, 10]
    masks = np.zeros((2, 3, 12, 12), np.float32)
    masks[0, 0, 2:8, 2:8] = 1          # a square, pixels 2..7
    masks[0, 1] = 1                    # everything
    masks[1, 0, :, :5] = 1             # left half of image 1's object
    rois = np.array([[0, 0, 0, 10, 10],      # gt 0 (class 1): label 2
                     [0, 0, 0, 10, 10],      # background
                     [0, 0, 0, 0, 0],        # padding
                     [1, 0, 0, 10, 10],      # image 1's gt (class 2): label 3
                     [0, 20, 20, 30, 30],    # gt 1 (class 0) but labelled class 1: no target
                     [0, 2, 2, 8, 8]],       # inside gt 0: IoU 0.36, still matched to it (label given)
                    np.float32)
    labels = np.array([2, 0, -1, 3, 2, 2], np.float32)
    return rois, labels, gt, masks


def test_hand_fixture():
    rois, labels, gt, masks = hand_case()
    got = run_op(rois, labels, gt, masks, mask_size=5)
    # Aligned, scale 1: bin j spans mask coordinates [2j - 0.5, 2j + 1.5], samples at 2j and 2j + 1
    # (pixel centres): bins 1..3 read pixels 2..7 of the square, bins 0 and 4 read pixels 0, 1, 8, 9.
    square = np.zeros((5, 5), np.float32)
    square[1:4, 1:4] = 1
    np.testing.assert_array_equal(got[0], square)
    np.testing.assert_array_equal(got[1:3], -1)
    left = np.zeros((5, 5), np.float32)
    left[:, :2] = 1                    # pixels 0..3 of the left half (0..4); bin 2 reads pixels 4, 5: mean 0.5
    left[:, 2] = 1                     # 0.5 >= threshold 0.5
    np.testing.assert_array_equal(got[3], left)
    np.testing.assert_array_equal(got[4], -1)
    # RoI [2, 8]: bins of 1.2 pixels from 1.5, samples at 1.8 + 1.2 j and 2.4 + 1.2 j: every sample reads
    # the square at >= 0.8 on each axis (1.8: 0.2 of pixel 1 + 0.8 of pixel 2), so every bin is 1
    np.testing.assert_array_equal(got[5], mask_target(rois, labels, gt, masks, mask_size=5)[5])
    assert got[5].sum() == 25
    np.testing.assert_array_equal(got, mask_target(rois, labels, gt, masks, mask_size=5))
    # threshold 0.75: image 1's middle column (0.5) drops out
    high = run_op(rois, labels, gt, masks, mask_size=5, threshold=0.75)
    np.testing.assert_array_equal(high[3], left * (np.arange(5) < 2))


def test_not_aligned_and_stride_two():
    rois, labels, gt, masks = hand_case()
    # stride 2: the 12 x 12 mask covers 24 x 24 image pixels; RoI [0, 10] is mask [0, 5] (not aligned),
    # bin j of 1 cell spans [j, j + 1], samples at j + 0.25 and j + 0.75; the square starts at pixel 2, so on
    # each axis bin 0 reads 0, bin 1 reads 0.25 and 0.75 (mean 0.5), bins 2..4 read 1
    got = run_op(rois, labels, gt, masks, mask_size=5, spatial_scale=0.5, aligned=False)
    want = np.zeros((5, 5), np.float32)
    want[1:, 1:] = 1
    want[1, 1] = 0                      # mean of 0.25 * 0.25, 0.25 * 0.75 (twice), 0.75 * 0.75: 0.25
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got, mask_target(rois, labels, gt, masks, mask_size=5, spatial_scale=0.5,
                                                   aligned=False))


# ---------------------------------------------------------------------------------------------
# Random cases against the numpy reference
# ---------------------------------------------------------------------------------------------

SAMPLING = [(1.0, True, 2), (1.0, False, 1), (0.5, True, 0), (0.5, False, -1), (0.5, True, 3), (1.0, True, -1)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("scale, aligned, sample_ratio", SAMPLING)
def test_random_cases_equal_reference(seed, scale, aligned, sample_ratio):
    rng = np.random.default_rng(100 * seed + SAMPLING.index((scale, aligned, sample_ratio)))
    rois, labels, gt, masks = random_case(rng, stride=int(round(1 / scale)), soft=seed == 1)
    kwargs = dict(mask_size=int(rng.choice([7, 14])), spatial_scale=scale, aligned=aligned,
                  sample_ratio=sample_ratio, threshold=float(rng.choice([0.5, 0.3])))
    got = run_op(rois, labels, gt, masks, **kwargs)
    want = mask_target(rois, labels, gt, masks, **kwargs)
    np.testing.assert_array_equal(got, want)
    targets = got[(got >= 0).all(axis=(1, 2))]
    assert len(targets) >= 10 and 0.1 < targets.mean() < 0.9          # real targets, both values
    assert ((labels > 0).sum() > len(targets))                         # wrong-class rows are -1
    assert np.isin(got, [-1, 0, 1]).all()


@pytest.mark.parametrize("case", op_cases.cases_for("MaskTarget"), ids=lambda c: c.name)
def test_op_cases_match_reference(case):
    # the cases the GPU self-test and `pytest -m gpu` run (tests/op_cases.py) against the numpy reference
    got = op_cases.run_case(case, mx.cpu())[0]
    np.testing.assert_array_equal(got, mask_target(*case.inputs, **op_cases.case_kwargs(case)))
    assert (got >= 0).all(axis=(1, 2)).sum() >= 10 and (got == 1).any() and (got == -1).any()


def test_reference_averages_are_roi_align_of_the_mask():
    """The reference's soft values equal contrib.ROIAlign (a second implementation) on the mask."""
    rng = np.random.default_rng(3)
    _, _, gt, masks = random_case(rng, soft=True, batch=1)
    plane = masks[0, 0]
    for aligned, ratio in ((True, 2), (False, 2), (True, 1)):
        roi = np.array([3.5, 7.25, 60.0, 41.5], np.float32)
        want = mx.nd.contrib.ROIAlign(mx.nd.array(plane[None, None]), mx.nd.array(np.r_[0, roi][None]),
                                      pooled_size=(14, 14), spatial_scale=1.0, sample_ratio=ratio,
                                      aligned=aligned).asnumpy()[0, 0]
        np.testing.assert_allclose(mask_soft_target(plane, roi, 14, 1.0, ratio, aligned), want, rtol=0, atol=1e-5)


def test_after_proposal_target_each_foreground_gets_a_mask_of_its_class():
    """ProposalTarget then MaskTarget: every foreground row has a target, from the ground truth that
    ProposalTarget encoded for it (its box decodes back to that ground truth, of class label - 1), and
    equal to the reference; background and padding rows are -1."""
    rng = np.random.default_rng(11)
    num_classes, batch, size = 4, 2, 128
    gt = random_gt(rng, batch, 6, size, num_classes, counts=[6, 3])
    gt[1, 3] = [9, 10, 10, 60, 60]                     # class >= C: not a ground truth for either op
    masks = random_masks(rng, gt, size, 2)
    rois, _ = random_rois_and_labels(rng, gt, 200, size, num_classes)
    mx.random.seed(5)
    rois_out, labels, box_target, _ = (o.asnumpy() for o in mx.nd.ProposalTarget(
        mx.nd.array(rois), mx.nd.array(gt), num_classes=num_classes, batch_rois=64, fg_fraction=0.25))
    fg = labels > 0
    assert fg.sum() >= 20
    got = run_op(rois_out, labels, gt, masks, num_classes=num_classes, mask_size=14, spatial_scale=0.5)
    np.testing.assert_array_equal(got[~fg], -1)
    assert (got[fg] >= 0).all()
    np.testing.assert_array_equal(got, mask_target(rois_out, labels, gt, masks, mask_size=14, spatial_scale=0.5,
                                                   num_classes=num_classes))
    images, rows = matched_rows(rois_out, labels, gt, num_classes)
    for r in np.flatnonzero(fg):
        b, g, k = images[r], rows[r], int(labels[r])
        assert gt[b, g, 0] == k - 1
        encoded_gt = decode(rois_out[r, 1:5], box_target[r, 4 * k:4 * k + 4], VARIANCES)
        np.testing.assert_allclose(encoded_gt, gt[b, g, 1:5], rtol=1e-4, atol=1e-3)
        soft = mask_soft_target(masks[b, g], rois_out[r, 1:5], 14, 0.5, 2, True)
        np.testing.assert_array_equal(got[r], soft >= 0.5)


def test_thread_counts_give_identical_targets():
    rng = np.random.default_rng(8)
    rois, labels, gt, masks = random_case(rng, soft=True)
    before = ops.num_threads()
    try:
        ops.set_num_threads(1)
        one = run_op(rois, labels, gt, masks, mask_size=14)
        ops.set_num_threads(3)
        three = run_op(rois, labels, gt, masks, mask_size=14)
    finally:
        ops.set_num_threads(before)
    np.testing.assert_array_equal(one, three)


# ---------------------------------------------------------------------------------------------
# Robustness and errors
# ---------------------------------------------------------------------------------------------

def test_fuzz_bad_values_give_defined_output():
    rng = np.random.default_rng(77)
    for it in range(12):
        rois, labels, gt, masks = random_case(rng, soft=bool(it % 2))
        corrupt_label_rows(rng, gt, 0.3, [np.nan, np.inf, -2, 1e9, 2.5])
        bad = rng.random(rois.shape) < 0.03
        rois[bad] = rng.choice([np.nan, np.inf, -np.inf, 7.5, -1, 2, 1e30], bad.sum())
        some = rng.random(labels.shape) < 0.1
        labels[some] = rng.choice([np.nan, np.inf, -np.inf, 0.5, 1.5, 1e10], some.sum())
        masks[rng.random(masks.shape) < 0.001] = np.nan
        copies = [a.copy() for a in (rois, labels, gt, masks)]
        kwargs = dict(mask_size=7, sample_ratio=int(rng.choice([2, -1])), num_classes=int(rng.choice([0, 3])))
        got = run_op(rois, labels, gt, masks, **kwargs)
        for a, c in zip((rois, labels, gt, masks), copies):
            np.testing.assert_array_equal(a, c)
        assert np.isin(got, [-1, 0, 1]).all(), it
        np.testing.assert_array_equal(got, mask_target(rois, labels, gt, masks, **kwargs), err_msg=str(it))


def test_huge_roi_with_adaptive_sampling_is_capped():
    """A RoI of 1e6 pixels with sample_ratio <= 0: at most 64 x 64 samples per bin, so it returns at once;
    the mask covers a sliver of it, sampled like the reference."""
    rois = np.array([[0, -1e6, -1e6, 1e6, 1e6], [0, 0, 0, 1e30, 1e30]], np.float32)
    gt = np.array([[[0, -1e6, -1e6, 1e6, 1e6], [0, 0, 0, 1e30, 1e30]]], np.float32)
    masks = np.ones((1, 2, 8, 8), np.float32)
    start = time.perf_counter()
    got = run_op(rois, np.ones(2), gt, masks, mask_size=4, sample_ratio=-1)
    assert time.perf_counter() - start < 5
    with np.errstate(over="ignore"):                       # the reference's IoU of 1e30 boxes
        want = mask_target(rois, np.ones(2), gt, masks, mask_size=4, sample_ratio=-1)
    np.testing.assert_array_equal(got, want)


def test_rois_of_other_images_and_batch_index_rules():
    rois, labels, gt, masks = hand_case()
    bad = rois.copy()
    bad[0, 0] = 2            # no image 2
    bad[3, 0] = 0.5          # not an integer
    bad[5, 0] = np.nan
    got = run_op(bad, labels, gt, masks, mask_size=5)
    np.testing.assert_array_equal(got[[0, 3, 5]], -1)
    np.testing.assert_array_equal(got, mask_target(bad, labels, gt, masks, mask_size=5))


@pytest.mark.parametrize("shapes, kwargs, message", [
    (((6, 4), (6,), (2, 3, 5), (2, 3, 8, 8)), {}, "rois must have shape"),
    (((6, 5), (5,), (2, 3, 5), (2, 3, 8, 8)), {}, "labels must have shape"),
    (((6, 5), (6, 1), (2, 3, 5), (2, 3, 8, 8)), {}, "labels must have shape"),
    (((6, 5), (6,), (2, 3, 4), (2, 3, 8, 8)), {}, "gt must have shape"),
    (((6, 5), (6,), (2, 3, 5), (2, 4, 8, 8)), {}, "gt_masks must have shape"),
    (((6, 5), (6,), (2, 3, 5), (1, 3, 8, 8)), {}, "gt_masks must have shape"),
    (((6, 5), (6,), (2, 3, 5), (2, 3, 8)), {}, "gt_masks must have shape"),
    (((6, 5), (6,), (2, 3, 5), (2, 3, 8, 8)), {"mask_size": 0}, "mask_size"),
    (((6, 5), (6,), (2, 3, 5), (2, 3, 8, 8)), {"spatial_scale": 0}, "spatial_scale"),
    (((6, 5), (6,), (2, 3, 5), (2, 3, 8, 8)), {"spatial_scale": float("nan")}, "spatial_scale"),
    (((6, 5), (6,), (2, 3, 5), (2, 3, 8, 8)), {"sample_ratio": 65}, "sample_ratio"),
    (((6, 5), (6,), (2, 3, 5), (2, 3, 8, 8)), {"threshold": float("inf")}, "threshold"),
    (((6, 5), (6,), (2, 3, 5), (2, 3, 8, 8)), {"num_classes": -1}, "num_classes"),
    (((6, 5), (6,), (2, 3, 5), (2, 3, 8, 8)), {"aligned": "maybe"}, "boolean"),
    (((6, 5), (6,), (2, 3, 5), (2, 3, 8, 8)), {"masksize": 14}, "unknown attribute"),
])
def test_bad_shapes_and_attributes_are_mxnet_errors(shapes, kwargs, message):
    arrays = [mx.nd.zeros(s) for s in shapes]
    with pytest.raises(mx.MXNetError, match=message) as info:
        mx.nd.MaskTarget(*arrays, **kwargs).wait_to_read()
    assert str(info.value).count("MaskTarget:") == 1


def test_non_float32_input_is_an_error():
    with pytest.raises(mx.MXNetError, match="float32"):
        mx.nd.MaskTarget(mx.nd.zeros((4, 5)), mx.nd.zeros((4,)), mx.nd.zeros((1, 2, 5)),
                         mx.nd.zeros((1, 2, 8, 8), dtype="uint8")).wait_to_read()


def test_symbol_shapes_and_zero_backward():
    rois, labels, gt, masks = hand_case()
    sym = mx.sym.MaskTarget(mx.sym.var("rois"), mx.sym.var("labels"), mx.sym.var("gt"), mx.sym.var("gt_masks"),
                            mask_size=5, spatial_scale=1.0, sample_ratio=2, aligned=True)
    shapes = dict(rois=rois.shape, labels=labels.shape, gt=gt.shape, gt_masks=masks.shape)
    _, out_shapes, _ = sym.infer_shape(**shapes)
    assert out_shapes == [(6, 5, 5)]
    exe = sym.simple_bind(mx.cpu(), **shapes)
    for name, value in zip(("rois", "labels", "gt", "gt_masks"), (rois, labels, gt, masks)):
        exe.arg_dict[name][:] = value
    for grad in exe.grad_arrays:
        grad[:] = 7.0
    exe.forward(is_train=True)
    exe.backward([mx.nd.ones(o.shape) for o in exe.outputs])
    np.testing.assert_array_equal(exe.outputs[0].asnumpy(), mask_target(rois, labels, gt, masks, mask_size=5))
    for name, grad in zip(sym.list_arguments(), exe.grad_arrays):
        np.testing.assert_array_equal(grad.asnumpy(), 0, err_msg=name)
