"""MultiBoxPrior: our operator vs MXNet's contrib op, a hand-computed fixture, ssdkit.anchors, bad input."""
import mxnet as mx
import numpy as np
import pytest

import op_cases

import ssdkit.ops  # noqa: F401  (loads the operators)
from ssdkit.anchors import grid_anchors, rpn_anchors, ssd_anchors


def _ours_and_contrib(shape, **kwargs):
    x = mx.nd.zeros(shape)
    ours = mx.nd.MultiBoxPrior(x, **kwargs).asnumpy()
    theirs = mx.contrib.nd.MultiBoxPrior(x, **kwargs).asnumpy()
    return ours, theirs


def test_matches_contrib_on_random_configurations(rng):
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 40, size=2))
        sizes = tuple(float(s) for s in rng.uniform(0.05, 1.2, size=rng.integers(1, 4)))
        ratios = tuple(float(r) for r in rng.uniform(0.2, 4.0, size=rng.integers(1, 5)))
        kwargs = dict(sizes=sizes, ratios=ratios, clip=bool(rng.integers(0, 2)))
        if rng.random() < 0.5:
            kwargs["steps"] = tuple(float(s) for s in rng.uniform(0.01, 0.2, size=2))
        if rng.random() < 0.5:
            kwargs["offsets"] = tuple(float(o) for o in rng.uniform(0.0, 1.0, size=2))
        batch = int(rng.integers(1, 3))
        ours, theirs = _ours_and_contrib((batch, 3, h, w), **kwargs)
        assert ours.shape == theirs.shape == (1, h * w * (len(sizes) + len(ratios) - 1), 4)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5, err_msg=str(kwargs))


def test_first_ratio_not_one_and_list_syntax():
    ours, theirs = _ours_and_contrib((1, 8, 3, 5), sizes=[0.3, 0.6], ratios=[2.0, 0.5, 3.0])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_hand_computed_3x3_grid():
    # 3x3 map, one size 0.5, ratios (1, 4): steps 1/3, centres 1/6, 1/2, 5/6.
    # ratio 1: half side 0.25; ratio 4: half width 0.5 * 2 / 2 = 0.5, half height 0.5 / 2 / 2 = 0.125.
    out = mx.nd.MultiBoxPrior(mx.nd.zeros((1, 1, 3, 3)), sizes=(0.5,), ratios=(1, 4)).asnumpy()[0]
    centres = [1 / 6, 1 / 2, 5 / 6]
    expected = []
    for cy in centres:
        for cx in centres:
            expected.append([cx - 0.25, cy - 0.25, cx + 0.25, cy + 0.25])
            expected.append([cx - 0.5, cy - 0.125, cx + 0.5, cy + 0.125])
    np.testing.assert_allclose(out, np.array(expected, np.float32), rtol=0, atol=1e-6)
    clipped = mx.nd.MultiBoxPrior(mx.nd.zeros((1, 1, 3, 3)), sizes=(0.5,), ratios=(1, 4),
                                  clip=True).asnumpy()[0]
    np.testing.assert_allclose(clipped, np.clip(np.array(expected, np.float32), 0, 1), atol=1e-6)


def test_numpy_generator_agrees_with_operator(rng):
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(1, 25, size=2))
        sizes = tuple(float(s) for s in rng.uniform(0.1, 0.9, size=rng.integers(1, 3)))
        ratios = tuple(float(r) for r in rng.uniform(0.3, 3.0, size=rng.integers(1, 4)))
        steps = (float(rng.uniform(0.02, 0.2)), float(rng.uniform(0.02, 0.2))) if rng.random() < 0.5 \
            else (-1.0, -1.0)
        offsets = (float(rng.uniform(0, 1)), float(rng.uniform(0, 1)))
        clip = bool(rng.integers(0, 2))
        op = mx.nd.MultiBoxPrior(mx.nd.zeros((1, 2, h, w)), sizes=sizes, ratios=ratios, steps=steps,
                                 offsets=offsets, clip=clip).asnumpy()[0]
        ref = ssd_anchors(h, w, sizes, ratios, steps=steps, offsets=offsets, clip=clip)
        np.testing.assert_allclose(op, ref, rtol=1e-5, atol=1e-6)


def test_symbol_api_and_shape_inference():
    data = mx.sym.var("data")
    anchors = mx.sym.MultiBoxPrior(data, sizes=(0.2, 0.3), ratios=(1, 2, 0.5), name="anchors")
    _, out_shapes, _ = anchors.infer_shape(data=(4, 16, 10, 12))
    assert out_shapes == [(1, 10 * 12 * 4, 4)]
    exe = anchors.simple_bind(mx.cpu(), data=(4, 16, 10, 12))
    out = exe.forward(data=mx.nd.ones((4, 16, 10, 12)))[0].asnumpy()
    np.testing.assert_allclose(out[0], ssd_anchors(10, 12, (0.2, 0.3), (1, 2, 0.5)), atol=1e-6)


def test_backward_gives_zero_gradient():
    data = mx.sym.var("data")
    loss = mx.sym.MakeLoss(mx.sym.sum(mx.sym.MultiBoxPrior(data, sizes=(0.5,)) * 2.0))
    exe = loss.simple_bind(mx.cpu(), data=(1, 2, 3, 3))
    exe.arg_dict["data"][:] = 1.0
    exe.forward(is_train=True)
    exe.backward()
    np.testing.assert_array_equal(exe.grad_dict["data"].asnumpy(), 0.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(sizes=(-0.5,)), "positive"),
    (dict(sizes=(0.5, 0.0)), "positive"),
    (dict(sizes=()), "sizes' must not be empty"),
    (dict(ratios=[]), "ratios' must not be empty"),
    (dict(ratios=(1, -2)), "positive"),
    (dict(steps=(0.1,)), "steps"),
    (dict(offsets=(0.5, 0.5, 0.5)), "offsets"),
    (dict(clip="maybe"), "boolean"),
    (dict(sizes="big"), "not a number"),
    (dict(size=(0.5,)), "unknown attribute 'size'"),
])
def test_invalid_arguments_raise_mxnet_errors(kwargs, message):
    with pytest.raises(mx.base.MXNetError, match=message) as info:
        mx.nd.MultiBoxPrior(mx.nd.zeros((1, 1, 4, 4)), **kwargs).wait_to_read()
    # Each error carries only its own message (lib_api keeps old ones otherwise).
    assert str(info.value).count("MultiBoxPrior:") == 1


@pytest.mark.parametrize("shape", [(3, 4, 4), (1, 2, 3, 4, 5), (4,)])
def test_wrong_input_rank_is_an_error(shape):
    with pytest.raises(mx.base.MXNetError, match="4-d feature map"):
        mx.nd.MultiBoxPrior(mx.nd.zeros(shape), sizes=(0.5,)).wait_to_read()


def test_wrong_dtype_and_keyword_input_are_errors():
    with pytest.raises(mx.base.MXNetError, match="float32"):
        mx.nd.MultiBoxPrior(mx.nd.zeros((1, 1, 2, 2), dtype="float64"), sizes=(0.5,)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="positionally"):
        mx.nd.MultiBoxPrior(data=mx.nd.zeros((1, 1, 2, 2)), sizes=(0.5,)).wait_to_read()


def test_rpn_anchors_golden_3x3():
    # stride 16, scale 2, ratio 1 and 4 (height/width): side 32; ratio 4 -> w 16, h 64.
    anchors = rpn_anchors(3, 3, stride=16, scales=(2,), ratios=(1.0, 4.0))
    assert anchors.shape == (18, 4)
    cx, cy = 8.0 + 16.0, 8.0            # location (0, 1)
    np.testing.assert_allclose(anchors[2], [cx - 16, cy - 16, cx + 16, cy + 16])
    np.testing.assert_allclose(anchors[3], [cx - 8, cy - 32, cx + 8, cy + 32])
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    np.testing.assert_allclose(widths * heights, 32.0 * 32.0, rtol=1e-6)


def test_grid_anchors_is_the_shared_generator():
    half = np.array([[0.5, 1.0]], np.float32)
    boxes = grid_anchors(2, 3, half, steps=(10, 20), offsets=(0.0, 0.0))
    np.testing.assert_allclose(boxes[:3], [[-0.5, -1, 0.5, 1], [19.5, -1, 20.5, 1], [39.5, -1, 40.5, 1]])
    np.testing.assert_allclose(boxes[3], [-0.5, 9, 0.5, 11])


@pytest.mark.parametrize("op,kwargs", [
    ("MultiBoxPrior", dict(sizes=(0.1, 0.2), ratios=(1, 2, 0.5))),
    ("RPNAnchors", dict(stride=4)),
])
def test_anchor_count_that_overflows_32_bits_is_refused(op, kwargs):
    """A 40000 x 40000 map with 4 (or 3) anchors per cell: 6.4e9 anchors, more than a 32-bit shape holds.
    Before, MultiBoxPrior reported the wrapped count as its output shape."""
    sym = getattr(mx.sym, op)(mx.sym.var("data"), **kwargs)
    with pytest.raises(mx.MXNetError, match="too many anchors: [0-9]+ .* fewer than 2\\^31 values"):
        sym.infer_shape(data=(1, 1, 40000, 40000))


def test_largest_anchor_count_below_the_limit_is_accepted():
    sym = mx.sym.MultiBoxPrior(mx.sym.var("data"), sizes=(0.1,), ratios=(1,))
    _, out_shapes, _ = sym.infer_shape(data=(1, 1, 16384, 32767))     # 536,854,528 anchors x 4 < 2^31
    assert out_shapes == [(1, 16384 * 32767, 4)]


@pytest.mark.parametrize("case", op_cases.cases_for("MultiBoxPrior"), ids=lambda c: c.name)
def test_op_cases_match_contrib_and_numpy(case):
    # the cases the GPU self-test and `pytest -m gpu` run (tests/op_cases.py)
    kwargs = op_cases.case_kwargs(case)
    (got,) = op_cases.run_case(case, mx.cpu())
    _, theirs = _ours_and_contrib(case.inputs[0].shape, **kwargs)
    np.testing.assert_allclose(got, theirs, rtol=1e-5, atol=1e-5)
    height, width = case.inputs[0].shape[2:]
    np.testing.assert_allclose(got[0], ssd_anchors(height, width, **kwargs), rtol=1e-5, atol=1e-6)
