"""SSD graphs: presets build, anchor counts, output shapes, anchors vs numpy, training on one batch."""
import copy

import mxnet as mx
import numpy as np
import pytest

from ssdkit.anchors import ssd_anchors
from ssdkit.symbol import mobilenet, resnet, symbol_builder, symbol_factory, tiny, vgg16_reduced

PRESETS = [("vgg16_reduced", 300, 8732), ("vgg16_reduced", 512, 24576), ("resnet50", 512, 6132),
           ("resnet18", 300, None), ("resnet101", 512, 6132), ("mobilenet", 512, 6132),
           ("mobilenet", 300, None), ("tiny", 64, 340)]


def _multibox_shapes(config, data_shape, num_classes=20, batch=2):
    sym = symbol_builder.get_multibox_outputs(num_classes=num_classes, **config)
    _, out_shapes, _ = sym.infer_shape(data=(batch, 3, data_shape, data_shape))
    return out_shapes


def _expected_anchors(config, data_shape):
    """Anchor count from the feature-map sizes the graph infers, and the preset's sizes/ratios."""
    body = symbol_builder._base_network(
        config["network"], 20, **{k: v for k, v in config.items() if k == "num_layers"})
    feats = symbol_builder.multi_layer_feature(
        body, config["from_layers"], config["num_filters"], config["strides"], config["pads"],
        transition_ratio=config.get("transition_ratio", 0.5), use_bn=config.get("extra_bn", False))
    total = 0
    for k, feat in enumerate(feats):
        _, (shape,), _ = feat.infer_shape(data=(1, 3, data_shape, data_shape))
        total += shape[2] * shape[3] * (len(config["sizes"][k]) + len(config["ratios"][k]) - 1)
    return total


@pytest.mark.parametrize("network,data_shape,num_anchors", PRESETS)
def test_presets_build_with_consistent_shapes(network, data_shape, num_anchors):
    config = symbol_factory.get_config(network, data_shape)
    loc, cls, anchors = _multibox_shapes(config, data_shape)
    n = anchors[1]
    assert anchors == (1, n, 4)
    assert loc == (2, n * 4)
    assert cls == (2, 21, n)
    assert n == _expected_anchors(config, data_shape)
    if num_anchors is not None:
        assert n == num_anchors


def test_vgg16_reduced_300_feature_sizes():
    body = vgg16_reduced.get_symbol(20)
    internals = body.get_internals()
    for name, size, channels in [("relu4_3", 38, 512), ("relu7", 19, 1024)]:
        _, (shape,), _ = internals[name + "_output"].infer_shape(data=(1, 3, 300, 300))
        assert shape == (1, channels, size, size)


@pytest.mark.parametrize("depth,channels", [(18, 512), (34, 512), (50, 2048), (101, 2048)])
def test_resnet_depths(depth, channels):
    body = resnet.get_symbol(20, num_layers=depth)
    _, (shape,), _ = body.infer_shape(data=(1, 3, 224, 224))
    assert shape == (1, channels, 7, 7)
    convs = [a for a in body.list_arguments() if a.endswith("_weight")]
    # depth = stem + 2 or 3 convolutions per unit + classifier (absent here) + projections
    units = sum(resnet.SPECS[depth][1])
    per_unit = 3 if depth >= 50 else 2
    projections = sum(1 for a in convs if a.endswith("_sc_weight"))
    assert len(convs) == 1 + units * per_unit + projections
    assert 1 + units * per_unit + 1 == depth
    assert projections == (4 if depth >= 50 else 3)


def test_mobilenet_and_tiny_bodies():
    _, (shape,), _ = mobilenet.get_symbol(20).infer_shape(data=(1, 3, 224, 224))
    assert shape == (1, 1024, 7, 7)
    internals = mobilenet.get_symbol(20).get_internals()
    _, (shape,), _ = internals["conv_12_relu_output"].infer_shape(data=(1, 3, 224, 224))
    assert shape == (1, 512, 14, 14)
    _, (shape,), _ = tiny.get_symbol(20).infer_shape(data=(1, 3, 64, 64))
    assert shape == (1, 128, 4, 4)


def test_caller_lists_are_not_mutated():
    config = symbol_factory.get_config("vgg16_reduced", 300)
    before = copy.deepcopy(config)
    symbol_builder.get_multibox_outputs(num_classes=3, **config)
    symbol_factory.get_config("vgg16_reduced", 300)["sizes"][0].append(9.0)
    assert config == before
    assert symbol_factory.get_config("vgg16_reduced", 300) == before


def test_l2_normalisation_scale_and_head_names():
    sym = symbol_builder.get_multibox_outputs(num_classes=20, **symbol_factory.get_config("vgg16_reduced", 300))
    args = sym.list_arguments()
    assert "feat0_scale" in args and "feat1_scale" not in args
    for k in range(6):
        assert "feat%d_loc_pred_weight" % k in args and "feat%d_cls_pred_weight" % k in args
    assert "feat2_conv_1x1_weight" in args and "feat5_conv_3x3_weight" in args
    attrs = sym.attr_dict()["feat0_scale"]
    assert "20" in attrs["__init__"] and attrs["__shape__"] == "(1, 512, 1, 1)"


def test_anchors_match_numpy_reference():
    config = symbol_factory.get_config("tiny", 64)
    sym = symbol_builder.get_multibox_outputs(num_classes=2, **config)
    exe = sym.simple_bind(mx.cpu(), data=(1, 3, 64, 64), grad_req="null")
    anchors = exe.forward(is_train=False, data=mx.nd.zeros((1, 3, 64, 64)))[2].asnumpy()[0]
    maps = [8, 4, 2, 1]
    expected = np.concatenate([ssd_anchors(m, m, config["sizes"][k], config["ratios"][k])
                               for k, m in enumerate(maps)])
    np.testing.assert_allclose(anchors, expected, atol=1e-6)


def test_bad_arguments_are_named():
    config = symbol_factory.get_config("tiny", 64)
    with pytest.raises(ValueError, match="not a layer of the base network"):
        symbol_builder.get_multibox_outputs(num_classes=2, **dict(config, from_layers=["nope", "", "", ""]))
    with pytest.raises(ValueError, match="unknown base network"):
        symbol_builder.get_multibox_outputs(num_classes=2, **dict(config, network="vgg17"))
    with pytest.raises(ValueError, match="sizes has 3 values"):
        symbol_builder.get_multibox_outputs(num_classes=2, **dict(config, sizes=config["sizes"][:3]))
    with pytest.raises(ValueError, match="no SSD preset"):
        symbol_factory.get_config("vgg17", 300)
