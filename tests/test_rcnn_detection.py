"""RCNNDetection: our operator vs its numpy reference and MXNet's contrib box_nms, fixtures, bad input."""
import mxnet as mx
import numpy as np
import pytest

import op_cases

import ssdkit  # noqa: F401  (loads the operators)
from ssdkit import ops
from ssdkit.boxes import LOG_SIZE_CLAMP, clip_to_image, decode
from ssdkit.reference.fpn_proposal import fpn_proposal as reference_proposal
from ssdkit.reference.rcnn_detection import rcnn_detection as reference

RCNN_STDS = (0.1, 0.1, 0.2, 0.2)


def make_inputs(rng, batch, rois_per_image, classes, height=480, width=640, padding=0.2, background_bias=2.0,
                delta_scale=1.0):
    """rois (B*R, 5) image-major with padding rows [b, 0, 0, 0, 0] at each image's end, softmax
    cls_prob (B*R, C+1), bbox_pred (B*R, 4*(C+1)), im_info (B, 3)."""
    valid = np.stack([rng.integers(height // 2, height + 1, batch), rng.integers(width // 2, width + 1, batch)], 1)
    im_info = np.concatenate([valid, np.ones((batch, 1))], axis=1).astype(np.float32)
    rois = np.zeros((batch, rois_per_image, 5), np.float32)
    for b in range(batch):
        real = rois_per_image - int(rng.binomial(rois_per_image, padding))
        x0 = rng.uniform(0, valid[b, 1] * 0.9, real)
        y0 = rng.uniform(0, valid[b, 0] * 0.9, real)
        w = rng.uniform(4, valid[b, 1] / 2, real)
        h = rng.uniform(4, valid[b, 0] / 2, real)
        rois[b, :real, 1:] = np.stack([x0, y0, np.minimum(x0 + w, valid[b, 1]), np.minimum(y0 + h, valid[b, 0])], 1)
        rois[b, :, 0] = b
    rois = rois.reshape(-1, 5)
    m = rois.shape[0]
    logits = rng.normal(size=(m, classes + 1))
    logits[:, 0] += background_bias
    prob = np.exp(logits)
    prob = (prob / prob.sum(axis=1, keepdims=True)).astype(np.float32)
    bbox = rng.normal(scale=delta_scale, size=(m, 4 * (classes + 1))).astype(np.float32)
    return rois, prob, bbox, im_info


def ours(rois, prob, bbox, im_info, **kwargs):
    return mx.nd.RCNNDetection(*(mx.nd.array(x) for x in (rois, prob, bbox, im_info)), **kwargs).asnumpy()


def assert_same_detections(got, expected, normalize=True, msg=""):
    """Same rows in the same order: class ids and scores exactly, boxes to 1e-5 relative (and an
    absolute 1e-6 normalised / 1e-4 px near 0, an ulp of exp on a box of ~1000 px)."""
    assert got.shape == expected.shape, msg
    np.testing.assert_array_equal(got[..., :2], expected[..., :2], err_msg=msg)
    np.testing.assert_allclose(got[..., 2:], expected[..., 2:], rtol=1e-5, atol=1e-6 if normalize else 1e-4,
                               err_msg=msg)


def random_kwargs(rng):
    kwargs = dict(score_threshold=float(rng.choice([0.0, 0.05, 0.05, 0.3])),
                  nms_threshold=float(rng.choice([0.3, 0.5, 0.7])),
                  max_detections=int(rng.choice([1, 10, 100, 300])),
                  normalize=bool(rng.integers(0, 2)))
    if rng.random() < 0.3:
        kwargs["stds"] = tuple(float(v) for v in rng.uniform(0.05, 0.5, 4))
    return kwargs


def test_matches_reference_on_random_cases(rng):
    for case in range(30):
        batch, classes = int(rng.integers(1, 5)), int(rng.choice([1, 3, 20, 80]))
        per_image = int(rng.integers(1, 500))
        inputs = make_inputs(rng, batch, per_image, classes, background_bias=float(rng.uniform(0, 4)),
                             delta_scale=float(rng.uniform(0.1, 2.0)))
        kwargs = random_kwargs(rng)
        msg = "case %d: B=%d R=%d C=%d %s" % (case, batch, per_image, classes, kwargs)
        got = ours(*inputs, **kwargs)
        assert got.shape == (batch, kwargs["max_detections"], 6)
        assert_same_detections(got, reference(*inputs, **kwargs), kwargs["normalize"], msg)


def test_equal_scores_rank_by_class_then_roi(rng):
    for case in range(5):
        rois, prob, bbox, im_info = make_inputs(rng, 2, 300, 6, background_bias=0.0)
        prob = np.round(prob * 8) / 8  # many ties
        kwargs = dict(score_threshold=0.0, max_detections=200)
        assert_same_detections(ours(rois, prob, bbox, im_info, **kwargs),
                               reference(rois, prob, bbox, im_info, **kwargs), msg=str(case))
    # direct check: three disjoint rois, one score: class 0 before class 1, lower rows first
    rois = np.array([[0, 0, 0, 10, 10], [0, 20, 0, 30, 10], [0, 40, 0, 50, 10]], np.float32)
    prob = np.full((3, 3), 0.5, np.float32)
    out = ours(rois, prob, np.zeros((3, 12), np.float32), np.array([[100, 100, 1]], np.float32),
               max_detections=6, normalize=False)
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(out[0, :, 2:], np.concatenate([rois[:, 1:], rois[:, 1:]]))


def test_rows_in_any_order_and_rows_of_other_images_are_ignored(rng):
    rois, prob, bbox, im_info = make_inputs(rng, 3, 200, 5, background_bias=0.5)
    kwargs = dict(max_detections=150)
    expected = ours(rois, prob, bbox, im_info, **kwargs)
    perm = rng.permutation(len(rois))  # scores are distinct: roi order cannot matter
    assert_same_detections(ours(rois[perm], prob[perm], bbox[perm], im_info, **kwargs), expected)
    # rows with a batch index that is no image (3, -1, 0.5, NaN) are ignored
    junk = rois[:4].copy()
    junk[:, 0] = [3, -1, 0.5, np.nan]
    stacked = [np.concatenate([a, a[:4]]) for a in (prob, bbox)]
    got = ours(np.concatenate([rois, junk]), stacked[0], stacked[1], im_info, **kwargs)
    assert_same_detections(got, expected)


def test_padding_rois_are_ignored(rng):
    rois, prob, bbox, im_info = make_inputs(rng, 2, 100, 4, padding=0.0)
    kwargs = dict(max_detections=50, normalize=False)
    expected = ours(rois, prob, bbox, im_info, **kwargs)
    pad = np.array([[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 30, 30, 30, 60], [0, 50, 50, 40, 80]], np.float32)
    sure = np.zeros((4, 5), np.float32)
    sure[:, 1:] = 0.999  # the highest scores of all, on zero-area and inverted rois
    got = ours(np.concatenate([pad, rois]), np.concatenate([sure, prob]),
               np.concatenate([np.zeros((4, 20), np.float32), bbox]), im_info, **kwargs)
    assert_same_detections(got, expected, normalize=False)
    assert np.count_nonzero(expected[..., 0] >= 0) > 20


def test_rois_with_non_finite_coordinates_are_ignored(rng):
    """common/two_stage.h RoiImage: a NaN/inf coordinate makes a row no roi (as in ProposalTarget)."""
    rois, prob, bbox, im_info = make_inputs(rng, 2, 100, 4, padding=0.0)
    kwargs = dict(max_detections=50, normalize=False)
    expected = ours(rois, prob, bbox, im_info, **kwargs)
    bad = np.array([[0, -np.inf, 10, 20, 30], [1, 10, 10, np.inf, 30], [0, 10, np.nan, 20, 30],
                    [1, 10, 10, 20, np.inf], [0, -np.inf, -np.inf, np.inf, np.inf]], np.float32)
    sure = np.zeros((5, 5), np.float32)
    sure[:, 1:] = 0.999
    deltas = rng.normal(0, 1, (5, 20)).astype(np.float32)
    args = (np.concatenate([bad, rois]), np.concatenate([sure, prob]), np.concatenate([deltas, bbox]), im_info)
    assert_same_detections(ours(*args, **kwargs), expected, normalize=False)
    assert_same_detections(reference(*args, **kwargs), expected, normalize=False)


def hand_fixture():
    """One image 100 high, 200 wide; two classes; zero regressions: boxes are the rois, clipped."""
    rois = np.array([[0, 0, 0, 50, 50],        # r0
                     [0, 0, 0, 50, 25],        # r1: IoU(r0, r1) = 0.5
                     [0, 100, 50, 250, 90],    # r2: clipped to [100, 50, 200, 90]
                     [0, 10, 10, 10, 40],      # r3: zero width, ignored
                     [1, 0, 0, 50, 50],        # r4: image 1 does not exist, ignored
                     [0, 0, 0, 50, 50]],       # r5: r0's box
                    np.float32)
    prob = np.array([[0.1, 0.8, 0.1],
                     [0.2, 0.7, 0.1],
                     [0.1, 0.3, 0.6],
                     [0.0, 0.0, 1.0],
                     [0.0, 1.0, 0.0],
                     [0.5, 0.04, 0.46]], np.float32)
    return rois, prob, np.zeros((6, 12), np.float32), np.array([[100, 200, 1]], np.float32)


@pytest.mark.parametrize("nms_threshold,expected", [
    # class 0: r0 .8, r1 .7 (suppressed by r0 at 0.5), r2 .3; r5 .04 is below the threshold
    # class 1: r2 .6, r5 .46, r0 .1 (r5's box: suppressed), r1 .1 (IoU .5 with r5: suppressed at 0.5)
    (0.5, [(0, 0.8, 0), (1, 0.6, 2), (1, 0.46, 5), (0, 0.3, 2)]),
    (0.7, [(0, 0.8, 0), (0, 0.7, 1), (1, 0.6, 2), (1, 0.46, 5), (0, 0.3, 2)]),
])
def test_hand_computed_fixture(nms_threshold, expected):
    rois, prob, bbox, im_info = hand_fixture()
    boxes = np.minimum(rois[:, 1:], [200, 100, 200, 100])
    want = np.full((5, 6), -1, np.float32)
    for row, (cls, score, roi) in enumerate(expected):
        want[row] = [cls, score, *boxes[roi]]
    out = ours(rois, prob, bbox, im_info, nms_threshold=nms_threshold, max_detections=5, normalize=False)
    np.testing.assert_array_equal(out[0], want)
    out = ours(rois, prob, bbox, im_info, nms_threshold=nms_threshold, max_detections=5)
    want[:len(expected), 2:] /= np.float32([200, 100, 200, 100])
    np.testing.assert_array_equal(out[0], want)
    assert_same_detections(out, reference(rois, prob, bbox, im_info, nms_threshold=nms_threshold,
                                          max_detections=5))


def test_class_specific_regression_is_used():
    # one roi; class 1's regression moves its box right by one roi width (t_x = 1 / std_x = 10)
    rois = np.array([[0, 10, 10, 30, 20]], np.float32)
    bbox = np.zeros((1, 12), np.float32)
    bbox[0, 8] = 10.0
    out = ours(rois, np.array([[0.1, 0.5, 0.4]], np.float32), bbox, np.array([[100, 100, 1]], np.float32),
               max_detections=2, normalize=False)
    np.testing.assert_allclose(out[0], [[0, 0.5, 10, 10, 30, 20], [1, 0.4, 30, 10, 50, 20]], rtol=1e-6)


def test_all_scores_below_threshold_give_only_padding(rng):
    rois, prob, bbox, im_info = make_inputs(rng, 2, 50, 3)
    prob[:, 1:] = 0.05  # not > 0.05
    np.testing.assert_array_equal(ours(rois, prob, bbox, im_info), -1)
    rois[:, 1:] = 0  # every roi padding
    prob[:, 1:] = 0.9
    np.testing.assert_array_equal(ours(rois, prob, bbox, im_info, max_detections=7), -1)


def test_normalize_divides_by_the_image_size(rng):
    rois, prob, bbox, im_info = make_inputs(rng, 3, 100, 5, background_bias=0.0)
    pixels = ours(rois, prob, bbox, im_info, normalize=False)
    unit = ours(rois, prob, bbox, im_info)
    np.testing.assert_array_equal(unit[..., :2], pixels[..., :2])
    scale = np.stack([im_info[:, 1], im_info[:, 0]] * 2, axis=1)[:, None, :]
    real = pixels[..., 0] >= 0
    np.testing.assert_array_equal(unit[..., 2:][real], (pixels[..., 2:] / scale)[real])
    assert np.all((unit[..., 2:][real] >= 0) & (unit[..., 2:][real] <= 1))
    assert np.count_nonzero(real) > 100


def test_clip_false_keeps_decoded_boxes_outside_the_image(rng):
    """``clip=False`` (GluonCV's convention) equals the reference without clipping; boxes leave the image."""
    rois, prob, bbox, im_info = make_inputs(rng, 2, 200, 5, background_bias=0.0, delta_scale=2.0)
    for normalize in (False, True):
        got = ours(rois, prob, bbox, im_info, clip=False, normalize=normalize)
        assert_same_detections(got, reference(rois, prob, bbox, im_info, clip=False, normalize=normalize), normalize)
    pixels = ours(rois, prob, bbox, im_info, clip=False, normalize=False)
    real = pixels[..., 0] >= 0
    outside = ((pixels[..., 2] < 0) | (pixels[..., 3] < 0) | (pixels[..., 4] > im_info[:, None, 1])
               | (pixels[..., 5] > im_info[:, None, 0]))
    assert outside[real].any()
    clipped = ours(rois, prob, bbox, im_info, normalize=False)
    assert not np.array_equal(clipped, pixels)


def test_matches_contrib_box_nms(rng):
    """A second implementation of the NMS and ranking: mx.nd.contrib.box_nms, per-class (id_index), on
    the candidates decoded by the reference; its first K valid rows are our rows."""
    for case in range(8):
        classes = int(rng.choice([2, 5, 20]))
        rois, prob, bbox, im_info = make_inputs(rng, 1, int(rng.integers(20, 400)), classes,
                                                background_bias=float(rng.uniform(0, 3)))
        thr, nms_thr, k = float(rng.choice([0.05, 0.2])), float(rng.choice([0.3, 0.5, 0.7])), int(rng.choice([5, 100]))
        real = (rois[:, 3] > rois[:, 1]) & (rois[:, 4] > rois[:, 2])
        r, p, d = rois[real], prob[real], bbox[real].reshape(-1, classes + 1, 4)
        table = []
        for c in range(classes):
            boxes = decode(r[:, 1:], d[:, c + 1], RCNN_STDS, max_log_size=LOG_SIZE_CLAMP)
            boxes = clip_to_image(boxes, im_info[0, 0], im_info[0, 1])
            table.append(np.concatenate([np.full((len(r), 1), c), p[:, c + 1:c + 2], boxes], axis=1))
        table = np.concatenate(table).astype(np.float32)
        theirs = mx.nd.contrib.box_nms(mx.nd.array(table[None]), overlap_thresh=nms_thr, valid_thresh=thr, topk=-1,
                                       coord_start=2, score_index=1, id_index=0, force_suppress=False,
                                       in_format="corner", out_format="corner").asnumpy()[0]
        theirs = theirs[theirs[:, 0] >= 0][:k]
        got = ours(rois, prob, bbox, im_info, score_threshold=thr, nms_threshold=nms_thr, max_detections=k,
                   normalize=False)[0]
        msg = "case %d thr=%s nms=%s k=%d" % (case, thr, nms_thr, k)
        assert len(theirs) > 0, msg
        np.testing.assert_array_equal(got[:len(theirs), :2], theirs[:, :2], err_msg=msg)
        np.testing.assert_allclose(got[:len(theirs), 2:], theirs[:, 2:], rtol=1e-5, atol=1e-4, err_msg=msg)
        np.testing.assert_array_equal(got[len(theirs):], -1, err_msg=msg)


def _corrupt(rng, rois, prob, bbox):
    rois, prob, bbox = rois.copy(), prob.copy(), bbox.copy()
    for array, values in ((prob, [np.nan, np.inf, -np.inf, 2.0, -3.0]),
                          (bbox, [np.nan, np.inf, -np.inf, 1e4, -1e4, 88.0, 1e30]),
                          (rois, [np.nan, np.inf, -np.inf, 0.0, 1e30, 2.5])):
        flat = array.reshape(-1)
        hits = rng.choice(flat.size, size=max(1, flat.size // 15), replace=False)
        flat[hits] = rng.choice(values, size=hits.size)
    some = rng.choice(len(rois), size=max(1, len(rois) // 10), replace=False)
    rois[some, 1:] = rois[some][:, [3, 4, 1, 2]]  # inverted
    return rois, prob, bbox


def test_fuzz_non_finite_and_degenerate_inputs(rng):
    for case in range(30):
        batch, classes = int(rng.integers(1, 4)), int(rng.choice([1, 3, 7]))
        rois, prob, bbox, im_info = make_inputs(rng, batch, int(rng.integers(1, 120)), classes,
                                                background_bias=float(rng.uniform(-1, 3)),
                                                delta_scale=float(rng.uniform(0.5, 5)))
        rois, prob, bbox = _corrupt(rng, rois, prob, bbox)
        kwargs = random_kwargs(rng)
        arrays = [mx.nd.array(x) for x in (rois, prob, bbox, im_info)]
        before = [a.asnumpy().copy() for a in arrays]
        got = mx.nd.RCNNDetection(*arrays, **kwargs).asnumpy()
        for a, b in zip(arrays, before):  # inputs are never written
            np.testing.assert_array_equal(a.asnumpy(), b)
        msg = "case %d %s" % (case, kwargs)
        with np.errstate(all="ignore"):
            assert_same_detections(got, reference(rois, prob, bbox, im_info, **kwargs), kwargs["normalize"], msg)
        assert np.all(np.isfinite(got)), msg
        real = got[..., 0] >= 0
        assert np.all(got[..., 1][real] > kwargs["score_threshold"]) and np.all(got[..., 1][real] <= 2), msg
        assert np.all(got[~real] == -1), msg
        if kwargs["normalize"]:
            assert np.all((got[..., 2:][real] >= 0) & (got[..., 2:][real] <= 1)), msg


def test_threads_do_not_change_the_result(rng):
    inputs = make_inputs(rng, 1, 1000, 20, background_bias=1.0)
    previous = ops.num_threads()
    try:
        ops.set_num_threads(1)
        one = ours(*inputs)
        ops.set_num_threads(2)
        two = ours(*inputs)
        assert ops.threads_used() == 2
    finally:
        ops.set_num_threads(previous)
    np.testing.assert_array_equal(one, two)


GOOD_SHAPES = ((8, 5), (8, 3), (8, 12), (2, 3))


@pytest.mark.parametrize("shapes,match", [
    (((8, 4), (8, 3), (8, 12), (2, 3)), "rois must be"),
    (((8, 5), (7, 3), (8, 12), (2, 3)), "cls_prob .* must be"),
    (((8, 5), (8, 1), (8, 4), (2, 3)), "cls_prob .* must be"),
    (((8, 5), (8, 3), (8, 8), (2, 3)), "bbox_pred .* must be"),
    (((8, 5), (8, 3), (8, 12), (2, 4)), "im_info .* must be"),
    (((8, 5, 1), (8, 3), (8, 12), (2, 3)), "rois must be"),
])
def test_bad_shapes_are_mxnet_errors(shapes, match):
    arrays = [mx.nd.ones(s) for s in shapes]
    with pytest.raises(mx.MXNetError, match=match):
        mx.nd.RCNNDetection(*arrays).wait_to_read()


@pytest.mark.parametrize("kwargs,match", [
    (dict(stds=(0.1, 0.1, 0.2)), "stds"),
    (dict(stds=(0.1, -0.1, 0.2, 0.2)), "stds"),
    (dict(max_detections=0), "max_detections"),
    (dict(nms_threshold=0.0), "nms_threshold"),
    (dict(nms_threshold=2.0), "nms_threshold"),
    (dict(score_threshold=float("nan")), "score_threshold"),
    (dict(normalize="maybe"), "normalize"),
    (dict(threshold=0.5), "unknown attribute 'threshold'"),
])
def test_bad_attributes_are_mxnet_errors(kwargs, match):
    arrays = [mx.nd.ones(s) for s in GOOD_SHAPES]
    with pytest.raises(mx.MXNetError, match=match):
        mx.nd.RCNNDetection(*arrays, **kwargs).wait_to_read()


@pytest.mark.parametrize("bad", [(np.nan, 10), (10, 0), (-5, 10), (10, -np.inf)])
def test_bad_im_info_values_are_mxnet_errors(bad):
    im_info = np.array([[10, 10, 1], [bad[0], bad[1], 1]], np.float32)
    arrays = [mx.nd.ones(s) for s in GOOD_SHAPES[:3]] + [mx.nd.array(im_info)]
    with pytest.raises(mx.MXNetError, match="im_info row 1 .* finite positive height and width"):
        mx.nd.RCNNDetection(*arrays).wait_to_read()
    with pytest.raises(ValueError, match="im_info row 1 .* finite positive height and width"):
        reference(*[np.ones(s, np.float32) for s in GOOD_SHAPES[:3]], im_info)


def test_float64_input_is_an_mxnet_error():
    arrays = [mx.nd.ones(s, dtype="float64") for s in GOOD_SHAPES]
    with pytest.raises(mx.MXNetError, match="float32"):
        mx.nd.RCNNDetection(*arrays).wait_to_read()


def test_proposal_then_detection_graph_and_zero_gradient(rng):
    """FPNProposal -> RCNNDetection in one symbol (the inference tail of the FPN graph)."""
    from ssdkit.anchors import rpn_anchors
    batch, post, classes = 2, 64, 4
    levels = [rpn_anchors(16 // s * 4, 24 // s * 4, s) for s in (4, 8)]
    anchor = np.concatenate(levels)[None].astype(np.float32)
    sizes = tuple(len(a) for a in levels)
    n = anchor.shape[1]
    rpn_cls = rng.uniform(size=(batch, n)).astype(np.float32)
    rpn_bbox = rng.normal(scale=0.2, size=(batch, n * 4)).astype(np.float32)
    im_info = np.array([[64, 96, 1], [50, 80, 1]], np.float32)
    logits = rng.normal(size=(batch * post, classes + 1))
    prob = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    deltas = rng.normal(scale=0.5, size=(batch * post, 4 * (classes + 1))).astype(np.float32)
    names = ("rpn_cls", "rpn_bbox", "anchor", "im_info", "prob", "deltas")
    v = {name: mx.sym.var(name) for name in names}
    rois, _ = mx.sym.FPNProposal(v["rpn_cls"], v["rpn_bbox"], v["anchor"], v["im_info"], level_sizes=sizes,
                                 post_nms_top_n=post, pre_nms_top_n=200)
    det = mx.sym.RCNNDetection(rois, v["prob"], v["deltas"], v["im_info"], max_detections=30)
    det = mx.sym.load_json(det.tojson())
    values = dict(zip(names, (rpn_cls, rpn_bbox, anchor, im_info, prob, deltas)))
    grads = {k: mx.nd.full(x.shape, 3.0) for k, x in values.items()}
    exe = det.bind(mx.cpu(), {k: mx.nd.array(x) for k, x in values.items()}, args_grad=grads)
    exe.forward(is_train=True)
    got = exe.outputs[0].asnumpy()
    ref_rois, _ = reference_proposal(rpn_cls, rpn_bbox, anchor, im_info, level_sizes=sizes, post_nms_top_n=post,
                                     pre_nms_top_n=200)
    assert_same_detections(got, reference(ref_rois, prob, deltas, im_info, max_detections=30))
    assert got.shape == (batch, 30, 6) and np.count_nonzero(got[..., 0] >= 0) > 20
    exe.backward([mx.nd.ones(got.shape)])
    for grad in grads.values():
        assert np.all(grad.asnumpy() == 0)


@pytest.mark.parametrize("case", op_cases.cases_for("RCNNDetection"), ids=lambda c: c.name)
def test_op_cases_match_reference(case):
    # the cases the GPU self-test and `pytest -m gpu` run (tests/op_cases.py) against the numpy reference
    kwargs = op_cases.case_kwargs(case)
    got = op_cases.run_case(case, mx.cpu())[0]
    assert (got[..., 0] >= 0).any()
    assert_same_detections(got, reference(*case.inputs, **kwargs), kwargs.get("normalize", True), case.name)
