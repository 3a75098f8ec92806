"""GroupNorm backbones (issue 20, ``[fpn] norm = "group"``): the ResNet and ``lite`` bodies with ``gn_groups``
have one GroupNorm ``<conv>_gn`` for each BatchNorm ``<conv>_bn`` and none left, the same stage shapes, a
layer's forward equal to numpy (convolution, GroupNorm, per-channel affine, ReLU), the config errors of
``frozen_bn`` and of a ``gn_groups`` that does not divide a backbone width, and a tiny GN ``fpn_lite`` graph
learning one batch (backbone GroupNorm parameters included)."""
import json

import mxnet as mx
import numpy as np
import pytest

import ssdkit.ops  # noqa: F401  (the FPN operators)
from ssdkit.config import FPNConfig
from ssdkit.symbol import fpn, lite, resnet
from ssdkit.symbol.common import conv_act, he_initializer
from ssdkit.symbol.fpn_config import fpn_config
from ssdkit.symbol.fpn_head import LITE_STAGES, backbone_norm_widths, backbone_stages


def _nodes(sym, op):
    return [n["name"] for n in json.loads(sym.tojson())["nodes"] if n["op"] == op]


def _stage_shapes(stages, size=128):
    return mx.sym.Group(stages).infer_shape(data=(2, 3, size, size))[1]


# ---------------------------------------------------------------- graphs
@pytest.mark.parametrize("backbone,variant,groups", [(18, "v1", 32), (50, "v1", 32), (50, "v1d", 16),
                                                     ("lite", "v1", 16)])
def test_gn_backbone_has_one_group_norm_per_former_batch_norm(backbone, variant, groups):
    plain = mx.sym.Group(backbone_stages(backbone, variant=variant))
    gn = mx.sym.Group(backbone_stages(backbone, variant=variant, norm="group", gn_groups=groups))
    batch_norms = _nodes(plain, "BatchNorm")
    assert batch_norms and all(n.endswith("_bn") for n in batch_norms)
    assert _nodes(gn, "BatchNorm") == [] and gn.list_auxiliary_states() == []
    assert _nodes(gn, "GroupNorm") == [n[:-3] + "_gn" for n in batch_norms]
    # parameters: each BatchNorm's gamma / beta become the GroupNorm's per-channel ones, of the same shape
    plain_shapes = dict(zip(plain.list_arguments(), plain.infer_shape(data=(1, 3, 64, 64))[0]))
    gn_shapes = dict(zip(gn.list_arguments(), gn.infer_shape(data=(1, 3, 64, 64))[0]))
    renamed = {k.replace("_bn_gamma", "_gn_gamma").replace("_bn_beta", "_gn_beta"): v for k, v in plain_shapes.items()}
    assert gn_shapes == renamed
    assert all(n["attrs"]["num_groups"] == str(groups) for n in json.loads(gn.tojson())["nodes"]
               if n["op"] == "GroupNorm")
    assert _stage_shapes(list(gn)) == _stage_shapes(list(plain))


def test_gn_fpn_graph_has_no_batch_norm_and_the_same_output_shapes():
    base = dict(fpn_channels=32, rcnn_fc_dim=32, rpn_post_nms_top_n_test=50, test_max_detections=20)
    for network in ("fpn_resnet18", "fpn_lite"):
        plain = fpn.get_symbol(num_classes=3, **fpn_config(network, 128, 128, **base))
        gn = fpn.get_symbol(num_classes=3, **fpn_config(network, 128, 128, norm="group", gn_groups=16, **base))
        assert _nodes(gn, "BatchNorm") == [] and len(_nodes(plain, "BatchNorm")) > 0
        # backbone BN -> GN, plus neck 4 + 4 and box head 2
        assert len(_nodes(gn, "GroupNorm")) == len(_nodes(plain, "BatchNorm")) + 10
        shapes = dict(data=(1, 3, 128, 128), im_info=(1, 3))
        assert gn.infer_shape(**shapes)[1] == plain.infer_shape(**shapes)[1]


def test_ssd_bodies_take_gn_groups_and_keep_their_output():
    for body, plain in ((resnet.get_symbol(num_layers=18, gn_groups=8), resnet.get_symbol(num_layers=18)),
                        (lite.get_symbol(gn_groups=16), lite.get_symbol())):
        assert _nodes(body, "BatchNorm") == []
        assert len(_nodes(body, "GroupNorm")) == len(_nodes(plain, "BatchNorm"))
        assert body.infer_shape(data=(1, 3, 96, 96))[1] == plain.infer_shape(data=(1, 3, 96, 96))[1]


# ---------------------------------------------------------------- forward against numpy
def _numpy_group_norm(x, groups, gamma, beta, eps=1e-5):
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1).astype(np.float64)
    g = (g - g.mean(axis=2, keepdims=True)) / np.sqrt(g.var(axis=2, keepdims=True) + eps)
    return g.reshape(x.shape) * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)


def test_gn_conv_layer_forward_equals_numpy():
    """``conv_act(..., use_bn=True, gn_groups=4)``: 1x1 convolution (no bias), GroupNorm with per-channel
    gamma / beta, ReLU -- the layer every backbone BatchNorm turns into -- against numpy."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)
    weight = rng.standard_normal((8, 6, 1, 1)).astype(np.float32)
    gamma = rng.uniform(0.5, 2, 8).astype(np.float32)
    beta = rng.standard_normal(8).astype(np.float32)
    sym = conv_act(mx.sym.var("data"), "c", 8, kernel=(1, 1), pad=(0, 0), use_bn=True, gn_groups=4)
    assert sorted(sym.list_arguments()) == ["c_gn_beta", "c_gn_gamma", "c_weight", "data"]
    out = sym.eval(data=mx.nd.array(x), c_weight=mx.nd.array(weight), c_gn_gamma=mx.nd.array(gamma),
                   c_gn_beta=mx.nd.array(beta))[0].asnumpy()
    conv = np.einsum("oi,nihw->nohw", weight[:, :, 0, 0].astype(np.float64), x)
    ref = np.maximum(_numpy_group_norm(conv, 4, gamma, beta), 0)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_gn_depthwise_layer_normalises_groups_of_channels():
    """A ``lite`` depthwise convolution (one group per channel) followed by GroupNorm of 2 groups: the
    GroupNorm statistics span several channels (numpy 3x3 depthwise convolution as the reference)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    weight = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    sym = conv_act(mx.sym.var("data"), "d", 4, num_group=4, use_bn=True, gn_groups=2, act=None)
    out = sym.eval(data=mx.nd.array(x), d_weight=mx.nd.array(weight), d_gn_gamma=mx.nd.ones(4),
                   d_gn_beta=mx.nd.zeros(4))[0].asnumpy()
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros(x.shape)
    for i in range(3):
        for j in range(3):
            conv += padded[:, :, i:i + 6, j:j + 6] * weight[None, :, 0, i, j, None, None]
    np.testing.assert_allclose(out, _numpy_group_norm(conv, 2, np.ones(4), np.zeros(4)), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- config errors
def test_frozen_bn_with_group_norm_is_a_config_error():
    with pytest.raises(ValueError, match="fpn.frozen_bn'.*no statistics to freeze"):
        FPNConfig(norm="group", frozen_bn=True)
    FPNConfig(norm="none", frozen_bn=True)
    with pytest.raises(ValueError, match="fpn.frozen_bn'"):
        backbone_stages(50, frozen_bn=True, norm="group", gn_groups=32)
    with pytest.raises(ValueError, match="no stored statistics to freeze"):
        resnet.get_symbol(num_layers=18, bn_global_stats=True, gn_groups=32)


def test_gn_groups_must_divide_every_backbone_width():
    assert backbone_norm_widths("lite") == tuple(sorted(LITE_STAGES[0])) == (16, 32, 96, 128, 160)
    assert backbone_norm_widths(50, "v1d") == (32, 64, 128, 256, 512, 1024, 2048)
    # fpn_lite's 16-wide conv1 does not take the default 32 groups: the preset names the key and the widths
    with pytest.raises(ValueError, match=r"fpn.gn_groups'.*32 does not divide the backbone widths "
                                         r"\[16, 32, 96, 128, 160\] of fpn_lite \(not \[16\]\).*divide 16"):
        fpn_config("fpn_lite", 128, 128, norm="group")
    with pytest.raises(ValueError, match=r"fpn.gn_groups'.*64 does not divide.*resnet50 v1d \(not \[32\]\)"):
        backbone_stages(50, variant="v1d", norm="group", gn_groups=64)
    with pytest.raises(ValueError, match=r"fpn.gn_groups'.*fpn_resnet18 \(not \[64, 128, 256, 512\]\)"):
        fpn_config("fpn_resnet18", 128, 128, norm="group", gn_groups=48, fpn_channels=48, rcnn_fc_dim=96)
    fpn_config("fpn_lite", 128, 128, norm="group", gn_groups=16)
    fpn_config("fpn_resnet50", 128, 128, norm="group")                        # 32 divides every ResNet width
    fpn_config("fpn_lite", 128, 128, norm="none")                             # no GroupNorm: gn_groups unused
    # the bodies' own checks (SSD callers): the widths that do not fit are named
    with pytest.raises(ValueError, match=r"lite: GroupNorm of 32 groups.*not multiples: \[16\]"):
        lite.get_symbol(gn_groups=32)
    with pytest.raises(ValueError, match=r"resnet18 v1: GroupNorm of 48 groups.*not multiples: \[64, 128, 256, 512\]"):
        resnet.get_symbol(num_layers=18, gn_groups=48)
    with pytest.raises(ValueError, match="norm must be none or group"):
        backbone_stages(18, norm="batch")


# ---------------------------------------------------------------- learning
def _tiny_batch():
    """Two 128 x 128 images with three bright boxes (classes 0..2)."""
    rng = np.random.RandomState(0)
    data = rng.uniform(-1, 1, size=(2, 3, 128, 128)).astype(np.float32)
    label = np.full((2, 3, 5), -1.0, np.float32)
    for b, m, c, (x0, y0, x1, y1) in [(0, 0, 1, (10, 20, 60, 90)), (0, 1, 0, (80, 70, 120, 120)),
                                      (1, 0, 2, (30, 30, 100, 80))]:
        data[b, c, y0:y1, x0:x1] += 2.0
        label[b, m] = [c, x0, y0, x1, y1]
    return data, np.array([[128, 128, 1.0]] * 2, np.float32), label


def test_gn_fpn_lite_learns_one_batch():
    """norm = "group" everywhere (backbone, neck, box head): the RPN and R-CNN losses fall over 25 Adam steps on
    one batch, and the backbone's GroupNorm parameters are trained."""
    mx.random.seed(0)
    np.random.seed(0)
    config = fpn_config("fpn_lite", 128, 128, fpn_channels=16, rpn_channels=16, rcnn_fc_dim=32, rcnn_batch_rois=32,
                        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50, anchor_scales=(4.0,),
                        roi_canonical_size=112.0, norm="group", gn_groups=8)
    data, im_info, label = _tiny_batch()
    sym = fpn.get_symbol_train(num_classes=3, batch_size=2, **config)
    assert not _nodes(sym, "BatchNorm")
    mod = mx.mod.Module(sym, data_names=["data", "im_info"], label_names=["label"], context=mx.cpu())
    mod.bind(data_shapes=[("data", data.shape), ("im_info", im_info.shape)], label_shapes=[("label", label.shape)])
    mod.init_params(initializer=he_initializer())
    assert mod.get_params()[0]["conv1_gn_gamma"].asnumpy().tolist() == [1.0] * 16      # GroupNorm's own init
    mod.init_optimizer(optimizer="adam", optimizer_params={"learning_rate": 0.006})
    batch = mx.io.DataBatch([mx.nd.array(data), mx.nd.array(im_info)], [mx.nd.array(label)])
    history = []
    for _ in range(25):
        mod.forward(batch, is_train=True)
        history.append([float(mod.get_outputs()[k].asnumpy()[0]) for k in (0, 2)])    # rpn_cls, rcnn_cls
        mod.backward()
        mod.update()
    history = np.array(history)
    first, last = history[:3].mean(axis=0), history[-3:].mean(axis=0)
    assert np.all(np.isfinite(history))
    assert np.all(last < np.array([0.5, 0.8]) * first), (first, last)
    gamma = mod.get_params()[0]["stage3_unit1_pw_gn_gamma"].asnumpy()
    assert np.abs(gamma - 1).max() > 1e-3
