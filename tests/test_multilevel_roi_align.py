"""MultiLevelROIAlign: contrib ROIAlign on each RoI's own level, its numpy reference, gradients, bad input."""
import mxnet as mx
import numpy as np
import pytest

import op_cases

import ssdkit.ops  # noqa: F401  (loads the operators)
from ssdkit import ops
from ssdkit.reference.roi_align import fpn_level_index, multilevel_roi_align, multilevel_roi_align_backward

STRIDES = (4, 8, 16, 32)
SCALES = tuple(1.0 / s for s in STRIDES)


def make_features(rng, batch=2, channels=3, size=128):
    """One (B, C, size / stride, size / stride) float32 map per level P2-P5."""
    return [rng.standard_normal((batch, channels, size // s, size // s)).astype(np.float32) for s in STRIDES]


def make_rois(rng, count, batch=2, size=128, padding=0):
    """(count, 5) RoIs of all sizes (so every level gets some), some partly outside the image, then
    ``padding`` rows ``[-1, 0, 0, 0, 0]``."""
    side = np.exp(rng.uniform(np.log(2.0), np.log(4.0 * size), count))
    aspect = np.exp(rng.uniform(-1.0, 1.0, count))
    w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
    x0 = rng.uniform(-0.2 * size, size, count)
    y0 = rng.uniform(-0.2 * size, size, count)
    rois = np.stack([rng.integers(0, batch, count), x0, y0, x0 + w, y0 + h], 1)
    pad = np.tile([[-1.0, 0, 0, 0, 0]], (padding, 1))
    return np.concatenate([rois, pad]).astype(np.float32)


def ours(features, rois, levels=None, **kwargs):
    inputs = [mx.nd.array(f) for f in features] + [mx.nd.array(rois)]
    if levels is not None:
        inputs.append(mx.nd.array(levels))
        kwargs["level_input"] = True
    return mx.nd.MultiLevelROIAlign(*inputs, spatial_scales=SCALES, **kwargs).asnumpy()


def ours_backward(features, rois, grad_out, **kwargs):
    feats = [mx.nd.array(f) for f in features]
    for f in feats:
        f.attach_grad()
    with mx.autograd.record():
        out = mx.nd.MultiLevelROIAlign(*feats, mx.nd.array(rois), spatial_scales=SCALES, **kwargs)
    out.backward(mx.nd.array(grad_out))
    return [f.grad.asnumpy() for f in feats]


def contrib_on_own_level(features, rois, *, pooled_size, sample_ratio, aligned, grad_out=None):
    """contrib ROIAlign of each RoI alone on the level the FPN rule gives it: outputs and, with
    ``grad_out``, the summed feature gradients (rows with a negative batch index are skipped)."""
    levels = fpn_level_index(rois, len(features))
    out = np.zeros((len(rois), features[0].shape[1], pooled_size, pooled_size), np.float32)
    grads = [np.zeros_like(f) for f in features]
    for r, roi in enumerate(rois):
        if roi[0] < 0:
            continue
        k = levels[r]
        x = mx.nd.array(features[k])
        x.attach_grad()
        with mx.autograd.record():
            y = mx.nd.contrib.ROIAlign(x, mx.nd.array(roi[None]), pooled_size=(pooled_size, pooled_size),
                                       spatial_scale=SCALES[k], sample_ratio=sample_ratio, aligned=aligned)
        out[r] = y.asnumpy()[0]
        if grad_out is not None:
            y.backward(mx.nd.array(grad_out[r:r + 1]))
            grads[k] += x.grad.asnumpy()
    return out, grads


def nondegenerate(rois):
    """Rows contrib's aligned mode accepts: at least a pixel wide and high (it aborts on zero size)."""
    keep = (rois[:, 3] - rois[:, 1] >= 1) & (rois[:, 4] - rois[:, 2] >= 1)
    return rois[keep]


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sample_ratio", [-1, 0, 1, 2, 3])
def test_forward_equals_contrib_on_each_rois_own_level(rng, aligned, sample_ratio):
    features = make_features(rng)
    rois = nondegenerate(make_rois(rng, 40))
    assert len(set(fpn_level_index(rois, 4))) == 4          # every level is exercised
    expected, _ = contrib_on_own_level(features, rois, pooled_size=7, sample_ratio=sample_ratio, aligned=aligned)
    got = ours(features, rois, pooled_size=7, sample_ratio=sample_ratio, aligned=aligned)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sample_ratio", [-1, 2])
def test_backward_equals_contrib_backward_on_the_same_rows(rng, aligned, sample_ratio):
    features = make_features(rng)
    rois = nondegenerate(make_rois(rng, 30, padding=3))
    grad_out = rng.standard_normal((len(rois), 3, 5, 5)).astype(np.float32)
    _, expected = contrib_on_own_level(features, rois, pooled_size=5, sample_ratio=sample_ratio, aligned=aligned,
                                       grad_out=grad_out)
    got = ours_backward(features, rois, grad_out, pooled_size=5, sample_ratio=sample_ratio, aligned=aligned)
    assert sum(np.count_nonzero(g) for g in got) > 0
    for level, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-4, err_msg="level %d" % level)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sample_ratio", [-1, 2])
def test_forward_and_backward_equal_the_numpy_reference(rng, aligned, sample_ratio):
    features = make_features(rng, channels=2, size=64)
    rois = make_rois(rng, 16, size=64, padding=2)
    rois[3, 3:5] = rois[3, 1:3]                 # zero size
    rois[4, 1:5] = rois[4, [3, 4, 1, 2]]        # inverted corners
    kwargs = dict(spatial_scales=SCALES, pooled_size=(3, 4), sample_ratio=sample_ratio, aligned=aligned)
    np.testing.assert_allclose(ours(features, rois, pooled_size=(3, 4), sample_ratio=sample_ratio, aligned=aligned),
                               multilevel_roi_align(features, rois, **kwargs), rtol=0, atol=1e-5)
    grad_out = rng.standard_normal((len(rois), 2, 3, 4)).astype(np.float32)
    got = ours_backward(features, rois, grad_out, pooled_size=(3, 4), sample_ratio=sample_ratio, aligned=aligned)
    for g, e in zip(got, multilevel_roi_align_backward(features, rois, grad_out, **kwargs)):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)


def test_backward_matches_finite_differences(rng):
    """d sum(w * out) / d feature by central differences in float64 arithmetic of the float32 op."""
    features = make_features(rng, batch=1, channels=1, size=32)
    rois = np.array([[0, 2.5, 3.0, 20.0, 17.5], [0, 1.0, 1.0, 30.0, 31.0], [0, 5.0, 9.0, 7.5, 11.0]], np.float32)
    weights = rng.standard_normal((3, 1, 2, 2)).astype(np.float32)
    kwargs = dict(pooled_size=2, sample_ratio=2, aligned=True)
    analytic = ours_backward(features, rois, weights, **kwargs)
    eps = 1e-2
    checked = 0
    for level, fmap in enumerate(features):
        for index in zip(*np.nonzero(analytic[level])):
            plus = [f.copy() for f in features]
            minus = [f.copy() for f in features]
            plus[level][index] += eps
            minus[level][index] -= eps
            numeric = (np.sum(weights * ours(plus, rois, **kwargs), dtype=np.float64)
                       - np.sum(weights * ours(minus, rois, **kwargs), dtype=np.float64)) / (2 * eps)
            assert abs(numeric - analytic[level][index]) < 2e-3, (level, index)
            checked += 1
    assert checked >= 12


def test_hand_computed_one_bin_average():
    """A 4x4 ramp, one 2x2-cell RoI pooled to one bin with 2x2 samples (not aligned): the mean of the
    bilinear values at (0.5, 0.5), (0.5, 1.5), (1.5, 0.5), (1.5, 1.5) of f(y, x) = 10 y + x:
    10 * mean(y) + mean(x) = 10 * 1 + 1 = 11 (bilinear is exact on a linear function)."""
    ramp = (10 * np.arange(4)[:, None] + np.arange(4)[None, :]).astype(np.float32)[None, None]
    features = [ramp] + [np.zeros((1, 1, 2, 2), np.float32)] * 3
    rois = np.array([[0, 0, 0, 8, 8]], np.float32)      # stride 4: cells [0, 2] x [0, 2]; level 2 (small)
    out = ours(features, rois, pooled_size=1, sample_ratio=2)
    assert out.shape == (1, 1, 1, 1)
    assert out[0, 0, 0, 0] == pytest.approx(11.0, abs=1e-5)


def test_each_roi_is_pooled_only_on_its_level():
    """Level l's map holds the constant l: every RoI's output is the number of the level it belongs to."""
    features = [np.full((1, 2, 1024 // s, 1024 // s), level, np.float32) for level, s in zip(range(2, 6), STRIDES)]
    rois = np.array([[0, 0, 0, 16, 16], [0, 0, 0, 112, 112], [0, 10, 10, 234, 234], [0, 0, 0, 448, 448],
                     [0, 0, 0, 1000, 1000]], np.float32)
    out = ours(features, rois, pooled_size=2, sample_ratio=2)
    np.testing.assert_array_equal(out[:, 0, 0, 0], [2, 3, 4, 5, 5])


def test_level_rule_equals_roi_levels_of_the_graph(rng):
    from ssdkit.symbol.fpn_head import roi_levels
    rois = make_rois(rng, 500, size=512)
    rois[:8, 3:5] = rois[:8, 1:3] + np.array([[224, 224], [112, 112], [448, 448], [56, 56], [0, 0], [1, 0],
                                              [223.99, 224], [896, 896]], np.float32)
    graph = roi_levels(mx.sym.var("rois")).eval(rois=mx.nd.array(rois))[0].asnumpy()
    np.testing.assert_array_equal(fpn_level_index(rois, 4) + 2, graph.astype(np.int64))
    # Level l's map holds the constant l; tiny spatial scales keep every sample on the maps.
    features = [mx.nd.full((1, 1, 4, 4), level) for level in range(2, 6)]
    rois[:, 0] = 0
    out = mx.nd.MultiLevelROIAlign(*features, mx.nd.array(rois), spatial_scales=(1e-4,) * 4, pooled_size=1,
                                   sample_ratio=1).asnumpy()
    np.testing.assert_array_equal(np.rint(out[:, 0, 0, 0]), graph)      # bilinear weights sum to 1 +- 1 ulp


def test_explicit_level_input_overrides_the_rule_and_out_of_range_levels_give_zeros(rng):
    features = make_features(rng)
    rois = nondegenerate(make_rois(rng, 12))
    levels = np.array([2, 3, 4, 5, 5, 4, 3, 2, 1, 6, np.nan, 3.7], np.float32)[:len(rois)]
    got = ours(features, rois, levels, pooled_size=3, sample_ratio=2)
    expected = multilevel_roi_align(features, rois, spatial_scales=SCALES, pooled_size=3, sample_ratio=2,
                                    levels=levels)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    for r, level in enumerate(levels):
        if not (2 <= level < 6):
            assert not got[r].any(), r
        else:
            alone = mx.nd.contrib.ROIAlign(mx.nd.array(features[int(level) - 2]), mx.nd.array(rois[r:r + 1]),
                                           pooled_size=(3, 3), spatial_scale=SCALES[int(level) - 2],
                                           sample_ratio=2).asnumpy()[0]
            np.testing.assert_allclose(got[r], alone, rtol=0, atol=1e-5)


def test_padding_and_non_finite_rows_give_zeros_and_no_gradient(rng):
    features = make_features(rng)
    rois = make_rois(rng, 6, padding=3)
    rois[1, 2] = np.nan
    rois[2, 3] = np.inf
    rois[7, 1:] = [0, 0, 50, 50]                 # a padding row with real-looking coordinates
    out = ours(features, rois, pooled_size=4, sample_ratio=2)
    for r in (1, 2, 6, 7, 8):
        assert not out[r].any(), r
    grad_out = np.zeros((len(rois), 3, 4, 4), np.float32)
    grad_out[[1, 2, 6, 7, 8]] = 1.0
    assert not any(g.any() for g in ours_backward(features, rois, grad_out, pooled_size=4, sample_ratio=2))


@pytest.mark.parametrize("aligned", [False, True])
def test_zero_size_and_out_of_image_rois_are_defined(rng, aligned):
    features = make_features(rng)
    rois = np.array([[0, 40, 40, 40, 40], [1, 40, 40, 40, 60], [0, 500, 500, 600, 600], [1, -300, -300, -200, -200],
                     [0, 120, 120, 140, 140]], np.float32)
    for sample_ratio in (-1, 2):
        out = ours(features, rois, pooled_size=3, sample_ratio=sample_ratio, aligned=aligned)
        assert np.isfinite(out).all()
        expected = multilevel_roi_align(features, rois, spatial_scales=SCALES, pooled_size=3,
                                        sample_ratio=sample_ratio, aligned=aligned)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
        assert not out[2].any() and not out[3].any()             # far outside the map: zeros
    # Adaptive sampling of an aligned zero-area RoI has no samples: zeros.
    if aligned:
        assert not ours(features, rois[:1], pooled_size=3, sample_ratio=-1, aligned=True).any()


def test_threads_do_not_change_the_result(rng):
    features = make_features(rng, batch=2, channels=16, size=128)
    rois = make_rois(rng, 300, padding=10)
    grad_out = rng.standard_normal((len(rois), 16, 7, 7)).astype(np.float32)
    previous = ops.num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            ops.set_num_threads(threads)
            out = ours(features, rois, pooled_size=7, sample_ratio=2, aligned=True)
            grads = ours_backward(features, rois, grad_out, pooled_size=7, sample_ratio=2, aligned=True)
            assert ops.threads_used() == threads
            results.append((out, grads))
    finally:
        ops.set_num_threads(previous)
    for out, grads in results[1:]:
        np.testing.assert_array_equal(out, results[0][0])
        for g, g0 in zip(grads, results[0][1]):
            np.testing.assert_array_equal(g, g0)


def test_many_rois_span_several_chunks(rng):
    """More samples than one chunk of the CPU kernel holds (2^19 bilinear taps): 300 RoIs of 255 pixels
    forced onto P2 (64 cells wide: 10 x 10 adaptive samples per bin, 4,900 per RoI, 1.47 M in all);
    outputs and gradients still equal contrib's on P2."""
    features = make_features(rng, batch=2, channels=2, size=256)
    rois = np.tile(np.array([[0, 0, 0, 255, 255], [1, 3, 5, 250, 252]], np.float32), (150, 1))
    assert len(rois) * 49 * 100 > 2 * 2 ** 19      # at least three chunks
    grad_out = rng.standard_normal((len(rois), 2, 7, 7)).astype(np.float32)
    feats = [mx.nd.array(f) for f in features]
    for f in feats:
        f.attach_grad()
    x = mx.nd.array(features[0])
    x.attach_grad()
    with mx.autograd.record():
        got = mx.nd.MultiLevelROIAlign(*feats, mx.nd.array(rois), mx.nd.full((len(rois),), 2), spatial_scales=SCALES,
                                       pooled_size=7, sample_ratio=0, level_input=True)
        expected = mx.nd.contrib.ROIAlign(x, mx.nd.array(rois), pooled_size=(7, 7), spatial_scale=SCALES[0],
                                          sample_ratio=0)
    got.backward(mx.nd.array(grad_out))
    expected.backward(mx.nd.array(grad_out))
    np.testing.assert_allclose(got.asnumpy(), expected.asnumpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(feats[0].grad.asnumpy(), x.grad.asnumpy(), rtol=1e-5, atol=1e-4)
    assert not any(f.grad.asnumpy().any() for f in feats[1:])


def test_fuzz_random_rois_never_crash_and_match_the_reference(rng):
    features = make_features(rng, batch=2, channels=2, size=64)
    for _ in range(5):
        rois = make_rois(rng, 20, size=64, padding=2)
        bad = rng.choice(len(rois), 6, replace=False)
        rois[bad[:2], rng.integers(1, 5, 2)] = np.array([np.nan, -np.inf], np.float32)
        rois[bad[2:4], 1:5] = rng.uniform(-1e6, 1e6, (2, 4))
        rois[bad[4:], 3:5] = rois[bad[4:], 1:3]
        # A fixed sample ratio: adaptive sampling of a 10^6-pixel RoI takes ~10^7 samples per bin (as in
        # contrib), too slow for the numpy reference; the adaptive mode is covered above.
        out = ours(features, rois, pooled_size=2, sample_ratio=2, aligned=True)
        assert np.isfinite(out).all()
        expected = multilevel_roi_align(features, rois, spatial_scales=SCALES, pooled_size=2, sample_ratio=2,
                                        aligned=True)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)


def test_symbol_graph_binds_and_gives_gradients_to_every_level(rng):
    feats = [mx.sym.var("p%d" % level) for level in range(2, 6)]
    pooled = mx.sym.MultiLevelROIAlign(*feats, mx.sym.var("rois"), spatial_scales=SCALES, pooled_size=2,
                                       sample_ratio=2)
    features = make_features(rng, batch=1, channels=2, size=512)
    rois = np.array([[0, 0, 0, 20, 20], [0, 0, 0, 150, 150], [0, 0, 0, 300, 300], [0, 0, 0, 500, 500]], np.float32)
    np.testing.assert_array_equal(fpn_level_index(rois, 4), [0, 1, 2, 3])     # one RoI per level
    shapes = {"p%d" % (k + 2): f.shape for k, f in enumerate(features)}
    _, out_shapes, _ = pooled.infer_shape(rois=rois.shape, **shapes)
    assert out_shapes == [(4, 2, 2, 2)]
    args = {"p%d" % (k + 2): mx.nd.array(f) for k, f in enumerate(features)}
    args["rois"] = mx.nd.array(rois)
    grads = {name: mx.nd.zeros(a.shape) for name, a in args.items()}
    exe = pooled.bind(mx.cpu(), args=args, args_grad=grads)
    exe.forward(is_train=True)
    exe.backward(mx.nd.ones((4, 2, 2, 2)))
    for level in range(2, 6):
        assert grads["p%d" % level].asnumpy().sum() == pytest.approx(2 * 2 * 2, rel=1e-5)   # bilinear weights sum to 1
    assert not grads["rois"].asnumpy().any()


@pytest.mark.parametrize("shapes,match", [
    (((2, 3, 8, 8), (2, 3, 4, 4), (2, 3, 2, 2), (2, 3, 1, 1), (5, 4)), "rois must be"),
    (((2, 3, 8, 8), (2, 4, 4, 4), (2, 3, 2, 2), (2, 3, 1, 1), (5, 5)), "batch and channels"),
    (((2, 3, 8, 8), (1, 3, 4, 4), (2, 3, 2, 2), (2, 3, 1, 1), (5, 5)), "batch and channels"),
    (((2, 3, 8), (2, 3, 4, 4), (2, 3, 2, 2), (2, 3, 1, 1), (5, 5)), "must be 4-d"),
])
def test_bad_shapes_are_mxnet_errors(shapes, match):
    arrays = [mx.nd.ones(s) for s in shapes]
    with pytest.raises(mx.MXNetError, match=match):
        mx.nd.MultiLevelROIAlign(*arrays, spatial_scales=SCALES).wait_to_read()


@pytest.mark.parametrize("kwargs,match", [
    (dict(), "'spatial_scales' is required"),
    (dict(spatial_scales=(0.25, -0.125, 0.0625, 0.03125)), "positive finite"),
    (dict(spatial_scales=SCALES, pooled_size=0), "pooled_size"),
    (dict(spatial_scales=SCALES, pooled_size=(2, 2, 2)), "pooled_size"),
    (dict(spatial_scales=SCALES, sample_ratio=100), "sample_ratio"),
    (dict(spatial_scales=SCALES, aligned="maybe"), "aligned"),
    (dict(spatial_scales=SCALES, canonical_size=0), "canonical_size"),
    (dict(spatial_scales=SCALES, spatial_scale=0.25), "unknown attribute 'spatial_scale'"),
    (dict(spatial_scales=tuple([0.5] * 9)), "1 to 8 levels"),
])
def test_bad_attributes_are_mxnet_errors(kwargs, match):
    arrays = [mx.nd.ones((1, 1, 4, 4))] * 4 + [mx.nd.zeros((2, 5))]
    with pytest.raises(mx.MXNetError, match=match):
        mx.nd.MultiLevelROIAlign(*arrays, **kwargs).wait_to_read()


def test_wrong_number_of_inputs_and_levels_shape_are_errors():
    feats = [mx.nd.ones((1, 1, 4, 4))] * 4
    with pytest.raises(mx.MXNetError):
        mx.nd.MultiLevelROIAlign(*feats[:3], mx.nd.zeros((2, 5)), spatial_scales=SCALES).wait_to_read()
    with pytest.raises(mx.MXNetError, match="levels must be"):
        mx.nd.MultiLevelROIAlign(*feats, mx.nd.zeros((2, 5)), mx.nd.zeros((3,)), spatial_scales=SCALES,
                                 level_input=True).wait_to_read()


def test_batch_index_beyond_the_batch_is_an_error_naming_the_row():
    feats = [mx.nd.ones((2, 1, 4, 4))] * 4
    rois = mx.nd.array([[0, 0, 0, 4, 4], [2, 0, 0, 4, 4]])
    with pytest.raises(mx.MXNetError, match="rois row 1 has batch index 2"):
        mx.nd.MultiLevelROIAlign(*feats, rois, spatial_scales=SCALES).wait_to_read()


def test_output_that_overflows_32_bits_is_refused():
    feats = [mx.sym.var("p%d" % k) for k in range(4)]
    sym = mx.sym.MultiLevelROIAlign(*feats, mx.sym.var("rois"), spatial_scales=SCALES, pooled_size=64)
    shapes = {"p%d" % k: (1, 4096, 4, 4) for k in range(4)}
    with pytest.raises(mx.MXNetError, match="more than 2\\^31 - 1 elements"):
        sym.infer_shape(rois=(200, 5), **shapes)


def test_float64_input_is_an_mxnet_error():
    arrays = [mx.nd.ones((1, 1, 4, 4), dtype="float64")] * 4 + [mx.nd.zeros((2, 5), dtype="float64")]
    with pytest.raises(mx.MXNetError, match="float32"):
        mx.nd.MultiLevelROIAlign(*arrays, spatial_scales=SCALES).wait_to_read()


@pytest.mark.parametrize("case", op_cases.cases_for("MultiLevelROIAlign"), ids=lambda c: c.name)
def test_op_cases_match_reference_forward_and_backward(case):
    # the cases the GPU self-test and `pytest -m gpu` run (tests/op_cases.py): outputs and the input
    # gradients for the case's seeded output gradients equal the numpy reference
    kwargs = op_cases.case_kwargs(case)
    inputs = list(case.inputs)
    if kwargs.pop("level_input", False):
        kwargs["levels"] = inputs.pop()
    features, rois = inputs[:-1], inputs[-1]
    (out,), grads = op_cases.run_case(case, mx.cpu(), with_grads=True)
    np.testing.assert_allclose(out, multilevel_roi_align(features, rois, **kwargs), rtol=0, atol=1e-5)
    assert np.count_nonzero(out) > 0
    grad_out = op_cases.output_grads(case, [out])[0]
    expected = multilevel_roi_align_backward(features, rois, grad_out, **kwargs)
    for level, (g, e) in enumerate(zip(grads, expected)):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5, err_msg="level %d" % level)
    assert all(not g.any() for g in grads[len(features):])  # no gradient to the RoIs / levels
