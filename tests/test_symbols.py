"""SSD graphs: presets build, anchor counts, output shapes, anchors vs numpy, training on one batch."""
import copy
import json

import mxnet as mx
import numpy as np
import pytest

from ssdkit.anchors import ssd_anchors
from ssdkit.symbol import lite, mobilenet, resnet, symbol_builder, symbol_factory, tiny, vgg16_reduced
from ssdkit.symbol.common import multi_layer_feature

PRESETS = [("vgg16_reduced", 300, 8732), ("vgg16_reduced", 512, 24576), ("resnet50", 512, 6132),
           ("resnet18", 300, None), ("resnet34", 512, 6132), ("resnet101", 512, 6132), ("mobilenet", 512, 6132),
           ("mobilenet", 300, None), ("tiny", 64, 340), ("small", 64, 340), ("lite", 256, None)]


def _multibox_shapes(config, data_shape, num_classes=20, batch=2):
    sym = symbol_builder.get_multibox_outputs(num_classes=num_classes, **config)
    _, out_shapes, _ = sym.infer_shape(data=(batch, 3, data_shape, data_shape))
    return out_shapes


def _expected_anchors(config, data_shape):
    """Anchor count from the feature-map sizes the graph infers, and the preset's sizes/ratios."""
    body = symbol_builder._base_network(
        config["network"], 20, **{k: v for k, v in config.items() if k == "num_layers"})
    feats = multi_layer_feature(
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
    internals = lite.get_symbol(20).get_internals()
    for name, expected in (("stage3_unit3_pw_relu", (1, 96, 32, 32)), ("stage4_unit3_pw_relu", (1, 128, 16, 16))):
        _, (shape,), _ = internals[name + "_output"].infer_shape(data=(1, 3, 256, 256))
        assert shape == expected
    args = lite.get_symbol(20).list_arguments()
    assert "stage2_unit1_dw_weight" in args and "stage4_unit3_pw_bn_gamma" in args
    with pytest.raises(ValueError, match="lite needs"):
        lite.get_symbol(20, units=(2, 0, 3))
    with pytest.raises(ValueError, match="lite needs"):
        lite.get_symbol(20, widths=(16, 32, 96, 128, 160), units=(2, 3, 3))
    # a fourth stage (stride 32), as under fpn_lite; the stage outputs are named by stage_output_names
    internals = lite.get_symbol(widths=(16, 32, 96, 128, 160), units=(2, 3, 3, 2)).get_internals()
    names = lite.stage_output_names((2, 3, 3, 2))
    assert names == ["stage2_unit2_pw_relu", "stage3_unit3_pw_relu", "stage4_unit3_pw_relu", "stage5_unit2_pw_relu"]
    _, (shape,), _ = internals[names[-1] + "_output"].infer_shape(data=(1, 3, 256, 256))
    assert shape == (1, 160, 8, 8)


def test_extra_layer_options():
    """Transition width, kernel size and BatchNorm of the extra layers follow the arguments."""
    body = tiny.get_symbol(2)
    feats = multi_layer_feature(body, ["conv4_relu", "", ""], [-1, 256, 64], [-1, 2, 1], [-1, 1, 1],
                                min_filter=32, transition_ratio=1.0, kernels=[3, 3, 4], use_bn=True)
    shapes = [f.infer_shape(data=(1, 3, 64, 64))[1][0] for f in feats]
    assert shapes == [(1, 128, 4, 4), (1, 256, 2, 2), (1, 64, 1, 1)]     # 4x4 kernel, pad 1: 2 -> 1
    arg_shapes = dict(zip(feats[-1].list_arguments(), feats[-1].infer_shape(data=(1, 3, 64, 64))[0]))
    assert arg_shapes["feat1_conv_1x1_weight"] == (256, 128, 1, 1)       # ratio 1.0
    assert arg_shapes["feat2_conv_1x1_weight"] == (64, 256, 1, 1)        # max(min_filter, 64)
    assert arg_shapes["feat2_conv_3x3_weight"] == (64, 64, 4, 4)
    assert "feat2_conv_3x3_bias" not in arg_shapes and "feat2_conv_3x3_bn_gamma" in arg_shapes
    classic = multi_layer_feature(body, ["conv4_relu", ""], [-1, 256], [-1, 2], [-1, 1])
    args = classic[-1].list_arguments()
    assert "feat1_conv_1x1_bias" in args and not any(a.startswith("feat") and "_bn_" in a for a in args)
    arg_shapes, _, _ = classic[-1].infer_shape(data=(1, 3, 64, 64))
    assert dict(zip(args, arg_shapes))["feat1_conv_1x1_weight"] == (128, 128, 1, 1)   # 256 * 0.5


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


def _tiny_batch(batch=2, size=64):
    rng = np.random.RandomState(0)
    data = rng.uniform(-1, 1, size=(batch, 3, size, size)).astype(np.float32)
    label = np.full((batch, 3, 5), -1, dtype=np.float32)
    label[0, 0] = [1, 0.1, 0.2, 0.5, 0.7]
    label[0, 1] = [0, 0.55, 0.5, 0.95, 0.9]
    label[1, 0] = [2, 0.3, 0.3, 0.8, 0.6]
    return data, label


def test_inference_symbol_outputs_detections():
    sym = symbol_factory.get_symbol("tiny", 64, num_classes=3, max_detections=10)
    assert sym.list_outputs() == ["detection_output"]
    _, (shape,), _ = sym.infer_shape(data=(2, 3, 64, 64))
    assert shape == (2, 10, 6)
    sym = symbol_factory.get_symbol("vgg16_reduced", 300, num_classes=20)
    _, (shape,), _ = sym.infer_shape(data=(1, 3, 300, 300))
    assert shape == (1, 8732, 6)


@pytest.mark.parametrize("fused_heads", [False, True])
def test_anchors_read_only_the_head_output(fused_heads):
    """MultiBoxPrior needs a map's height and width only: every one takes them from its layer's small
    head convolution (through BlockGrad), never from the feature map, which would be copied and
    converted out of oneDNN's layout on every forward (bench/README_inference.md)."""
    sym = symbol_factory.get_symbol("resnet50", 512, num_classes=20, fused_heads=fused_heads)
    nodes = json.loads(sym.tojson())["nodes"]
    priors = [n for n in nodes if n["op"] == "MultiBoxPrior"]
    assert len(priors) == 6
    head = "feat%d_pred" if fused_heads else "feat%d_loc_pred"
    for k, prior in enumerate(priors):
        block = nodes[prior["inputs"][0][0]]
        assert block["op"] == "BlockGrad"
        assert nodes[block["inputs"][0][0]]["name"] == head % k


def test_train_and_inference_symbols_share_parameters():
    train = symbol_factory.get_symbol_train("vgg16_reduced", 300, num_classes=20)
    infer = symbol_factory.get_symbol("vgg16_reduced", 300, num_classes=20)
    assert set(train.list_arguments()) - set(infer.list_arguments()) == {"label"}
    assert set(train.list_auxiliary_states()) == set(infer.list_auxiliary_states())
    assert train.list_outputs() == ["cls_prob_output", "loc_loss_output", "cls_label_output",
                                    "det_out_output"]


def test_training_symbol_overfits_one_batch():
    mx.random.seed(0)
    np.random.seed(0)
    data, label = _tiny_batch()
    sym = symbol_factory.get_symbol_train("tiny", 64, num_classes=3)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["label"], context=mx.cpu())
    mod.bind(data_shapes=[("data", data.shape)], label_shapes=[("label", label.shape)])
    mod.init_params(initializer=mx.init.Xavier(magnitude=2))
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.05, "momentum": 0.9})
    batch = mx.io.DataBatch([mx.nd.array(data)], [mx.nd.array(label)])

    def losses():
        cls_prob, loc_loss, cls_label, det = [o.asnumpy() for o in mod.get_outputs()]
        target = cls_label.astype(int)                                   # (B, N)
        valid = target >= 0
        picked = np.take_along_axis(cls_prob, np.maximum(target, 0)[:, None, :], axis=1)[:, 0]
        return -np.log(picked[valid] + 1e-12).mean(), loc_loss.sum(), det

    history = []
    for _ in range(60):
        mod.forward(batch, is_train=True)
        history.append(losses())
        mod.backward()
        mod.update()
    (cls0, loc0, _), (cls1, loc1, det) = history[0], history[-1]
    assert np.isfinite(cls0) and np.isfinite(loc0)
    assert cls1 < 0.3 * cls0, (cls0, cls1)
    assert loc1 < 0.3 * loc0, (loc0, loc1)
    # after overfitting, the best detection of image 0 is one of its objects, well placed
    best = det[0][det[0][:, 0] >= 0][0]
    assert best[0] in (0, 1) and best[1] > 0.5
    gt = label[0][label[0, :, 0] == best[0]][0, 1:]
    assert np.abs(best[2:] - gt).max() < 0.1, (best, gt)


def test_gradient_free_ops_are_cut_from_the_backward_pass_without_changing_gradients():
    """The BlockGrads before MultiBoxPrior / MultiBoxTarget only drop zero-gradient work: replacing
    them by identities (``_copy``) gives the same parameter gradients, and the executor of the real
    graph has no backward node of those operators."""
    data, label = _tiny_batch()
    sym = symbol_factory.get_symbol_train("tiny", 64, num_classes=3)
    graph = json.loads(sym.tojson())
    cut = 0
    for node in graph["nodes"]:
        if node["op"] == "BlockGrad" and node["name"] not in ("cls_label", "det_out"):
            node["op"], cut = "_copy", cut + 1
    assert cut == 4 + 2                                    # one per feature layer, two for the target
    uncut = mx.sym.load_json(json.dumps(graph))
    grads = []
    for full in (sym, uncut):
        s = mx.sym.Group([full[n] for n in ("cls_prob_output", "loc_loss_output")])
        req = {n: "null" if n in ("data", "label") else "write" for n in s.list_arguments()}  # as Module
        exe = s.simple_bind(mx.cpu(), grad_req=req, data=data.shape, label=label.shape)
        rng = np.random.default_rng(1)
        for name, arr in exe.arg_dict.items():
            arr[:] = {"data": data, "label": label}.get(name, rng.normal(0, 0.1, arr.shape))
        exe.forward(is_train=True)
        exe.backward()
        grads.append({k: v.asnumpy() for k, v in exe.grad_dict.items() if v is not None})
        if full is sym:
            assert "_backward_MultiBoxPrior" not in exe.debug_str()
            assert "_backward_MultiBoxTarget" not in exe.debug_str()
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        np.testing.assert_allclose(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7, err_msg=name)
    assert any(np.abs(g).max() > 0 for g in grads[0].values())


def test_config_sets_the_training_targets_of_the_graph():
    """model.overlap_threshold / negative_mining_ratio reach MultiBoxTarget; the defaults are the
    classic SSD ones; bad values are errors naming the key."""
    from ssdkit.api.family import family_of
    from ssdkit.config import apply_overrides
    from ssdkit.config.schema import Config

    def target_attrs(config):
        train, infer = family_of(config).symbols(config, 3)
        nodes = [n for n in json.loads(train.tojson())["nodes"] if n["op"] == "MultiBoxTarget"]
        assert len(nodes) == 1
        assert not [n for n in json.loads(infer.tojson())["nodes"] if n["op"] == "MultiBoxTarget"]
        return nodes[0]["attrs"]

    config = Config()
    attrs = target_attrs(config)
    assert float(attrs["overlap_threshold"]) == 0.5 and float(attrs["negative_mining_ratio"]) == 3.0
    config = apply_overrides(config, {"model.overlap_threshold": 0.4, "model.negative_mining_ratio": 2})
    attrs = target_attrs(config)
    assert float(attrs["overlap_threshold"]) == 0.4 and float(attrs["negative_mining_ratio"]) == 2.0
    with pytest.raises(ValueError, match="model.overlap_threshold"):
        apply_overrides(config, {"model.overlap_threshold": 0})
    with pytest.raises(ValueError, match="model.negative_mining_ratio"):
        apply_overrides(config, {"model.negative_mining_ratio": -2})
