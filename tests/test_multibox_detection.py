"""MultiBoxDetection: our operator vs MXNet's contrib op and the numpy reference, fixtures, bad input."""
import mxnet as mx
import numpy as np
import pytest

import op_cases

from fuzz_inputs import degenerate_anchors, sprinkle

import ssdkit  # noqa: F401  (loads the operators)
from ssdkit import ops
from ssdkit.reference.multibox_detection import multibox_detection as reference
from ssdkit.reference.nms import nms as reference_nms


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


def make_inputs(rng, batch, classes, n, background_bias=2.0, loc_scale=0.5):
    """Softmax probabilities (B, C+1, N) leaning to channel 0, regressions (B, N*4), anchors (1, N, 4)."""
    logits = rng.normal(size=(batch, classes + 1, n)).astype(np.float32)
    logits[:, 0] += background_bias
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)
    centre = rng.uniform(0.05, 0.95, size=(n, 2))
    size = rng.uniform(0.02, 0.5, size=(n, 2))
    anchor = np.concatenate([centre - size / 2, centre + size / 2], axis=1)[None].astype(np.float32)
    loc = rng.normal(scale=loc_scale, size=(batch, n * 4)).astype(np.float32)
    return prob.astype(np.float32), loc, anchor


def ours(prob, loc, anchor, **kwargs):
    return mx.nd.MultiBoxDetection(mx.nd.array(prob), mx.nd.array(loc), mx.nd.array(anchor), **kwargs).asnumpy()


def contrib(prob, loc, anchor, **kwargs):
    return mx.contrib.nd.MultiBoxDetection(mx.nd.array(prob), mx.nd.array(loc), mx.nd.array(anchor),
                                           **kwargs).asnumpy()


def assert_same_detections(a, b, msg=""):
    """Same layout: identical class column, scores and boxes to 1e-5 (NaN equal to NaN)."""
    assert a.shape == b.shape, msg
    np.testing.assert_array_equal(a[..., 0], b[..., 0], err_msg=msg)
    np.testing.assert_allclose(a[..., 1:], b[..., 1:], rtol=1e-5, atol=1e-5, err_msg=msg)


def kept_rows(out):
    """Per image, the rows with cls_id >= 0 in output order."""
    return [img[img[:, 0] >= 0] for img in out]


def random_kwargs(rng):
    kwargs = dict(threshold=float(rng.choice([0.01, 0.05, 0.2, 0.5])),
                  nms_threshold=float(rng.choice([0.3, 0.5, 0.7])),
                  force_suppress=bool(rng.integers(0, 2)), clip=bool(rng.integers(0, 2)))
    if rng.random() < 0.5:
        kwargs["nms_topk"] = int(rng.integers(1, 400))
    if rng.random() < 0.3:
        kwargs["variances"] = tuple(float(v) for v in rng.uniform(0.05, 0.5, size=4))
    return kwargs


def test_matches_contrib_on_random_cases(rng):
    for case in range(60):
        batch, classes = int(rng.integers(1, 5)), int(rng.choice([1, 3, 20]))
        n = int(rng.integers(1, 1500))
        inputs = make_inputs(rng, batch, classes, n, background_bias=float(rng.uniform(0, 5)))
        kwargs = random_kwargs(rng)
        msg = "case %d: B=%d C=%d N=%d %s" % (case, batch, classes, n, kwargs)
        expected = contrib(*inputs, **kwargs)
        assert_same_detections(ours(*inputs, **kwargs), expected, msg)
        if case % 6 == 0:  # the numpy reference (slow Python NMS) on some of them
            assert_same_detections(reference(*inputs, **kwargs), expected, msg)


@pytest.mark.parametrize("n,batch,classes,kwargs", [
    (8732, 4, 20, dict()),
    (8732, 2, 80, dict(nms_topk=400, force_suppress=True)),
    (32756, 2, 20, dict(nms_topk=1000, nms_threshold=0.45, clip=False)),
    (32756, 1, 20, dict(threshold=0.2, nms_threshold=0.7)),
])
def test_matches_contrib_on_large_inputs(rng, n, batch, classes, kwargs):
    # background-heavy probabilities, as from a trained net: a few hundred candidates per image
    inputs = make_inputs(rng, batch, classes, n, background_bias=6.0)
    assert_same_detections(ours(*inputs, **kwargs), contrib(*inputs, **kwargs), str(kwargs))


def test_equal_scores_keep_anchor_order_like_contrib(rng):
    # quantised scores make many ties; both ops use a stable sort, so even the order is equal
    for _ in range(10):
        prob, loc, anchor = make_inputs(rng, 2, 4, 600, background_bias=1.0)
        prob = np.round(prob * 8) / 8
        kwargs = random_kwargs(rng)
        assert_same_detections(ours(prob, loc, anchor, **kwargs), contrib(prob, loc, anchor, **kwargs),
                               str(kwargs))


def test_nms_disabled_outside_unit_interval_like_contrib(rng):
    inputs = make_inputs(rng, 2, 3, 200)
    for nms_threshold in (0.0, -0.5, 1.5):
        for topk in (-1, 10):
            kwargs = dict(nms_threshold=nms_threshold, nms_topk=topk)
            out = ours(*inputs, **kwargs)
            assert_same_detections(out, contrib(*inputs, **kwargs), str(kwargs))
    assert np.count_nonzero(ours(*inputs, nms_threshold=0.0)[..., 0] >= 0) > 100


def test_background_id_is_honoured(rng):
    # ours with background channel k == contrib after moving channel k to the front
    prob, loc, anchor = make_inputs(rng, 3, 5, 700, background_bias=0.0)
    for k in (1, 3, 5):
        prob_k = prob.copy()
        prob_k[:, k] += 0.5  # make channel k the likely background
        prob_k /= prob_k.sum(axis=1, keepdims=True)
        moved = np.concatenate([prob_k[:, k:k + 1], np.delete(prob_k, k, axis=1)], axis=1)
        for kwargs in (dict(), dict(force_suppress=True, nms_topk=50)):
            got = ours(prob_k, loc, anchor, background_id=k, **kwargs)
            assert_same_detections(got, contrib(moved, loc, anchor, **kwargs), "k=%d %s" % (k, kwargs))
            assert_same_detections(reference(prob_k, loc, anchor, background_id=k, **kwargs), got)


def test_background_id_minus_one_means_every_channel_is_a_class(rng):
    prob, loc, anchor = make_inputs(rng, 2, 4, 300)
    padded = np.concatenate([np.zeros_like(prob[:, :1]), prob], axis=1)
    assert_same_detections(ours(prob, loc, anchor, background_id=-1), contrib(padded, loc, anchor))


def test_contrib_ignores_background_id_but_we_do_not(rng):
    # the documented difference: background_id=0 is contrib's behaviour, other values differ
    inputs = make_inputs(rng, 2, 4, 300, background_bias=0.0)
    assert_same_detections(contrib(*inputs, background_id=2), contrib(*inputs, background_id=0))
    assert_same_detections(ours(*inputs, background_id=0), contrib(*inputs, background_id=2))
    with_two = ours(*inputs, background_id=2)
    assert not np.array_equal(with_two, ours(*inputs, background_id=0))
    assert np.all(with_two[..., 0] <= 3)


def test_max_detections_keeps_best_kept_rows(rng):
    for case in range(12):
        batch, n = int(rng.integers(1, 4)), int(rng.integers(5, 800))
        inputs = make_inputs(rng, batch, 6, n, background_bias=float(rng.uniform(0, 4)))
        kwargs = random_kwargs(rng)
        if case % 4 == 0:
            kwargs["nms_threshold"] = 0.0  # no NMS: every candidate, ranked by score
        k = int(rng.integers(1, 300)) if case % 3 else n + 5  # also more rows than anchors
        got = ours(*inputs, max_detections=k, **kwargs)
        assert got.shape == (batch, k, 6)
        full = contrib(*inputs, **kwargs)
        for b, rows in enumerate(kept_rows(full)):
            if kwargs["nms_threshold"] == 0.0:
                rows = rows[np.argsort(-rows[:, 1], kind="stable")]
            rows = rows[:k]
            assert_same_detections(got[b, :len(rows)], rows, "case %d %s" % (case, kwargs))
            assert np.all(got[b, len(rows):] == -1)
        assert_same_detections(reference(*inputs, max_detections=k, **kwargs), got)


def test_hand_computed_fixture():
    # 3 anchors, 2 object classes, zero regressions: boxes are the anchors.
    anchor = np.array([[[0.0, 0.0, 0.5, 0.5],     # a0
                        [0.0, 0.0, 0.5, 0.25],    # a1: IoU(a0, a1) = 0.5
                        [0.5, 0.5, 1.0, 1.0]]],   # a2: disjoint
                      np.float32)
    # channels: background, class 0, class 1; columns are anchors
    prob = np.array([[[0.1, 0.3, 0.995],
                      [0.6, 0.7, 0.004],
                      [0.3, 0.0, 0.001]]], np.float32)
    loc = np.zeros((1, 12), np.float32)
    # a2's best object score 0.004 < threshold 0.01: not a candidate. a1 (0.7) ranks before a0 (0.6)
    # and suppresses it at nms_threshold 0.5 (IoU 0.5 >= 0.5), not at 0.7.
    out = ours(prob, loc, anchor, nms_threshold=0.5)
    expected = np.array([[0, 0.7, 0.0, 0.0, 0.5, 0.25],
                         [-1, 0.6, 0.0, 0.0, 0.5, 0.5],
                         [-1, -1, -1, -1, -1, -1]], np.float32)
    np.testing.assert_allclose(out[0], expected, atol=1e-7)
    out = ours(prob, loc, anchor, nms_threshold=0.7, max_detections=3)
    expected[1, 0] = 0
    np.testing.assert_allclose(out[0], expected, atol=1e-7)
    # class 1 as background: channel 1 is background, channel 2 becomes class 1; a0 scores
    # max(0.1, 0.3) = 0.3 for class 1, a1 0.3 for class 0, a2 0.995 for class 0; the tie
    # between a0 and a1 keeps anchor order.
    out = ours(prob, loc, anchor, background_id=1, nms_threshold=0.5)
    expected = np.array([[0, 0.995, 0.5, 0.5, 1.0, 1.0],
                         [1, 0.3, 0.0, 0.0, 0.5, 0.5],
                         [0, 0.3, 0.0, 0.0, 0.5, 0.25]], np.float32)
    np.testing.assert_allclose(out[0], expected, atol=1e-7)


def test_nms_against_reference_at_several_thresholds(rng):
    # A=[0,0,1,1]; IoU(A, B)=0.5, IoU(A, C)=1/3; scores A > B > C; boxes through the op with zero loc
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 0.5], [0.5, 0, 1.5, 1]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    expected = {0.3: [0], 0.5: [0, 2], 0.7: [0, 1, 2]}
    prob = np.stack([1 - scores, scores])[None]
    for thr, keep in expected.items():
        np.testing.assert_array_equal(reference_nms(boxes, scores, thr), keep)
        out = ours(prob, np.zeros((1, 12), np.float32), boxes[None], nms_threshold=thr, clip=False,
                   max_detections=3)
        np.testing.assert_allclose(out[0, :len(keep), 2:], boxes[keep], atol=0)
        assert np.all(out[0, len(keep):, 0] == -1)
    # random boxes: the op's kept set equals the numpy NMS on the op's own decoded boxes
    for thr in (0.3, 0.5, 0.7):
        for force in (True, False):
            prob, loc, anchor = make_inputs(rng, 1, 3, 400, background_bias=0.0)
            all_rows = ours(prob, loc, anchor, nms_threshold=0.0, max_detections=400)[0]
            rows = all_rows[all_rows[:, 0] >= 0]
            keep = reference_nms(rows[:, 2:], rows[:, 1], thr, classes=None if force else rows[:, 0])
            got = ours(prob, loc, anchor, nms_threshold=thr, force_suppress=force, max_detections=400)[0]
            got = got[got[:, 0] >= 0]
            np.testing.assert_array_equal(got, rows[keep])


def test_inputs_are_not_modified(rng):
    arrays = [mx.nd.array(x) for x in make_inputs(rng, 2, 3, 500)]
    before = [a.asnumpy().copy() for a in arrays]
    mx.nd.MultiBoxDetection(*arrays, nms_topk=20, max_detections=10).wait_to_read()
    mx.nd.MultiBoxDetection(*arrays).wait_to_read()
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a.asnumpy(), b)


@pytest.mark.parametrize("batch", [1, 5])  # 1 < threads: pass 1 split in anchor blocks; 5: per image
def test_threads_do_not_change_the_result(rng, batch):
    inputs = make_inputs(rng, batch, 8, 3000, background_bias=3.0)
    previous = ops.num_threads()
    try:
        ops.set_num_threads(1)
        one = ours(*inputs, nms_topk=300)
        ops.set_num_threads(2)
        two = ours(*inputs, nms_topk=300)
        assert ops.threads_used() == 2
    finally:
        ops.set_num_threads(previous)
    np.testing.assert_array_equal(one, two)


def _corrupt(rng, prob, loc, anchor):
    """Inject NaN/inf scores, NaN/inf/huge regressions, zero-area, inverted and NaN anchors."""
    prob, loc, anchor = prob.copy(), loc.copy(), anchor.copy()
    sprinkle(rng, ((prob, [np.nan, np.inf, -np.inf, 2.0, -3.0]),
                   (loc, [np.nan, np.inf, -np.inf, 1e4, -1e4, 88.0]),
                   (anchor, [np.nan, np.inf, 0.5])), every=20)
    degenerate_anchors(rng, anchor)
    return prob, loc, anchor


def test_fuzz_non_finite_and_degenerate_inputs_match_contrib(rng):
    for case in range(40):
        batch, n = int(rng.integers(1, 4)), int(rng.integers(1, 250))
        inputs = _corrupt(rng, *make_inputs(rng, batch, int(rng.integers(1, 5)), n,
                                            background_bias=float(rng.uniform(-1, 3))))
        kwargs = random_kwargs(rng)
        with np.errstate(all="ignore"):
            got = ours(*inputs, **kwargs)
        assert_same_detections(got, contrib(*inputs, **kwargs), "case %d %s" % (case, kwargs))
        if kwargs["clip"]:
            boxes = got[..., 2:][got[..., 0] >= 0]
            assert np.all((boxes >= 0) & (boxes <= 1))
        capped = ours(*inputs, max_detections=7, **kwargs)
        assert capped.shape == (batch, 7, 6)
        for b, rows in enumerate(kept_rows(got)):  # NMS is on here: kept rows are already ranked
            rows = rows[:7]
            assert_same_detections(capped[b, :len(rows)], rows, "case %d %s" % (case, kwargs))
            assert np.all(capped[b, len(rows):] == -1)


def test_all_nan_scores_give_no_detections(rng):
    prob, loc, anchor = make_inputs(rng, 2, 3, 50)
    prob[:] = np.nan
    out = ours(prob, loc, anchor)
    assert np.all(out == -1)


def test_huge_regressions_stay_in_the_unit_square_when_clipped(rng):
    prob, loc, anchor = make_inputs(rng, 1, 2, 64, background_bias=-3.0)
    loc[:] = 1e4  # exp overflows to inf: half sizes are inf, corners -inf / +inf, clipped to 0 / 1
    out = ours(prob, loc, anchor, nms_threshold=0.0)
    rows = out[0][out[0, :, 0] >= 0]
    assert len(rows) > 0
    np.testing.assert_array_equal(rows[:, 2:], np.tile(np.float32([0, 0, 1, 1]), (len(rows), 1)))


@pytest.mark.parametrize("shapes,match", [
    (((2, 4, 10), (2, 40), (1, 10, 4, 1)), "anchor must be"),
    (((2, 4, 10), (2, 40, 1), (1, 10, 4)), "loc_pred must be 2-d"),
    (((4, 10), (2, 40), (1, 10, 4)), "cls_prob must be 3-d"),
    (((2, 4, 10), (2, 40), (1, 11, 4)), "disagree on the number of anchors"),
    (((2, 4, 10), (2, 44), (1, 10, 4)), "loc_pred .* must be"),
    (((2, 4, 10), (3, 40), (1, 10, 4)), "loc_pred .* must be"),
    (((2, 4, 10), (2, 40), (2, 10, 4)), "anchor must be"),
    (((2, 4, 10), (2, 40), (1, 10, 3)), "anchor must be"),
])
def test_bad_shapes_are_mxnet_errors(shapes, match):
    arrays = [mx.nd.zeros(s) for s in shapes]
    with pytest.raises(mx.MXNetError, match=match):
        mx.nd.MultiBoxDetection(*arrays).wait_to_read()


@pytest.mark.parametrize("kwargs,match", [
    (dict(variances=(0.1, 0.1, 0.2)), "variances"),
    (dict(max_detections=0), "max_detections"),
    (dict(background_id=4), "background_id"),
    (dict(background_id=-2), "background_id"),
    (dict(nms_thresh=0.5), "unknown attribute 'nms_thresh'"),
    (dict(clip="maybe"), "clip"),
    (dict(threshold=float("nan")), "threshold"),
])
def test_bad_attributes_are_mxnet_errors(kwargs, match):
    arrays = [mx.nd.zeros(s) for s in ((2, 4, 10), (2, 40), (1, 10, 4))]
    with pytest.raises(mx.MXNetError, match=match):
        mx.nd.MultiBoxDetection(*arrays, **kwargs).wait_to_read()


def test_float64_input_is_an_mxnet_error():
    arrays = [mx.nd.zeros(s, dtype="float64") for s in ((1, 2, 3), (1, 12), (1, 3, 4))]
    with pytest.raises(mx.MXNetError, match="float32"):
        mx.nd.MultiBoxDetection(*arrays).wait_to_read()


def test_symbol_graph_module_forward_and_zero_gradient(rng):
    # an SSD-like head: softmax over raw class scores, anchors from our MultiBoxPrior (6x10 map, 2 per cell)
    _, loc, _ = make_inputs(rng, 2, 3, 120)
    cls_pred = rng.normal(size=(2, 4, 120)).astype(np.float32)
    feat = np.zeros((2, 1, 6, 10), np.float32)
    names = ("cls_pred", "loc_pred", "feat")
    cls_var, loc_var, feat_var = (mx.sym.var(v) for v in names)
    anchor_sym = mx.sym.MultiBoxPrior(feat_var, sizes=(0.3,), ratios=(1, 2))
    det = mx.sym.MultiBoxDetection(mx.sym.softmax(cls_var, axis=1), loc_var, anchor_sym, nms_topk=50,
                                   max_detections=20, name="det")
    det = mx.sym.load_json(det.tojson())
    _, out_shapes, _ = det.infer_shape(cls_pred=cls_pred.shape, loc_pred=loc.shape, feat=feat.shape)
    assert out_shapes == [(2, 20, 6)]
    mod = mx.mod.Module(det, data_names=names, label_names=None, context=mx.cpu())
    mod.bind(data_shapes=list(zip(names, (cls_pred.shape, loc.shape, feat.shape))), for_training=True,
             inputs_need_grad=True)
    mod.init_params()
    mod.forward(mx.io.DataBatch([mx.nd.array(x) for x in (cls_pred, loc, feat)]), is_train=True)
    out = mod.get_outputs()[0].asnumpy()
    prob = mx.nd.softmax(mx.nd.array(cls_pred), axis=1).asnumpy()
    anchor = mx.nd.MultiBoxPrior(mx.nd.array(feat), sizes=(0.3,), ratios=(1, 2)).asnumpy()
    np.testing.assert_allclose(out, ours(prob, loc, anchor, nms_topk=50, max_detections=20), atol=1e-6)
    assert np.count_nonzero(out[..., 0] >= 0) > 5
    mod.backward([mx.nd.ones(out.shape)])
    for grad in mod.get_input_grads()[:2]:
        assert np.all(grad.asnumpy() == 0)


def test_backward_writes_zeros(rng):
    arrays = [mx.nd.array(x) for x in make_inputs(rng, 1, 2, 30)]
    for a in arrays:
        a.attach_grad()
        a.grad[:] = 5.0
    with mx.autograd.record():
        out = mx.nd.MultiBoxDetection(*arrays)
    out.backward(mx.nd.ones_like(out))
    for a in arrays:
        assert np.all(a.grad.asnumpy() == 0)


@pytest.mark.parametrize("sigma", [0.5, 4.0])
def test_dense_scores_with_ties_match_contrib(rng, sigma):
    """Scores of an untrained model (softmax of N(0, sigma^2) logits: nearly every anchor is a candidate,
    which the CPU kernel handles per block with a second pass over the channels) next to a peaked half
    (a few candidates per block, found by a search per candidate); a tenth of the anchors have their
    best probability in two channels, where the first one is the class (as in contrib)."""
    batch, channels, n = 2, 6, 2048
    logits = rng.normal(scale=sigma, size=(batch, channels, n))
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    prob[:, :, n // 2:] = 0.001                                       # peaked half: background wins ...
    prob[:, 0, n // 2:] = 0.995
    few = n // 2 + rng.choice(n // 2, 40, replace=False)
    prob[:, 3, few] = 0.5                                             # ... except 40 anchors of class 2
    tied = rng.choice(n // 2, n // 20, replace=False)
    prob[:, 4, tied] = prob[:, 1:, tied].max(axis=1)                  # ties between channel 4 and an earlier one
    prob[:, 2, tied] = prob[:, 4, tied]
    prob = prob.astype(np.float32)
    loc = rng.normal(scale=0.5, size=(batch, 4 * n)).astype(np.float32)
    anchor = np.sort(rng.uniform(0, 1, (1, n, 2, 2)), axis=2).transpose(0, 1, 3, 2).reshape(1, n, 4)
    anchor = anchor.astype(np.float32)
    for kwargs in (dict(threshold=0.01, nms_topk=400), dict(threshold=0.01), dict(threshold=0.2, force_suppress=True)):
        got = ours(prob, loc, anchor, **kwargs)
        assert np.count_nonzero(got[..., 0] >= 0) > 0
        assert_same_detections(got, contrib(prob, loc, anchor, **kwargs), str(kwargs))


@pytest.mark.parametrize("case", op_cases.cases_for("MultiBoxDetection"), ids=lambda c: c.name)
def test_op_cases_match_reference_and_contrib(case):
    # the cases the GPU self-test and `pytest -m gpu` run (tests/op_cases.py): the CPU op equals the
    # numpy reference, and contrib wherever contrib has the setting (no max_detections; background 0)
    kwargs = op_cases.case_kwargs(case)
    got = op_cases.run_case(case, mx.cpu())[0]
    assert_same_detections(got, reference(*case.inputs, **kwargs), case.name)
    if "max_detections" not in kwargs:
        prob, loc, anchor = case.inputs
        if kwargs.pop("background_id", 0) == -1:
            prob = np.concatenate([np.zeros_like(prob[:, :1]), prob], axis=1)
        assert_same_detections(got, contrib(prob, loc, anchor, **kwargs), case.name)
