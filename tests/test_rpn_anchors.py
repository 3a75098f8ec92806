"""RPNAnchors: a hand-written golden grid, equality with ssdkit.anchors.rpn_anchors, graph use, bad input."""
import math

import mxnet as mx
import numpy as np
import pytest

import op_cases

import ssdkit.ops  # noqa: F401  (loads the operators)
from ssdkit.anchors import rpn_anchors
from ssdkit.reference.rpn_anchors import rpn_anchors_op


def run_op(shape, **kwargs):
    return mx.nd.RPNAnchors(mx.nd.zeros(shape), **kwargs).asnumpy()


def test_golden_3x3_stride16_scale8():
    # side 16 * 8 = 128; ratio = height / width keeps the area 128^2:
    #   0.5 -> w 128 * sqrt(2) = 181.02, h 90.51;  1 -> 128 x 128;  2 -> w 90.51, h 181.02.
    # Cell centres at 8, 24, 40 (offset 0.5 * stride).
    big, small = 64 * math.sqrt(2), 32 * math.sqrt(2)      # half of 181.02 and of 90.51
    halves = [(big, small), (64, 64), (small, big)]
    expected = []
    for cy in (8, 24, 40):
        for cx in (8, 24, 40):
            for hw, hh in halves:
                expected.append([cx - hw, cy - hh, cx + hw, cy + hh])
    out = run_op((1, 256, 3, 3), stride=16, scales=(8,), ratios=(0.5, 1, 2))
    assert out.shape == (1, 27, 4)
    np.testing.assert_allclose(out[0], np.array(expected), rtol=0, atol=2e-5)
    # spot checks written out by hand: location (1, 2), ratio 1, and location (0, 0), ratio 0.5
    np.testing.assert_allclose(out[0, (1 * 3 + 2) * 3 + 1], [40 - 64, 24 - 64, 40 + 64, 24 + 64], atol=1e-5)
    np.testing.assert_allclose(out[0, 0], [8 - 90.50967, 8 - 45.254834, 8 + 90.50967, 8 + 45.254834],
                               atol=1e-4)
    # defaults are scales (8,), ratios (0.5, 1, 2)
    np.testing.assert_array_equal(run_op((1, 1, 3, 3), stride=16), out)


@pytest.mark.parametrize("height, width, stride, scales, ratios, offset", [
    (1, 1, 4, (8,), (0.5, 1, 2), 0.5),
    (7, 5, 8, (8,), (0.5, 1, 2), 0.5),
    (13, 21, 16, (4, 8, 16), (0.5, 1, 2), 0.5),
    (4, 9, 32, (2.5,), (1 / 3, 0.7, 3.0), 0.0),
    (25, 17, 64, (8, 11.3), (1.0,), 0.25),
    (50, 38, 4, (8,), (0.5, 1, 2), 0.5),
])
def test_equals_numpy_rpn_anchors(height, width, stride, scales, ratios, offset):
    out = run_op((2, 3, height, width), stride=stride, scales=scales, ratios=ratios, offset=offset)
    ref = rpn_anchors(height, width, stride, scales, ratios, offset)
    assert out.shape == (1, height * width * len(scales) * len(ratios), 4)
    # Same float32 operations in the same order: bit-identical.
    np.testing.assert_array_equal(out[0], ref)
    np.testing.assert_array_equal(out, rpn_anchors_op((2, 3, height, width), stride, scales, ratios, offset))


def test_order_is_location_then_ratio_then_scale():
    out = run_op((1, 1, 2, 3), stride=10, scales=(1, 2), ratios=(1, 4))[0].reshape(2, 3, 2, 2, 4)
    widths = out[..., 2] - out[..., 0]
    heights = out[..., 3] - out[..., 1]
    np.testing.assert_allclose(widths[0, 0], [[10, 20], [5, 10]], rtol=1e-6)   # ratio 1, then 4
    np.testing.assert_allclose(heights[0, 0], [[10, 20], [20, 40]], rtol=1e-6)
    centre_x = (out[..., 0] + out[..., 2]) / 2
    np.testing.assert_allclose(centre_x[1, :, 0, 0], [5, 15, 25], rtol=1e-6)   # columns of row 1


def test_fpn_levels_concatenated_in_symbol_graph():
    data = mx.sym.var("data")
    levels, strides, ref = [], (4, 8, 16, 32, 64), []
    for i, stride in enumerate(strides):
        feat = mx.sym.Pooling(data, kernel=(stride, stride), stride=(stride, stride), pool_type="max")
        levels.append(mx.sym.RPNAnchors(feat, stride=stride, name="anchors_p%d" % (i + 2)))
        ref.append(rpn_anchors(128 // stride, 96 // stride, stride))
    anchors = mx.sym.concat(*levels, dim=1)
    _, out_shapes, _ = anchors.infer_shape(data=(2, 3, 128, 96))
    expected = np.concatenate(ref)
    assert out_shapes == [(1, expected.shape[0], 4)]
    exe = anchors.simple_bind(mx.cpu(), data=(2, 3, 128, 96))
    out = exe.forward(data=mx.nd.ones((2, 3, 128, 96)))[0].asnumpy()
    np.testing.assert_array_equal(out[0], expected)


def test_backward_gives_zero_gradient():
    data = mx.sym.var("data")
    loss = mx.sym.MakeLoss(mx.sym.sum(mx.sym.RPNAnchors(data, stride=8) * 3.0))
    exe = loss.simple_bind(mx.cpu(), data=(1, 2, 3, 3))
    exe.arg_dict["data"][:] = 1.0
    exe.forward(is_train=True)
    exe.backward()
    np.testing.assert_array_equal(exe.grad_dict["data"].asnumpy(), 0.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "'stride' is required"),
    (dict(stride=0), "positive integer"),
    (dict(stride=-8), "positive integer"),
    (dict(stride=2.5), "not an integer"),
    (dict(stride=8, scales=()), "scales' must not be empty"),
    (dict(stride=8, scales=(8, -1)), "positive"),
    (dict(stride=8, ratios=[]), "ratios' must not be empty"),
    (dict(stride=8, ratios=(1, float("nan"))), "positive"),
    (dict(stride=8, offset=float("inf")), "offset"),
    (dict(stride=8, scale=(8,)), "unknown attribute 'scale'"),
])
def test_invalid_arguments_raise_mxnet_errors(kwargs, message):
    with pytest.raises(mx.base.MXNetError, match=message) as info:
        mx.nd.RPNAnchors(mx.nd.zeros((1, 1, 4, 4)), **kwargs).wait_to_read()
    assert str(info.value).count("RPNAnchors:") == 1


@pytest.mark.parametrize("shape", [(3, 4, 4), (1, 2, 3, 4, 5), (4,)])
def test_wrong_input_shape_is_an_error(shape):
    with pytest.raises(mx.base.MXNetError, match="feature map"):
        mx.nd.RPNAnchors(mx.nd.zeros(shape), stride=4).wait_to_read()


def test_wrong_dtype_is_an_error():
    with pytest.raises(mx.base.MXNetError, match="float32"):
        mx.nd.RPNAnchors(mx.nd.zeros((1, 1, 2, 2), dtype="float64"), stride=4).wait_to_read()


@pytest.mark.parametrize("case", op_cases.cases_for("RPNAnchors"), ids=lambda c: c.name)
def test_op_cases_equal_numpy_rpn_anchors(case):
    # the cases the GPU self-test and `pytest -m gpu` run (tests/op_cases.py): bit-identical
    (got,) = op_cases.run_case(case, mx.cpu())
    np.testing.assert_array_equal(got, rpn_anchors_op(case.inputs[0].shape, **op_cases.case_kwargs(case)))
