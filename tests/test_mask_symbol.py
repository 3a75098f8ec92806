"""Mask R-CNN graphs on the FPN path (issue 20): FPNConfig mask / GroupNorm settings, GroupNorm against numpy,
the mask head's names, shapes and initialisation, the inference graph's masks against the head run on the
detections' boxes, the training graph's inputs, outputs and settings, and its mask loss against a numpy BCE."""
import dataclasses
import json

import mxnet as mx
import numpy as np
import pytest

import ssdkit.ops  # noqa: F401  (the FPN operators)
from ssdkit.api.inference import set_detection_attrs
from ssdkit.config import FPNConfig
from ssdkit.engine.fpn_metric import FPNLossMetric
from ssdkit.symbol import fpn
from ssdkit.symbol.fpn_config import fpn_config
from ssdkit.symbol.fpn_head import group_norm

SMALL = dict(fpn_channels=16, rcnn_fc_dim=32, rcnn_batch_rois=32, rpn_pre_nms_top_n_train=200,
             rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50,
             test_max_detections=20, mask=True, mask_channels=16, mask_roi_size=7, mask_size=14, gn_groups=4)


def _config(**overrides):
    return fpn_config("fpn_lite", 128, 128, **dict(SMALL, **overrides))


def _nodes(sym, op):
    return [n for n in json.loads(sym.tojson())["nodes"] if n["op"] == op]


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("key,value,message", [
    ("mask_size", 27, "2 \\* mask_roi_size"),
    ("norm", "batch", "one of none, group"),
    ("mask_channels", 0, "must be >= 1"),
    ("mask_stride", 0, "must be >= 1"),
    ("mask_loss_weight", 0.0, "must be > 0"),
    ("gn_groups", 0, "must be >= 1"),
])
def test_bad_mask_settings_name_their_key(key, value, message):
    with pytest.raises(ValueError, match="fpn.%s'.*%s" % (key, message)):
        FPNConfig(**{key: value})


def test_group_norm_settings_are_checked_against_the_widths():
    with pytest.raises(ValueError, match="fpn.rcnn_batchnorm'.*rcnn_batchnorm = false"):
        FPNConfig(norm="group", rcnn_batchnorm=True)
    with pytest.raises(ValueError, match="fpn.fpn_channels'.*48 is not a multiple of gn_groups = 32"):
        FPNConfig(norm="group", fpn_channels=48)
    with pytest.raises(ValueError, match="fpn.mask_channels'.*not a multiple"):
        FPNConfig(norm="group", mask=True, mask_channels=40)
    FPNConfig(norm="group", mask_channels=40)            # no mask branch: its width is not used
    with pytest.raises(ValueError, match="fpn.rcnn_fg_fraction'.*gives none"):
        FPNConfig(mask=True, rcnn_batch_rois=3, rcnn_fg_fraction=0.25)
    assert FPNConfig(rcnn_batch_rois=64, rcnn_fg_fraction=0.3).mask_foreground_rois == 19


def test_defaults_build_the_box_only_graphs_whatever_the_mask_settings():
    """mask = false and norm = none: the mask and GN fields do not reach the graph (the Faster R-CNN graphs
    stay what they were)."""
    base = fpn_config("fpn_lite", 128, 128, fpn_channels=16, rcnn_fc_dim=32)
    other = dict(base, mask_roi_size=5, mask_size=10, mask_channels=8, mask_convs=2, mask_stride=4,
                 mask_loss_weight=3.0, gn_groups=4)
    for build in (lambda c: fpn.get_symbol(num_classes=3, **c), lambda c: fpn.get_symbol_train(num_classes=3,
                                                                                                batch_size=2, **c)):
        with mx.name.NameManager():      # fresh automatic names (transpose0 ...) for each graph
            a = build(base)
        with mx.name.NameManager():
            b = build(other)
        assert a.tojson() == b.tojson()
        assert not any("mask" in n or "_gn_" in n for n in a.list_arguments())
    assert fpn.get_symbol(num_classes=3, **base).list_outputs() == ["detection_output"]


# ---------------------------------------------------------------- GroupNorm
@pytest.mark.parametrize("shape", [(2, 8, 5, 3), (6, 8)])
def test_group_norm_equals_numpy_with_per_channel_affine(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
    gamma = rng.uniform(0.5, 2, 8).astype(np.float32)
    beta = rng.standard_normal(8).astype(np.float32)
    sym = group_norm(mx.sym.var("x"), "g", 8, 4)
    assert sorted(sym.list_arguments()) == ["g_beta", "g_gamma", "x"]
    assert sym.infer_shape(x=shape)[0][1:] == [(8,), (8,)]
    out = sym.eval(x=mx.nd.array(x), g_gamma=mx.nd.array(gamma), g_beta=mx.nd.array(beta))[0].asnumpy()
    groups = x.reshape(shape[0], 4, -1)
    ref = (groups - groups.mean(axis=2, keepdims=True)) / np.sqrt(groups.var(axis=2, keepdims=True) + 1e-5)
    ref = ref.reshape((shape[0], 8, -1)) * gamma[None, :, None] + beta[None, :, None]
    np.testing.assert_allclose(out, ref.reshape(shape), rtol=1e-4, atol=1e-4)


def test_group_norm_reaches_neck_box_head_and_mask_head():
    sym = fpn.get_symbol_train(num_classes=3, batch_size=2, **_config(norm="group")) \
        if hasattr(mx.sym, "MaskTarget") else fpn.get_symbol(num_classes=3, **_config(norm="group"))
    args = set(sym.list_arguments())
    for layer in ("fpn_lateral2", "fpn_output5", "rcnn_fc6", "rcnn_fc7", "mask_conv1", "mask_conv4"):
        assert {layer + "_gn_gamma", layer + "_gn_beta"} <= args and layer + "_bias" not in args, layer
    assert "rpn_conv_bias" in args and "mask_deconv_bias" in args and "mask_predictor_bias" in args
    assert not any(a.startswith("rcnn_fc6_bn") for a in args)
    # neck 4 + 4, box head 2, mask head 4, and the lite backbone's 21 (conv1, 2 per unit of 2 + 3 + 3 + 2 units)
    assert len(_nodes(sym, "GroupNorm")) == 8 + 2 + 4 + 21 and not _nodes(sym, "BatchNorm")
    assert all(n["attrs"]["num_groups"] == "4" for n in _nodes(sym, "GroupNorm"))


# ---------------------------------------------------------------- head and inference graph
def test_mask_head_names_shapes_and_init():
    sym = fpn.get_symbol(num_classes=3, **_config(mask_roi_size=14, mask_size=28, mask_channels=24, mask_convs=4))
    shapes = dict(zip(sym.list_arguments(), sym.infer_shape(data=(2, 3, 128, 128), im_info=(2, 3))[0]))
    expected = {"mask_conv1_weight": (24, 16, 3, 3), "mask_conv2_weight": (24, 24, 3, 3),
                "mask_conv4_weight": (24, 24, 3, 3), "mask_conv4_bias": (24,), "mask_deconv_weight": (24, 24, 2, 2),
                "mask_deconv_bias": (24,), "mask_predictor_weight": (3, 24, 1, 1), "mask_predictor_bias": (3,)}
    assert {k: shapes[k] for k in expected} == expected
    assert sorted(k for k in shapes if k.startswith("mask_")) == sorted(
        ["mask_conv%d_%s" % (i, p) for i in range(1, 5) for p in ("weight", "bias")]
        + ["mask_deconv_weight", "mask_deconv_bias", "mask_predictor_weight", "mask_predictor_bias"])
    (align,) = _nodes(sym, "MultiLevelROIAlign")[1:]
    assert align["name"] == "mask_roi_align" and align["attrs"]["pooled_size"] == "(14, 14)"
    mx.random.seed(0)
    mod = mx.mod.Module(sym, data_names=["data", "im_info"], label_names=None)
    mod.bind(data_shapes=[("data", (1, 3, 128, 128)), ("im_info", (1, 3))], for_training=False)
    mod.init_params(mx.init.Uniform(5.0))            # the heads' own init attributes win
    arg, _ = mod.get_params()
    for name, fan_out in (("mask_conv2_weight", 24 * 9), ("mask_deconv_weight", 24 * 4)):
        assert arg[name].asnumpy().std() == pytest.approx(np.sqrt(2.0 / fan_out), rel=0.15), name
    assert arg["mask_predictor_weight"].asnumpy().std() == pytest.approx(0.001, rel=0.5)
    assert not arg["mask_conv1_bias"].asnumpy().any() and not arg["mask_predictor_bias"].asnumpy().any()


def _inference_run(sym, config, data, im_info):
    mod = mx.mod.Module(sym, data_names=["data", "im_info"], label_names=None)
    mod.bind(data_shapes=[("data", data.shape), ("im_info", im_info.shape)], for_training=False)
    mx.random.seed(3)
    mod.init_params(mx.init.Xavier(magnitude=2))
    arg, aux = mod.get_params()
    # a confident box head and a lively mask predictor, so that detections exist and masks vary
    arg["rcnn_cls_score_bias"][:] = mx.nd.array([-3.0, 2.0, 1.0, 0.5])
    arg["mask_predictor_weight"][:] = mx.nd.random.normal(0, 0.5, arg["mask_predictor_weight"].shape)
    arg["mask_predictor_bias"][:] = mx.nd.array([-1.0, 0.0, 1.0])     # one level per class channel
    mod.set_params(arg, aux)
    mod.forward(mx.io.DataBatch([mx.nd.array(data), mx.nd.array(im_info)]), is_train=False)
    return mod, arg, aux


def test_inference_masks_are_the_head_on_each_detection_box_and_class():
    config = _config(rpn_post_nms_top_n_test=10, test_max_detections=40)   # <= 30 candidates: empty rows too
    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, (2, 3, 128, 128)).astype(np.float32)
    im_info = np.array([[128, 128, 1.0], [96, 120, 0.8]], np.float32)
    sym = fpn.get_symbol(num_classes=3, **config)
    assert sym.list_outputs() == ["detection_output", "masks_output"]
    assert sym.infer_shape(data=(2, 3, 128, 128), im_info=(2, 3))[1] == [(2, 40, 6), (2, 40, 14, 14)]
    mod, arg, aux = _inference_run(sym, config, data, im_info)
    det, masks = [o.asnumpy() for o in mod.get_outputs()]
    valid = det[:, :, 0] >= 0
    assert valid[0].sum() >= 5 and valid[1].sum() >= 5 and (~valid).sum() >= 1
    # the head's raw outputs on the mask RoIs, from the same graph
    internals = sym.get_internals()
    raw = mx.sym.Group([internals["mask_rois_output"], internals["mask_predictor_output"]])
    raw_mod = mx.mod.Module(raw, data_names=["data", "im_info"], label_names=None)
    raw_mod.bind(data_shapes=[("data", data.shape), ("im_info", im_info.shape)], for_training=False)
    raw_mod.set_params(arg, aux, allow_extra=True)
    raw_mod.forward(mx.io.DataBatch([mx.nd.array(data), mx.nd.array(im_info)]), is_train=False)
    rois, logits = [o.asnumpy() for o in raw_mod.get_outputs()]
    assert logits.shape == (80, 3, 14, 14)
    rois, logits = rois.reshape(2, 40, 5), logits.reshape(2, 40, 3, 14, 14)
    for b in range(2):
        h, w = im_info[b, :2]
        k = valid[b]
        np.testing.assert_array_equal(rois[b, k, 0], b)
        assert np.all(rois[b, ~k, 0] == -1)
        np.testing.assert_allclose(rois[b, k, 1:], det[b, k, 2:] * np.array([w, h, w, h]), rtol=1e-5, atol=1e-4)
        cls = det[b, k, 0].astype(int)
        own = logits[b, k][np.arange(k.sum()), cls]
        np.testing.assert_allclose(masks[b, k], 1 / (1 + np.exp(-own)), rtol=1e-5, atol=1e-6)
    assert len(np.unique(det[valid][:, 0])) >= 2 and np.all((masks >= 0) & (masks <= 1))
    # a saved graph whose RCNNDetection keeps fewer rows still reshapes its masks to the detections
    fewer = set_detection_attrs(mx.sym.load_json(sym.tojson()), {"RCNNDetection": {"max_detections": 7}})
    assert fewer.infer_shape(data=(3, 3, 128, 128), im_info=(3, 3))[1] == [(3, 7, 6), (3, 7, 14, 14)]


# ---------------------------------------------------------------- training graph
needs_mask_target = pytest.mark.skipif(not hasattr(mx.sym, "MaskTarget"),
                                       reason="MaskTarget is not in the loaded operator library yet")


@needs_mask_target
def test_training_graph_inputs_outputs_and_settings():
    config = _config(mask_stride=2, mask_loss_weight=2.5, mask_convs=2, rcnn_fg_fraction=0.3)
    train = fpn.get_symbol_train(num_classes=3, batch_size=2, **config)
    infer = fpn.get_symbol(num_classes=3, **config)
    assert train.list_outputs() == [n + "_output" for n in fpn.MASK_TRAIN_OUTPUTS]
    assert fpn.MASK_TRAIN_OUTPUTS[-1] == "mask_loss" and fpn.MASK_TRAIN_OUTPUTS[:-1] == fpn.TRAIN_OUTPUTS
    assert set(train.list_arguments()) - set(infer.list_arguments()) == {"label", "gt_masks"}
    assert set(infer.list_arguments()) <= set(train.list_arguments())
    _, out, _ = train.infer_shape(data=(2, 3, 128, 128), im_info=(2, 3), label=(2, 5, 6), gt_masks=(2, 5, 64, 64))
    assert out == [(1,), (1,), (1,), (1,), (64, 4), (64,), (1,)]
    internals = train.get_internals()
    foreground = int(32 * 0.3)              # 9 rows of each image's 32
    _, shapes, _ = mx.sym.Group([internals["mask_target_output"], internals["mask_predictor_output"]]).infer_shape(
        data=(2, 3, 128, 128), im_info=(2, 3), label=(2, 5, 6), gt_masks=(2, 5, 64, 64))
    assert shapes == [(2 * foreground, 14, 14), (2 * foreground, 3, 14, 14)]
    (target,) = _nodes(train, "MaskTarget")
    assert float(target["attrs"]["spatial_scale"]) == 0.5 and int(target["attrs"]["mask_size"]) == 14
    assert "mask_conv2_weight" in train.list_arguments() and "mask_conv3_weight" not in train.list_arguments()
