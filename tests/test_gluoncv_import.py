"""GluonCV weights in ssdkit graphs: same features, anchors, raw predictions and detections.

GluonCV nets are built with random weights (``pretrained=False``, ``pretrained_base=False``), their
BatchNorm statistics and scales randomised too (so a swapped mapping cannot pass), saved with
``save_parameters`` and imported with :mod:`ssdkit.weights`.
"""
import mxnet as mx
import numpy as np
import pytest

from ssdkit.symbol import symbol_builder
from ssdkit import weights

gluoncv = pytest.importorskip("gluoncv")
from gluoncv import model_zoo  # noqa: E402


def _randomise(net, seed):
    """Give every parameter a non-trivial value (BatchNorm stats, gammas and betas included)."""
    rng = np.random.RandomState(seed)
    for name, param in sorted(net.collect_params().items()):
        shape = param.shape
        if name.endswith(("running_var", "moving_var")):
            value = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("gamma") or (name.endswith("scale") and "init" not in name):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("running_mean", "moving_mean", "beta", "bias")):
            value = rng.normal(0, 0.1, shape)
        elif name.endswith("weight"):
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        else:
            continue
        param.set_data(mx.nd.array(value.astype(np.float32)))


def _forward(sym, arg_params, aux_params, x):
    args = dict(arg_params, data=mx.nd.array(x))
    exe = sym.bind(mx.cpu(), args=args, aux_states=aux_params, grad_req="null")
    return [o.asnumpy() for o in exe.forward(is_train=False)]


def _assert_close(ours, theirs, rtol=1e-4, what=""):
    scale = max(1e-6, float(np.abs(theirs).max()))
    err = float(np.abs(ours - theirs).max())
    assert err <= rtol * scale, "%s: max abs difference %g, scale %g" % (what, err, scale)


@pytest.mark.parametrize("network,children", [("resnet18_v1", 8), ("resnet50_v1", 8), ("mobilenet1.0", 81)])
def test_imagenet_base_features_match(tmp_path, network, children):
    net = model_zoo.get_model(network, pretrained=False)
    net.initialize()
    x = np.random.RandomState(1).normal(size=(2, 3, 96, 96)).astype(np.float32)
    net(mx.nd.array(x))
    _randomise(net, 2)
    path = str(tmp_path / (network + ".params"))
    net.save_parameters(path)
    theirs = x_nd = mx.nd.array(x)
    for child in list(net.features)[:children]:     # everything before global pooling
        theirs = child(theirs)
    arg, aux = weights.import_imagenet(path, network)
    base, depth = weights.IMAGENET[network]
    body = symbol_builder.BASE_NETWORKS[base](1000, num_layers=depth)
    (ours,) = _forward(body, arg, aux, x_nd.asnumpy())
    assert ours.shape == theirs.shape
    _assert_close(ours, theirs.asnumpy(), what=network)
    if network == "resnet18_v1":
        by_preset, _ = weights.import_imagenet(path, "resnet18")       # preset name works too
        assert sorted(by_preset) == sorted(arg)
        with pytest.raises(ValueError, match="lacks"):
            weights.import_imagenet(path, "resnet34_v1")


def test_imagenet_vgg16_atrous_features_match(tmp_path):
    from gluoncv.model_zoo.ssd.vgg_atrous import vgg16_atrous_300
    net = vgg16_atrous_300(pretrained=False)
    net.initialize()
    x = np.random.RandomState(3).normal(size=(1, 3, 300, 300)).astype(np.float32)  # extras need 300
    net(mx.nd.array(x))
    _randomise(net, 4)
    path = str(tmp_path / "vgg16_atrous.params")
    net.save_parameters(path)                      # keys without the 'features.' of SSD files
    fc7 = net(mx.nd.array(x))[1].asnumpy()
    arg, aux = weights.import_imagenet(path, "vgg16_atrous")
    (ours,) = _forward(symbol_builder.BASE_NETWORKS["vgg16_reduced"](1000), arg, aux, x)
    _assert_close(ours, fc7, what="vgg16_atrous relu7")


def test_layer_map_covers_every_gluoncv_parameter():
    """The structural table names every ImageNet parameter but the classifier, once."""
    for network, kw in [("resnet34_v1", {}), ("resnet101_v1", {})]:
        net = model_zoo.get_model(network, pretrained=False, **kw)
        theirs = {n for n, _ in net._collect_params_with_prefix().items() if not n.startswith("output")}
        table = weights.layer_map(network, "imagenet")
        mapped = {prefix + sfx for prefix in table.values()
                  for sfx in ("weight", "bias", "gamma", "beta", "running_mean", "running_var")}
        assert theirs, network
        assert theirs <= mapped
        assert len(set(table.values())) == len(table)


def _zoo_heads(net, x):
    """GluonCV's raw SSD outputs in inference mode (its hybrid_forward before decoding)."""
    feats = net.features(x)
    cls = [mx.nd.flatten(mx.nd.transpose(cp(f), (0, 2, 3, 1))) for f, cp in zip(feats, net.class_predictors)]
    box = [mx.nd.flatten(mx.nd.transpose(bp(f), (0, 2, 3, 1))) for f, bp in zip(feats, net.box_predictors)]
    anchors = [mx.nd.reshape(ag(f), (1, -1)) for f, ag in zip(feats, net.anchor_generators)]
    cls = mx.nd.concat(*cls, dim=1).reshape((0, -1, net.num_classes + 1))
    box = mx.nd.concat(*box, dim=1).reshape((0, -1, 4))
    return cls.asnumpy(), box.asnumpy(), mx.nd.concat(*anchors, dim=1).reshape((1, -1, 4)).asnumpy()


def _one_class_per_anchor(net, x):
    """Tame the random heads so GluonCV's per-class decoding and MultiBoxDetection coincide.

    Logits and regressions are rescaled to unit spread (no saturated, tied scores; finite boxes),
    and each anchor keeps one object class (the others get weight 0, bias -30, so their
    probability is < 0.01): then GluonCV's (anchor, class) candidates above 0.01 are exactly
    MultiBoxDetection's (anchor, best class) candidates.
    """
    cls, box, _ = _zoo_heads(net, x)
    cls_scale, box_scale = 2.0 / cls.std(), 1.0 / box.std()
    classes = net.num_classes + 1
    for k, (cp, bp) in enumerate(zip(net.class_predictors, net.box_predictors)):
        for layer, scale in ((cp.predictor, cls_scale), (bp.predictor, box_scale)):
            layer.weight.set_data(layer.weight.data() * scale)
            layer.bias.set_data(layer.bias.data() * scale)
        w, b = cp.predictor.weight.data().asnumpy(), cp.predictor.bias.data().asnumpy()
        for a in range(w.shape[0] // classes):
            keep = 1 + (7 * a + 3 * k) % net.num_classes
            for j in range(1, classes):
                if j != keep:
                    w[a * classes + j] = 0
                    b[a * classes + j] = -30
        cp.predictor.weight.set_data(mx.nd.array(w))
        cp.predictor.bias.set_data(mx.nd.array(b))


def _saved_zoo_net(name, x_nd, seed, path):
    """GluonCV SSD ``name`` with random parameters (``_randomise(seed)``), its heads tamed by
    :func:`_one_class_per_anchor` on ``x_nd``, saved to ``path``; returns the net."""
    net = model_zoo.get_model(name, pretrained=False, pretrained_base=False)
    net.initialize()
    net(x_nd)
    _randomise(net, seed)
    _one_class_per_anchor(net, x_nd)
    net.save_parameters(path)
    return net


@pytest.mark.parametrize("fused_heads", [False, True])
@pytest.mark.parametrize("name", ["ssd_300_vgg16_atrous_voc", "ssd_512_mobilenet1.0_voc", "ssd_512_resnet50_v1_voc"])
def test_zoo_ssd_matches_gluoncv(tmp_path, name, fused_heads):
    _, size, _, _, _ = weights.ZOO[name]
    x = np.random.RandomState(5).normal(size=(1, 3, size, size)).astype(np.float32)
    x_nd = mx.nd.array(x)
    path = str(tmp_path / (name + ".params"))
    net = _saved_zoo_net(name, x_nd, 6, path)
    cls, box, anchors = _zoo_heads(net, x_nd)
    ids, scores, boxes = [o.asnumpy() for o in net(x_nd)]

    arg, aux = weights.import_ssd(path, name, fused_heads=fused_heads)
    config = weights.zoo_config(name, fused_heads=fused_heads)
    det = symbol_builder.get_symbol(**config)          # clip=False, 100 rows: GluonCV settings
    assert ("feat0_pred_weight" in arg) == fused_heads and ("feat0_cls_pred_weight" in arg) != fused_heads
    inner = det.get_internals()
    graph = mx.sym.Group([inner["multibox_loc_pred_output"], inner["multibox_cls_logits_output"],
                          inner["multibox_anchors_output"], det])
    our_loc, our_cls, our_anchors, our_det = _forward(graph, arg, aux, x)

    # anchors: GluonCV's pixel (cx, cy, w, h) / base size == MultiBoxPrior corners
    a = anchors[0] / size
    corners = np.concatenate([a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2], axis=1)
    np.testing.assert_allclose(our_anchors[0], corners, atol=2e-6)
    # raw predictions
    _assert_close(our_cls, cls, what="class logits")
    _assert_close(our_loc.reshape(1, -1, 4), box, what="box regressions")
    # detections: same rows (class, score, normalised box), in the same order
    valid = ids[0, :, 0] >= 0
    theirs = np.concatenate([ids[0], scores[0], boxes[0] / size], axis=1)[valid]
    ours = our_det[0][our_det[0][:, 0] >= 0]
    assert len(theirs) > 20
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours[:, 0], theirs[:, 0])
    np.testing.assert_allclose(ours[:, 1], theirs[:, 1], atol=1e-5)
    np.testing.assert_allclose(ours[:, 2:], theirs[:, 2:], atol=1e-4)


def test_zoo_configs_follow_gluoncv_generators():
    """The table's sizes/steps are those of GluonCV's anchor generators (COCO twins included)."""
    for name in ["ssd_300_vgg16_atrous_coco", "ssd_512_resnet50_v1_coco", "ssd_512_mobilenet1.0_coco"]:
        net = model_zoo.get_model(name, pretrained=False, pretrained_base=False)
        net.initialize()
        _, size, num_classes, _, _ = weights.ZOO[name]
        config = weights.zoo_config(name)
        assert config["num_classes"] == num_classes == net.num_classes
        for k, gen in enumerate(net.anchor_generators):
            np.testing.assert_allclose(config["sizes"][k], np.array(gen._sizes) / size, rtol=1e-6)
            np.testing.assert_allclose(config["ratios"][k], gen._ratios, rtol=1e-6)
            grid = gen.anchors.data().asnumpy()[0, 0]          # (H, W, A*4) pixel (cx, cy, w, h)
            np.testing.assert_allclose(config["steps"][k], (grid[0, 1, 0] - grid[0, 0, 0]) / size, rtol=1e-6)


def test_fuse_head_params_layout_and_errors():
    """Class rows, box rows, zero padding to the alignment; input untouched; a lone head is an error."""
    rng = np.random.RandomState(0)
    params = {"feat0_cls_pred_weight": rng.normal(size=(6, 3, 3, 3)), "feat0_cls_pred_bias": rng.normal(size=6),
              "feat0_loc_pred_weight": rng.normal(size=(4, 3, 3, 3)), "feat0_loc_pred_bias": rng.normal(size=4),
              "conv_weight": rng.normal(size=(2, 2))}
    params = {k: mx.nd.array(v) for k, v in params.items()}
    before = {k: v.asnumpy().copy() for k, v in params.items()}
    fused = weights.fuse_head_params(params)
    assert sorted(fused) == ["conv_weight", "feat0_pred_bias", "feat0_pred_weight"]
    w, b = fused["feat0_pred_weight"].asnumpy(), fused["feat0_pred_bias"].asnumpy()
    assert w.shape == (16, 3, 3, 3) and b.shape == (16,)          # 6 + 4 rows aligned up to 16
    np.testing.assert_array_equal(w[:6], before["feat0_cls_pred_weight"])
    np.testing.assert_array_equal(w[6:10], before["feat0_loc_pred_weight"])
    np.testing.assert_array_equal(b[6:10], before["feat0_loc_pred_bias"])
    assert not w[10:].any() and not b[10:].any()
    assert all(np.array_equal(params[k].asnumpy(), v) for k, v in before.items())
    del params["feat0_loc_pred_bias"]
    with pytest.raises(ValueError, match="feat0_loc_pred_bias missing"):
        weights.fuse_head_params(params)


def test_zoo_file_becomes_a_deploy_model(tmp_path):
    """deploy.py --gluoncv-zoo writes a deploy model that ssdkit.Detector runs with GluonCV's detections
    (same image, same pixels); the portable variant (MXNet contrib operators) keeps the same rows."""
    import subprocess
    import sys

    from ssdkit.api.deploy import deploy_gluoncv_zoo
    from ssdkit.api.model_files import load_inference_model
    from ssdkit.dataset.voc import VOC_CLASSES
    from ssdkit.detector import Detector
    from ssdkit.normalization import IMAGENET_MEAN, IMAGENET_STD

    name, size = "ssd_512_mobilenet1.0_voc", 512
    image = np.random.RandomState(7).randint(0, 256, (size, size, 3)).astype(np.uint8)
    x = ((image - np.array(IMAGENET_MEAN)) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
    x_nd = mx.nd.array(x)
    params = str(tmp_path / (name + ".params"))
    net = _saved_zoo_net(name, x_nd, 8, params)
    ids, scores, boxes = [o.asnumpy()[0] for o in net(x_nd)]
    keep = (ids[:, 0] >= 0) & (scores[:, 0] >= 0.05)
    theirs = np.concatenate([ids, scores, boxes], axis=1)[keep]
    assert len(theirs) > 10

    out = str(tmp_path / "deploy" / "gcv")
    repo = __file__.rsplit("/tests/", 1)[0]
    proc = subprocess.run([sys.executable, "deploy.py", "--gluoncv-zoo", name, "--gluoncv-params", params,
                           "--output", out], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    _, arg, _, meta = load_inference_model(out, deploy=True)
    assert meta["class_names"] == list(VOC_CLASSES) and meta["data_shape"] == size
    assert "feat0_pred_weight" in arg                      # fused heads by default

    ours = Detector(out, deploy=True, score_thresh=0.05).detect(image)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours[:, 0], theirs[:, 0])
    np.testing.assert_allclose(ours[:, 1], theirs[:, 1], atol=1e-5)
    np.testing.assert_allclose(ours[:, 2:], theirs[:, 2:], atol=1e-2)   # pixels

    portable = str(tmp_path / "deploy" / "gcv_portable")
    deploy_gluoncv_zoo(params, name, portable, portable=True)
    rows = Detector(portable, deploy=True, score_thresh=0.05).detect(image)
    assert len(rows) >= len(ours)                           # contrib's graph has no 100-row cap
    np.testing.assert_allclose(rows[:len(ours)], ours, atol=1e-2)

    with pytest.raises(ValueError, match="no GluonCV SSD mapping"):
        deploy_gluoncv_zoo(params, "ssd_999_nothing_voc", str(tmp_path / "x"))
