"""FPNProposal: our operator vs its numpy reference and MXNet's contrib MultiProposal, fixtures, bad input."""
import math

import mxnet as mx
import numpy as np
import pytest

import op_cases

from fuzz_inputs import degenerate_anchors, sprinkle

import ssdkit  # noqa: F401  (loads the operators)
from ssdkit import ops
from ssdkit.anchors import rpn_anchors
from ssdkit.reference.fpn_proposal import fpn_proposal as reference

STRIDES = (4, 8, 16, 32, 64)
# Boxes are pixels up to ~1300: 1e-5 relative, and 1e-4 px absolute for coordinates near 0 (the op
# and the reference may differ by an ulp of exp, i.e. ~6e-5 px at 1000 px).
RTOL, ATOL = 1e-5, 1e-4


def fpn_anchors(height, width, strides=STRIDES, scales=(8.0,), ratios=(0.5, 1.0, 2.0)):
    """(1, N, 4) anchors of an FPN on a height x width input, and the anchors per level."""
    levels = [rpn_anchors(math.ceil(height / s), math.ceil(width / s), s, scales, ratios) for s in strides]
    return np.concatenate(levels)[None].astype(np.float32), tuple(len(a) for a in levels)


def make_inputs(rng, batch, height, width, strides=STRIDES, delta_scale=0.3, full_image=False):
    """cls_prob (B, N) sigmoid scores, bbox_pred (B, N*4), anchor (1, N, 4), im_info (B, 3); level sizes."""
    anchor, sizes = fpn_anchors(height, width, strides)
    n = anchor.shape[1]
    cls = (1 / (1 + np.exp(-rng.normal(scale=2.0, size=(batch, n))))).astype(np.float32)
    bbox = rng.normal(scale=delta_scale, size=(batch, n * 4)).astype(np.float32)
    if full_image:
        valid = np.tile([height, width], (batch, 1))
    else:  # each image fills part of the padded batch tensor
        valid = np.stack([rng.integers(height // 2, height + 1, batch), rng.integers(width // 2, width + 1, batch)], 1)
    im_info = np.concatenate([valid, rng.uniform(0.5, 2.0, (batch, 1))], axis=1).astype(np.float32)
    return (cls, bbox, anchor, im_info), sizes


def ours(cls, bbox, anchor, im_info, **kwargs):
    rois, scores = mx.nd.FPNProposal(*(mx.nd.array(x) for x in (cls, bbox, anchor, im_info)), **kwargs)
    return rois.asnumpy(), scores.asnumpy()


def assert_same_proposals(got, expected, msg=""):
    """Same rows in the same order: batch index and scores exactly, boxes to RTOL / ATOL."""
    (rois, scores), (ref_rois, ref_scores) = got, expected
    assert rois.shape == ref_rois.shape and scores.shape == ref_scores.shape, msg
    np.testing.assert_array_equal(rois[:, 0], ref_rois[:, 0], err_msg=msg)
    np.testing.assert_array_equal(scores, ref_scores, err_msg=msg)
    np.testing.assert_allclose(rois[:, 1:], ref_rois[:, 1:], rtol=RTOL, atol=ATOL, err_msg=msg)


def random_kwargs(rng, sizes):
    return dict(level_sizes=sizes,
                pre_nms_top_n=int(rng.choice([-1, 1, 7, 50, 300, 1000, 2000, 10 ** 6])),
                post_nms_top_n=int(rng.choice([1, 10, 100, 1000])),
                nms_threshold=float(rng.choice([0.3, 0.5, 0.7])),
                min_size=float(rng.choice([0.0, 0.0, 4.0, 16.0])),
                stds=tuple(float(v) for v in (rng.uniform(0.5, 1.5, 4) if rng.random() < 0.3 else (1, 1, 1, 1))))


def test_matches_reference_on_random_cases(rng):
    for case in range(30):
        batch = int(rng.integers(1, 5))
        height, width = (int(v) for v in rng.integers(48, 352, 2))
        strides = STRIDES[:int(rng.integers(1, 6))] if case % 3 else STRIDES
        inputs, sizes = make_inputs(rng, batch, height, width, strides, delta_scale=float(rng.uniform(0.05, 0.6)))
        kwargs = random_kwargs(rng, sizes)
        if kwargs["pre_nms_top_n"] == -1 and sum(sizes) > 8000:
            kwargs["pre_nms_top_n"] = 2000  # keeps the Python NMS of the reference quick
        msg = "case %d: B=%d %dx%d N=%d %s" % (case, batch, height, width, sum(sizes), kwargs)
        got = ours(*inputs, **kwargs)
        assert_same_proposals(got, reference(*inputs, **kwargs), msg)


def test_matches_reference_at_800x1333():
    rng = np.random.default_rng(7)
    inputs, sizes = make_inputs(rng, 2, 800, 1344, delta_scale=0.2)
    assert sum(sizes) > 250000
    kwargs = dict(level_sizes=sizes, pre_nms_top_n=1000, post_nms_top_n=1000)
    got = ours(*inputs, **kwargs)
    assert_same_proposals(got, reference(*inputs, **kwargs))
    assert np.all(got[1] > 0)  # plenty of proposals: no padding


def test_equal_scores_rank_by_anchor_index(rng):
    # quantised scores: many ties, broken by ascending anchor index both within and across levels
    for case in range(6):
        inputs, sizes = make_inputs(rng, 2, 96, 128, delta_scale=0.1)
        cls = np.round(inputs[0] * 4) / 4
        kwargs = dict(level_sizes=sizes, pre_nms_top_n=int(rng.choice([20, 200])), post_nms_top_n=150,
                      nms_threshold=0.5)
        assert_same_proposals(ours(cls, *inputs[1:], **kwargs), reference(cls, *inputs[1:], **kwargs), str(case))
    # direct check: 4 disjoint boxes with one score, in two levels -> anchor order
    anchor = np.array([[[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]], np.float32)
    rois, scores = ours(np.full((1, 4), 0.5, np.float32), np.zeros((1, 16), np.float32), anchor,
                        np.array([[100, 100, 1]], np.float32), level_sizes=(1, 3), post_nms_top_n=4)
    np.testing.assert_array_equal(rois[:, 1:], anchor[0])


def hand_fixture():
    """Two levels, zero regressions (boxes are the anchors, clipped), image 100 x 100."""
    anchor = np.array([[[0, 0, 10, 10],      # a0 level 0, score .9
                        [0, 0, 10, 5],       # a1 level 0, .8: IoU(a0, a1) = 0.5
                        [50, 50, 60, 60],    # a2 level 0, .3
                        [95, 95, 110, 110],  # a3 level 0, .6: clipped to [95, 95, 100, 100]
                        [0, 0, 10, 10],      # a4 level 1, .7: a0's box, another level: never suppressed by it
                        [20, 20, 20, 30]]],  # a5 level 1, .95: zero width, never a proposal
                      np.float32)
    cls = np.array([[0.9, 0.8, 0.3, 0.6, 0.7, 0.95]], np.float32)
    return cls, np.zeros((1, 24), np.float32), anchor, np.array([[100, 100, 1]], np.float32)


@pytest.mark.parametrize("kwargs,expected", [
    (dict(nms_threshold=0.5), [0, 4, 3, 2]),
    (dict(nms_threshold=0.7), [0, 1, 4, 3, 2]),
    (dict(nms_threshold=0.5, pre_nms_top_n=2), [0, 4]),  # level 0 ranks a0, a1; level 1 a5 (dropped), a4
    (dict(nms_threshold=0.5, min_size=6), [0, 4, 2]),    # a1 (5 high) and clipped a3 (5 x 5) too small
    (dict(nms_threshold=0.7, post_nms_top_n=2), [0, 1]),
    (dict(nms_threshold=0.7, min_size=5), [0, 1, 4, 3, 2]),     # exactly min_size: kept
    (dict(nms_threshold=0.7, min_size=5.001), [0, 4, 2]),
])
def test_hand_computed_fixture(kwargs, expected):
    cls, bbox, anchor, im_info = hand_fixture()
    boxes = np.minimum(anchor[0], 100)
    kwargs = dict(dict(level_sizes=(4, 2), post_nms_top_n=6), **kwargs)
    rows = kwargs["post_nms_top_n"]
    rois, scores = ours(cls, bbox, anchor, im_info, **kwargs)
    assert rois.shape == (rows, 5) and scores.shape == (rows, 1)
    want_rois = np.zeros((rows, 5), np.float32)
    want_rois[:len(expected), 1:] = boxes[expected]
    want_scores = np.full((rows, 1), -1, np.float32)
    want_scores[:len(expected), 0] = cls[0, expected]
    np.testing.assert_array_equal(rois, want_rois)
    np.testing.assert_array_equal(scores, want_scores)
    assert_same_proposals((rois, scores), reference(cls, bbox, anchor, im_info, **kwargs))


def test_padding_rows_and_batch_index():
    cls, bbox, anchor, _ = hand_fixture()
    cls2 = np.concatenate([cls, cls[:, ::-1]])
    bbox2 = np.zeros((2, 24), np.float32)
    # image 1 is 50 x 50: a2 and a3 are clipped to zero size and dropped
    im_info = np.array([[100, 100, 1], [50, 50, 1]], np.float32)
    rois, scores = ours(cls2, bbox2, anchor, im_info, level_sizes=(4, 2), post_nms_top_n=8, nms_threshold=0.5)
    np.testing.assert_array_equal(rois[:8, 0], 0)
    np.testing.assert_array_equal(rois[8:, 0], 1)
    # image 1 scores by anchor: .95 .7 .6 .3 .8 .9 -> a0 (.95), a4 (.8); a1 suppressed by a0, a5 empty
    np.testing.assert_array_equal(scores[8:, 0], np.float32([0.95, 0.8, -1, -1, -1, -1, -1, -1]))
    np.testing.assert_array_equal(rois[10:, 1:], 0)
    assert np.count_nonzero(scores[:8] > 0) == 4


# --- comparison with MXNet's contrib MultiProposal (single level) -----------------------------------

def contrib_anchors(height, width, stride, scales, ratios):
    """MultiProposal's anchors (py-faster-rcnn's enumeration: rounded sizes, inclusive pixels), (H*W*A, 4)."""
    base = np.array([0, 0, stride - 1, stride - 1], np.float64)
    w, h = base[2] - base[0] + 1, base[3] - base[1] + 1
    cx, cy = base[0] + 0.5 * (w - 1), base[1] + 0.5 * (h - 1)
    shapes = []
    for ratio in ratios:
        ws = np.round(np.sqrt(w * h / ratio))
        hs = np.round(ws * ratio)
        for scale in scales:
            shapes.append((ws * scale, hs * scale))
    cell = np.array([[cx - 0.5 * (sw - 1), cy - 0.5 * (sh - 1), cx + 0.5 * (sw - 1), cy + 0.5 * (sh - 1)]
                     for sw, sh in shapes])
    ys, xs = np.meshgrid(np.arange(height) * stride, np.arange(width) * stride, indexing="ij")
    shift = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4)
    return (shift + cell[None]).reshape(-1, 4).astype(np.float32)


def contrib_case(rng, batch, height, width, stride=16, scales=(8.0,), ratios=(0.5, 1.0, 2.0)):
    """Inputs on which MultiProposal and FPNProposal coincide up to the +1 pixel convention.

    Their conventions map onto each other: a MultiProposal box (x0, y0, x1, y1) with inclusive pixel
    ends is our continuous box (x0, y0, x1 + 1, y1 + 1), its clip to [0, W - 1] is our clip to [0, W],
    its "+1" IoU our IoU. So our anchors are its anchors + (0, 0, 1, 1), and then:
      - im_info height in [H * stride, H * stride + stride) (so it masks no padded feature cells);
      - min_size 0 (it would keep small boxes at score -1; see test_contrib_min_size_with_all_anchors);
      - every decoded centre inside the image (its x0 <= W - 1 and x1 >= 0 clips hold for ours too).
    Scores are distinct (its sort is unstable) and it suppresses at IoU > t where we do at >= t:
    equal only when no IoU is exactly t, which random boxes make (almost) certain.
    """
    a = len(scales) * len(ratios)
    theirs_anchor = contrib_anchors(height, width, stride, scales, ratios)
    n = height * width * a
    # distinct scores per image; centres kept inside the image by adjusting t_x, t_y
    cls = np.stack([(rng.permutation(n) + 1) / (n + 1) for _ in range(batch)]).astype(np.float32)
    bbox = rng.normal(scale=0.15, size=(batch, n, 4)).astype(np.float32)
    im_info = np.stack([height * stride + rng.integers(0, stride, batch),
                        width * stride + rng.integers(0, stride, batch), np.ones(batch)], 1).astype(np.float32)
    for k, size_col in ((0, 1), (1, 0)):  # x uses the width (im_info[:, 1]), y the height
        lo, hi = theirs_anchor[:, k], theirs_anchor[:, k + 2]
        extent = hi - lo + 1
        centre = lo + 0.5 * (extent - 1)
        target = np.clip(centre + bbox[..., k] * extent, 1.0, im_info[:, size_col:size_col + 1] - 2.0)
        bbox[..., k] = (target - centre) / extent
    bbox = bbox.reshape(batch, n * 4)
    # MultiProposal layout: scores (B, 2A, H, W) with the object score in channels A..2A-1,
    # deltas (B, 4A, H, W); ours is the same data transposed to (B, H*W*A) and (B, H*W*A*4)
    theirs_cls = np.concatenate([1 - cls, cls], axis=1).reshape(batch, 2, height, width, a)
    theirs_cls = theirs_cls.transpose(0, 1, 4, 2, 3).reshape(batch, 2 * a, height, width)
    theirs_bbox = bbox.reshape(batch, height, width, 4 * a).transpose(0, 3, 1, 2)
    ours_anchor = (theirs_anchor + np.float32([0, 0, 1, 1]))[None]
    return dict(ours=(cls, bbox, ours_anchor, im_info), theirs=(theirs_cls, theirs_bbox, im_info))


def contrib(cls, bbox, im_info, **kwargs):
    rois, scores = mx.nd.contrib.MultiProposal(*(mx.nd.array(x) for x in (cls, bbox, im_info)), output_score=True,
                                               **kwargs)
    return rois.asnumpy(), scores.asnumpy()


def assert_matches_contrib(got, theirs, post, msg):
    """Our kept rows equal theirs + (0, 0, 1, 1); after them, they repeat kept rows where we pad."""
    rois, scores = got
    t_rois, t_scores = theirs
    batch = rois.shape[0] // post
    total_kept = 0
    for b in range(batch):
        rows = slice(b * post, (b + 1) * post)
        r, s, tr, ts = rois[rows], scores[rows, 0], t_rois[rows], t_scores[rows, 0]
        kept = int(np.count_nonzero(s >= 0))
        total_kept += kept
        assert kept > 0, msg
        np.testing.assert_array_equal(s[:kept], ts[:kept], err_msg=msg)
        np.testing.assert_allclose(r[:kept, 1:], tr[:kept, 1:] + np.float32([0, 0, 1, 1]), rtol=0, atol=2e-3,
                                   err_msg=msg)
        np.testing.assert_array_equal(r[:, 0], b)
        np.testing.assert_array_equal(tr[:, 0], b)
        # MultiProposal pads by repeating its kept rows: row kept + i repeats row i % kept
        repeat = np.arange(kept, post) % kept
        np.testing.assert_array_equal(tr[kept:], tr[repeat], err_msg=msg)
        np.testing.assert_array_equal(ts[kept:], ts[repeat], err_msg=msg)
        np.testing.assert_array_equal(s[kept:], -1)
        np.testing.assert_array_equal(r[kept:, 1:], 0)
    return total_kept


@pytest.mark.parametrize("batch,height,width,scales,pre,post,thr", [
    (1, 20, 30, (8.0,), 6000, 300, 0.7),
    (2, 25, 38, (8.0,), 1000, 1000, 0.7),  # fewer than post survive NMS: padding rows
    (3, 12, 17, (4.0, 8.0), 200, 50, 0.5),
    (2, 30, 30, (8.0, 16.0), 800, 2000, 0.3),
    (4, 8, 9, (8.0,), 10000, 120, 0.7),  # pre larger than the level
])
def test_matches_contrib_multiproposal(rng, batch, height, width, scales, pre, post, thr):
    ratios = (0.5, 1.0, 2.0)
    case = contrib_case(rng, batch, height, width, scales=scales, ratios=ratios)
    n = height * width * len(scales) * len(ratios)
    got = ours(*case["ours"], level_sizes=(n,), pre_nms_top_n=pre, post_nms_top_n=post, nms_threshold=thr)
    theirs = contrib(*case["theirs"], rpn_pre_nms_top_n=pre, rpn_post_nms_top_n=post, threshold=thr,
                     rpn_min_size=0, scales=scales, ratios=ratios, feature_stride=16)
    assert assert_matches_contrib(got, theirs, post, "pre=%d post=%d thr=%s" % (pre, post, thr)) > batch


def test_contrib_min_size_with_all_anchors(rng):
    # With every anchor ranked (pre >= N) the size filters agree: it gives small boxes score -1, which
    # sorts them after every real score, so its rows with a real score are exactly our proposals.
    batch, height, width = 2, 16, 24
    case = contrib_case(rng, batch, height, width)
    n = height * width * 3
    post = 2000
    got = ours(*case["ours"], level_sizes=(n,), pre_nms_top_n=-1, post_nms_top_n=post, nms_threshold=0.7,
               min_size=120)
    theirs = contrib(*case["theirs"], rpn_pre_nms_top_n=n, rpn_post_nms_top_n=post, threshold=0.7,
                     rpn_min_size=120, scales=(8.0,), ratios=(0.5, 1.0, 2.0), feature_stride=16)
    for b in range(batch):
        rows = slice(b * post, (b + 1) * post)
        s, ts = got[1][rows, 0], theirs[1][rows, 0]
        kept = int(np.count_nonzero(s >= 0))
        assert 0 < kept < int(np.count_nonzero(case["ours"][0][b] >= 0)) // 2  # the filter removed many
        np.testing.assert_array_equal(s[:kept], ts[:kept])
        assert ts[kept] == -1 or ts[kept] == ts[0]  # next: a filtered box (or its repeat padding)
        np.testing.assert_allclose(got[0][rows][:kept, 1:], theirs[0][rows][:kept, 1:] + np.float32([0, 0, 1, 1]),
                                   atol=2e-3, rtol=0)


# --- robustness ---------------------------------------------------------------------------------------

def _corrupt(rng, cls, bbox, anchor):
    cls, bbox, anchor = cls.copy(), bbox.copy(), anchor.copy()
    sprinkle(rng, ((cls, [np.nan, np.inf, -np.inf, 2.0, -3.0]),
                   (bbox, [np.nan, np.inf, -np.inf, 1e4, -1e4, 88.0, 1e30]),
                   (anchor, [np.nan, np.inf, -np.inf, 0.5])), every=15)
    degenerate_anchors(rng, anchor)
    return cls, bbox, anchor


def test_fuzz_non_finite_and_degenerate_inputs(rng):
    for case in range(25):
        batch = int(rng.integers(1, 4))
        inputs, sizes = make_inputs(rng, batch, int(rng.integers(16, 96)), int(rng.integers(16, 96)),
                                    STRIDES[:int(rng.integers(1, 6))], delta_scale=float(rng.uniform(0.1, 3)))
        cls, bbox, anchor = _corrupt(rng, *inputs[:3])
        im_info = inputs[3]
        kwargs = random_kwargs(rng, sizes)
        arrays = [mx.nd.array(x) for x in (cls, bbox, anchor, im_info)]
        before = [a.asnumpy().copy() for a in arrays]
        rois, scores = (o.asnumpy() for o in mx.nd.FPNProposal(*arrays, **kwargs))
        for a, b in zip(arrays, before):  # inputs are never written
            np.testing.assert_array_equal(a.asnumpy(), b)
        msg = "case %d %s" % (case, kwargs)
        with np.errstate(all="ignore"):
            assert_same_proposals((rois, scores), reference(cls, bbox, anchor, im_info, **kwargs), msg)
        assert np.all(np.isfinite(rois)) and np.all(np.isfinite(scores)), msg
        real = scores[:, 0] != -1
        assert np.all((scores[real] >= -3) & (scores[real] <= 2)), msg  # only finite input scores
        b = rois[:, 0].astype(int)
        assert np.all(rois[real, 1:3] >= 0), msg
        assert np.all(rois[real, 3] <= im_info[b[real], 1]) and np.all(rois[real, 4] <= im_info[b[real], 0]), msg
        assert np.all(rois[real, 3] > rois[real, 1]) and np.all(rois[real, 4] > rois[real, 2]), msg


def test_all_non_finite_scores_give_only_padding(rng):
    (cls, bbox, anchor, im_info), sizes = make_inputs(rng, 2, 64, 64)
    cls[0] = np.nan
    cls[1] = np.where(rng.random(cls.shape[1]) < 0.5, np.inf, -np.inf)
    rois, scores = ours(cls, bbox, anchor, im_info, level_sizes=sizes, post_nms_top_n=20)
    np.testing.assert_array_equal(scores, -1)
    np.testing.assert_array_equal(rois[:, 1:], 0)
    np.testing.assert_array_equal(rois[:, 0], np.repeat([0, 1], 20))


def test_huge_regressions_are_clamped(rng):
    # t_w = 1e4 would overflow exp; clamped at log(1000/16) the box is 62.5 anchor widths, clipped
    anchor = np.array([[[40, 40, 48, 48]]], np.float32)
    rois, scores = ours(np.array([[0.9]], np.float32), np.array([[0, 0, 1e4, 1e4]], np.float32), anchor,
                        np.array([[600, 800, 1]], np.float32), level_sizes=(1,), post_nms_top_n=1)
    np.testing.assert_allclose(rois[0], [0, 0, 0, 44 + 250, 44 + 250], rtol=1e-6)
    assert scores[0, 0] == np.float32(0.9)


def test_threads_do_not_change_the_result(rng):
    inputs, sizes = make_inputs(rng, 1, 256, 320)
    kwargs = dict(level_sizes=sizes, pre_nms_top_n=500, post_nms_top_n=300)
    previous = ops.num_threads()
    try:
        ops.set_num_threads(1)
        one = ours(*inputs, **kwargs)
        ops.set_num_threads(2)
        two = ours(*inputs, **kwargs)
        assert ops.threads_used() == 2
    finally:
        ops.set_num_threads(previous)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


# --- errors -------------------------------------------------------------------------------------------

GOOD_SHAPES = ((2, 10), (2, 40), (1, 10, 4), (2, 3))


@pytest.mark.parametrize("shapes,kwargs,match", [
    (GOOD_SHAPES, dict(level_sizes=(6, 3)), r"level_sizes \(6, 3\) sum to 9 but anchor \(1, 10, 4\) holds 10"),
    (GOOD_SHAPES, dict(), "'level_sizes' is required"),
    (GOOD_SHAPES, dict(level_sizes=(10, 0)), "positive integers"),
    (GOOD_SHAPES, dict(level_sizes=(5.5, 4.5)), "positive integers"),
    (((2, 10), (2, 40), (1, 10, 4), (2, 2)), dict(level_sizes=(10,)), "im_info .* must be"),
    (((2, 10), (2, 40), (1, 10, 4), (3, 3)), dict(level_sizes=(10,)), "im_info .* must be"),
    (((2, 10), (2, 44), (1, 10, 4), (2, 3)), dict(level_sizes=(10,)), "bbox_pred .* must be"),
    (((2, 10), (2, 40), (1, 11, 4), (2, 3)), dict(level_sizes=(11,)), "disagree on the number of anchors"),
    (((2, 10, 1), (2, 40), (1, 10, 4), (2, 3)), dict(level_sizes=(10,)), "cls_prob must be 2-d"),
    (((2, 10), (2, 40), (10, 4), (2, 3)), dict(level_sizes=(10,)), "anchor must be"),
    (GOOD_SHAPES, dict(level_sizes=(10,), pre_nms_top_n=0), "pre_nms_top_n"),
    (GOOD_SHAPES, dict(level_sizes=(10,), post_nms_top_n=0), "post_nms_top_n"),
    (GOOD_SHAPES, dict(level_sizes=(10,), nms_threshold=0.0), "nms_threshold"),
    (GOOD_SHAPES, dict(level_sizes=(10,), nms_threshold=1.5), "nms_threshold"),
    (GOOD_SHAPES, dict(level_sizes=(10,), nms_threshold=float("nan")), "nms_threshold"),
    (GOOD_SHAPES, dict(level_sizes=(10,), min_size=-1), "min_size"),
    (GOOD_SHAPES, dict(level_sizes=(10,), stds=(1, 1, 1)), "stds"),
    (GOOD_SHAPES, dict(level_sizes=(10,), stds=(1, 1, 0, 1)), "stds"),
    (GOOD_SHAPES, dict(level_sizes=(10,), nms_thresh=0.5), "unknown attribute 'nms_thresh'"),
])
def test_bad_shapes_and_attributes_are_mxnet_errors(shapes, kwargs, match):
    arrays = [mx.nd.ones(s) for s in shapes]
    with pytest.raises(mx.MXNetError, match=match):
        outs = mx.nd.FPNProposal(*arrays, **kwargs)
        outs[0].wait_to_read()


@pytest.mark.parametrize("bad", [(np.nan, 10), (10, 0), (-5, 10), (10, np.inf)])
def test_bad_im_info_values_are_mxnet_errors(bad):
    im_info = np.array([[10, 10, 1], [bad[0], bad[1], 1]], np.float32)
    arrays = [mx.nd.ones(s) for s in GOOD_SHAPES[:3]] + [mx.nd.array(im_info)]
    with pytest.raises(mx.MXNetError, match="im_info row 1 .* finite positive height and width"):
        mx.nd.FPNProposal(*arrays, level_sizes=(10,))[0].wait_to_read()
    with pytest.raises(ValueError, match="im_info row 1 .* finite positive height and width"):
        reference(*[np.ones(s, np.float32) for s in GOOD_SHAPES[:3]], im_info, level_sizes=(10,))


def test_float64_input_is_an_mxnet_error():
    arrays = [mx.nd.ones(s, dtype="float64") for s in GOOD_SHAPES]
    with pytest.raises(mx.MXNetError, match="float32"):
        mx.nd.FPNProposal(*arrays, level_sizes=(10,))[0].wait_to_read()


# --- graphs -------------------------------------------------------------------------------------------

def test_symbol_graph_module_forward_and_zero_gradient(rng):
    # anchors enter as a fixed parameter (in the FPN graph they come from RPNAnchors)
    (cls, bbox, anchor, im_info), sizes = make_inputs(rng, 2, 64, 96)
    names = ("cls_prob", "bbox_pred", "im_info")
    rois, scores = mx.sym.FPNProposal(mx.sym.var("cls_prob"), mx.sym.var("bbox_pred"), mx.sym.var("anchor"),
                                      mx.sym.var("im_info"), level_sizes=sizes, post_nms_top_n=64,
                                      pre_nms_top_n=100, name="proposal")
    net = mx.sym.load_json(mx.sym.Group([rois, scores]).tojson())
    shapes = dict(zip(names, (cls.shape, bbox.shape, im_info.shape)))
    _, out_shapes, _ = net.infer_shape(anchor=anchor.shape, **shapes)
    assert out_shapes == [(128, 5), (128, 1)]
    mod = mx.mod.Module(net, data_names=names, label_names=None, context=mx.cpu(), fixed_param_names=["anchor"])
    mod.bind(data_shapes=list(shapes.items()), for_training=False)
    mod.init_params(arg_params={"anchor": mx.nd.array(anchor)}, allow_missing=False)
    mod.forward(mx.io.DataBatch([mx.nd.array(x) for x in (cls, bbox, im_info)]), is_train=False)
    got = [o.asnumpy() for o in mod.get_outputs()]
    expected = reference(cls, bbox, anchor, im_info, level_sizes=sizes, post_nms_top_n=64, pre_nms_top_n=100)
    assert_same_proposals(got, expected)
    assert np.count_nonzero(got[1] > 0) > 64
    # training-mode executor (Module would slice the (B*P, 5) outputs as if they were batch-major)
    args = {"cls_prob": cls, "bbox_pred": bbox, "anchor": anchor, "im_info": im_info}
    grads = {k: mx.nd.full(v.shape, 5.0) for k, v in args.items()}
    exe = net.bind(mx.cpu(), {k: mx.nd.array(v) for k, v in args.items()}, args_grad=grads)
    exe.forward(is_train=True)
    assert_same_proposals([o.asnumpy() for o in exe.outputs], expected)
    exe.backward([mx.nd.ones((128, 5)), mx.nd.ones((128, 1))])
    for grad in grads.values():
        assert np.all(grad.asnumpy() == 0)


def test_backward_writes_zeros(rng):
    inputs, sizes = make_inputs(rng, 1, 32, 32)
    arrays = [mx.nd.array(x) for x in inputs]
    for a in arrays:
        a.attach_grad()
        a.grad[:] = 5.0
    with mx.autograd.record():
        rois, scores = mx.nd.FPNProposal(*arrays, level_sizes=sizes, post_nms_top_n=10)
    mx.autograd.backward([rois, scores], [mx.nd.ones_like(rois), mx.nd.ones_like(scores)])
    for a in arrays:
        assert np.all(a.grad.asnumpy() == 0)


@pytest.mark.parametrize("case", op_cases.cases_for("FPNProposal"), ids=lambda c: c.name)
def test_op_cases_match_reference(case):
    # the cases the GPU self-test and `pytest -m gpu` run (tests/op_cases.py) against the numpy reference
    got = tuple(op_cases.run_case(case, mx.cpu()))
    assert_same_proposals(got, reference(*case.inputs, **op_cases.case_kwargs(case)), case.name)
