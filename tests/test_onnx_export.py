"""ONNX export of SSD deploy models (issue 19, item 1): ``deploy.py --format onnx`` writes one file whose
detections, run by onnxruntime, equal those of ssdkit's MXNet deploy model.

How rows are compared
  The detection step alone (:mod:`ssdkit.api.onnx_detection`) gets the very same ``cls_prob``,
  ``loc_pred`` and anchors as ``mx.nd.MultiBoxDetection``: the rows must be the same rows in the same
  order, boxes and scores within 1e-6 (``exp`` of onnxruntime and glibc differ by an ulp), including
  inputs with many exactly equal scores, which both order by lower anchor index.
  Whole models run their convolutions in two libraries (oneDNN through MXNet, MLAS in onnxruntime), so
  scores differ by ~1e-7: the rows are compared in order with :data:`ATOL`; the inputs are seeded, and
  on them no two candidates are close enough for that difference to swap them.

Models: untrained SSDs at 128 px whose class heads are scaled up (spread scores, so NMS and the thresholds
decide something): the main job's ``lite`` network class-aware, ``tiny`` class-agnostic
(``force_suppress``); a GluonCV zoo SSD
(``ssd_512_mobilenet1.0_voc``, random weights, ``pretrained=False``) imported by ``deploy.py
--gluoncv-zoo``. Batches of 3 images.
"""
import importlib.util
import json
import os

import mxnet as mx
import numpy as np
import pytest

import ssdkit  # noqa: F401
from ssdkit.api.deploy import deploy_gluoncv_zoo, deploy_model
from ssdkit.api.evaluate import evaluate_detector
from ssdkit.api.family import family_of
from ssdkit.api.inference import InferenceOverrides
from ssdkit.api.model_files import load_inference_model
from ssdkit.api.onnx_detection import DetectionSettings, detection_nodes
from ssdkit.api.onnx_export import META_KEY
from ssdkit.api.onnx_runtime import OnnxDetectionModel
from ssdkit.config import apply_overrides, load_config
from ssdkit.dataset.synthetic import make_synthetic_dataset
from ssdkit.detector import Detector, list_images
from ssdkit.engine.evaluator import bind_inference
from ssdkit.errors import InputError, MissingFileError

from untrained_models import write_untrained_checkpoint

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["circle", "ring", "box", "triangle", "star", "cross"]
ATOL = 1e-5
"""Whole-model tolerance on scores and normalised box coordinates (see the module docstring)."""
BATCH = 3


def _script(name):
    spec = importlib.util.spec_from_file_location("script_" + name, os.path.join(REPO, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _untrained_ssd(prefix, *, force_suppress=False, network="tiny"):
    """An untrained SSD at 128 px with He-scaled random convolutions (``write_untrained_checkpoint``'s small
    weights fade through the deep depthwise ``lite`` body, leaving all scores equal to 1/(C+1) up to
    rounding): spread scores, so the thresholds and NMS decide something."""
    config = apply_overrides(load_config("tiny_256_synthetic"), {
        "model.network": network, "model.data_shape": 128, "model.force_suppress": force_suppress})
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    write_untrained_checkpoint(prefix, config, CLASSES)
    blob = mx.nd.load(prefix + "-0001.params")
    rng = np.random.default_rng(11)
    for name, value in blob.items():
        if name.endswith("weight") and value.ndim == 4:
            blob[name] = mx.nd.array(rng.normal(0, np.sqrt(2.0 / np.prod(value.shape[1:])), value.shape))
    mx.nd.save(prefix + "-0001.params", blob)
    return prefix


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Deploy models of the tiny SSD (class-aware and class-agnostic), MXNet and ONNX, and test images."""
    root = tmp_path_factory.mktemp("onnx")
    synthetic = make_synthetic_dataset(str(root / "syn"), num_train=2, num_test=6, seed=4, image_size=(96, 160))
    out = {"synthetic": synthetic, "images": list_images(synthetic.image_dir)[:BATCH]}
    for kind, agnostic, network in (("aware", False, "lite"), ("agnostic", True, "tiny")):
        prefix = _untrained_ssd(str(root / kind / "ssd"), force_suppress=agnostic, network=network)
        deploy_model(prefix, str(root / kind / "deploy"), epoch=1)
        written = deploy_model(prefix, str(root / kind / "deploy"), epoch=1, format="onnx")
        assert written["onnx"] == str(root / kind / "deploy.onnx")
        out[kind] = {"prefix": prefix, "deploy": str(root / kind / "deploy"), "onnx": written["onnx"]}
    return out


def _batch(deploy, images):
    """``(len(images), 3, S, S)`` network input of the test images for the deploy model ``deploy`` (its meta's
    size and normalisation, the Detector's preprocessing)."""
    from ssdkit.api.data import meta_normalization
    from ssdkit.dataset.image import load_image_rgb

    meta = json.load(open(deploy + "-meta.json"))
    family = family_of(meta)
    return np.stack([family.preprocess(meta, load_image_rgb(p), meta_normalization(meta)) for p in images])


def _mxnet_rows(deploy, x, overrides=None):
    symbol, arg, aux, _meta = load_inference_model(deploy, deploy=True, overrides=overrides)
    mod = bind_inference(symbol, arg, aux, [("data", x.shape)], [mx.cpu()])
    mod.forward(mx.io.DataBatch(data=[mx.nd.array(x)]), is_train=False)
    return mod.get_outputs()[0].asnumpy()


def _assert_same_rows(got, want):
    """Same shape, the same rows in the same order: class ids exact (padding -1 included), scores and
    boxes within ATOL."""
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[..., 0], want[..., 0])
    np.testing.assert_allclose(got[..., 1:], want[..., 1:], rtol=0, atol=ATOL)


# --- the detection step alone, with identical inputs -----------------------------------------------

def _detection_only(settings, anchors, num_channels):
    nodes, inits = detection_nodes("cls_prob", "loc_pred", anchors, settings)
    n, value = len(anchors), onnx.helper.make_tensor_value_info
    inputs = [value("cls_prob", onnx.TensorProto.FLOAT, [None, num_channels, n]),
              value("loc_pred", onnx.TensorProto.FLOAT, [None, n * 4])]
    outputs = [value("detections", onnx.TensorProto.FLOAT, [None, None, 6])]
    graph = onnx.helper.make_graph(nodes, "detection", inputs, outputs, inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _detection_inputs(rng, batch, classes, n, ties):
    logits = rng.normal(0, 2, (batch, classes + 1, n))
    centre, size = rng.uniform(0.1, 0.9, (n, 2)), rng.uniform(0.05, 0.4, (n, 2))
    if ties:        # few distinct logits and anchors: many exactly equal scores, many equal boxes
        logits, centre, size = np.round(logits), np.round(centre * 4) / 4, np.round(size * 8) / 8 + 0.05
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    loc = rng.normal(0, 1, (batch, n * 4)) * (0 if ties else 1)
    anchors = np.concatenate([centre - size / 2, centre + size / 2], 1)
    return prob.astype(np.float32), loc.astype(np.float32), anchors.astype(np.float32)


@pytest.mark.parametrize("force_suppress", [False, True], ids=["class-aware", "class-agnostic"])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("nms_topk,max_detections,threshold", [(400, 100, 0.01), (-1, 1000, 0.3), (50, 20, 0.01),
                                                               (120, -1, 0.05)])
def test_detection_step_equals_multibox_detection(rng, force_suppress, ties, nms_topk, max_detections, threshold):
    classes, n = 4, 500
    prob, loc, anchors = _detection_inputs(rng, BATCH, classes, n, ties)
    settings = DetectionSettings(num_classes=classes, threshold=threshold, nms_threshold=0.45, nms_topk=nms_topk,
                                 max_detections=max_detections, force_suppress=force_suppress)
    got = _detection_only(settings, anchors, classes + 1).run(None, {"cls_prob": prob, "loc_pred": loc})[0]
    want = mx.nd.MultiBoxDetection(mx.nd.array(prob), mx.nd.array(loc), mx.nd.array(anchors[None]),
                                   threshold=threshold, nms_threshold=0.45, nms_topk=nms_topk,
                                   max_detections=max_detections, force_suppress=force_suppress).asnumpy()
    if max_detections == -1:
        # one row per anchor: the kept rows (cls_id >= 0) are the operator's; its other rows hold
        # removed candidates marked -1, ours rows of -1
        assert got.shape == want.shape
        for g, w in zip(got, want):
            g, w = g[g[:, 0] >= 0], w[w[:, 0] >= 0]
            assert len(w) > 0
            _assert_close_rows(g, w)
        return
    assert (want[:, :, 0] >= 0).sum(axis=1).min() > 0
    _assert_close_rows(got, want)


@pytest.mark.parametrize("background_id", [-1, 2])
def test_detection_step_honours_background_id(rng, background_id):
    """Another background channel (or none) shifts the class ids as MultiBoxDetection does."""
    classes, n = 4, 300
    prob, loc, anchors = _detection_inputs(rng, 2, classes, n, ties=False)
    num_classes = classes + 1 if background_id < 0 else classes
    settings = DetectionSettings(num_classes=num_classes, nms_threshold=0.45, nms_topk=200, max_detections=50,
                                 background_id=background_id)
    got = _detection_only(settings, anchors, classes + 1).run(None, {"cls_prob": prob, "loc_pred": loc})[0]
    want = mx.nd.MultiBoxDetection(mx.nd.array(prob), mx.nd.array(loc), mx.nd.array(anchors[None]),
                                   nms_threshold=0.45, nms_topk=200, max_detections=50,
                                   background_id=background_id).asnumpy()
    assert want[:, :, 0].max() == num_classes - 1
    _assert_close_rows(got, want)


def _assert_close_rows(got, want):
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[..., 0], want[..., 0])
    np.testing.assert_allclose(got[..., 1:], want[..., 1:], rtol=0, atol=1e-6)


def test_detection_step_nms_suppresses_at_iou_equal_to_the_threshold():
    """IoU exactly 0.5 with nms_threshold 0.5 is suppressed (``>=``), as MultiBoxDetection does."""
    anchors = np.array([[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.25], [0.6, 0.6, 1, 1]], np.float32)   # IoU(0, 1) = 0.5
    prob = np.array([[[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]]], np.float32)
    loc = np.zeros((1, 12), np.float32)
    settings = DetectionSettings(num_classes=1, nms_threshold=0.5, max_detections=3)
    got = _detection_only(settings, anchors, 2).run(None, {"cls_prob": prob, "loc_pred": loc})[0]
    want = mx.nd.MultiBoxDetection(mx.nd.array(prob), mx.nd.array(loc), mx.nd.array(anchors[None]),
                                   nms_threshold=0.5, max_detections=3).asnumpy()
    np.testing.assert_array_equal(got, want)
    assert got[0, :, 0].tolist() == [0, 0, -1] and got[0, 1, 1] == np.float32(0.7)


# --- whole models -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["aware", "agnostic"])
def test_onnx_model_equals_mxnet_deploy_model(models, kind):
    x = _batch(models[kind]["deploy"], models["images"])
    want = _mxnet_rows(models[kind]["deploy"], x)
    got = OnnxDetectionModel(models[kind]["onnx"]).run(x)
    assert (want[:, :, 0] >= 0).sum() > 20                  # detections exist, in every image
    assert (want[:, :, 0] >= 0).any(axis=1).all()
    _assert_same_rows(got, want)


def test_class_agnostic_export_suppresses_across_classes(models):
    """The two exports differ where they should: class-aware keeps overlapping boxes of other classes."""
    x = _batch(models["aware"]["deploy"], models["images"])
    aware = OnnxDetectionModel(models["aware"]["onnx"]).run(x)
    agnostic = OnnxDetectionModel(models["agnostic"]["onnx"]).run(x)
    assert not np.array_equal(aware, agnostic)


def test_onnx_file_passes_the_checker_and_carries_the_meta(models):
    path = models["aware"]["onnx"]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["detections"]
    ops = {n.op_type for n in model.graph.node}
    assert {"NonMaxSuppression", "TopK", "Exp"} <= ops and not any("MultiBox" in op for op in ops)
    meta = json.loads({p.key: p.value for p in model.metadata_props}[META_KEY])
    deploy_meta = json.load(open(models["aware"]["deploy"] + "-meta.json"))
    assert meta == deploy_meta


def test_detector_and_overrides_equal_mxnet(models):
    """ssdkit.Detector(onnx=True) gives the MXNet deploy model's pixel rows, also with inference overrides
    (they re-set the file's threshold / top-k / rows initializers at load)."""
    images = models["images"]
    onnx_det = Detector(models["aware"]["onnx"], onnx=True, score_thresh=0.05, batch_size=2)
    mx_det = Detector(models["aware"]["deploy"], deploy=True, score_thresh=0.05, batch_size=2)
    for got, want in zip(onnx_det.detect_many(images), mx_det.detect_many(images)):
        assert len(want) > 0 and got.shape == want.shape
        np.testing.assert_array_equal(got[:, 0], want[:, 0])
        np.testing.assert_allclose(got[:, 1], want[:, 1], atol=ATOL)
        np.testing.assert_allclose(got[:, 2:], want[:, 2:], atol=1e-3)      # pixels
    overrides = InferenceOverrides(nms_thresh=0.3, nms_topk=30, score_thresh=0.2, max_detections=7)
    x = _batch(models["aware"]["deploy"], images)
    want = _mxnet_rows(models["aware"]["deploy"], x, overrides)
    model = OnnxDetectionModel(models["aware"]["onnx"], overrides=overrides)
    assert model.meta["max_detections"] == 7 and model.meta["nms_thresh"] == 0.3
    got = model.run(x)
    assert got.shape == (BATCH, 7, 6) and (want[:, :, 1][want[:, :, 0] >= 0] >= 0.2).all()
    _assert_same_rows(got, want)


def test_evaluate_map_through_onnxruntime_equals_mxnet(models, tmp_path):
    config = apply_overrides(load_config("tiny_256_synthetic"), {
        "data.root": models["synthetic"].devkit, "data.val": ("2007/test",), "data.batch_size": 4,
        "data.num_workers": 1, "eval.score_thresh": 0.0, "eval.iou_thresh": 0.1})   # untrained: loose matches
    mxnet_result = evaluate_detector(config, models["aware"]["deploy"], deploy=True, progress=False,
                                     output_dir=str(tmp_path / "mx"))
    onnx_result = evaluate_detector(config, models["aware"]["onnx"], onnx=True, progress=False,
                                    output_dir=str(tmp_path / "onnx"))
    assert mxnet_result["images"] == onnx_result["images"] == 6
    assert mxnet_result["voc07"] > 0
    assert onnx_result["voc07"] == pytest.approx(mxnet_result["voc07"], abs=1e-9)
    assert onnx_result["voc12"] == pytest.approx(mxnet_result["voc12"], abs=1e-9)
    assert onnx_result["coco"]["AP"] == pytest.approx(mxnet_result["coco"]["AP"], abs=1e-9)
    with pytest.raises(InputError, match="test-shape"):
        evaluate_detector(apply_overrides(config, {"model.test_shape": 160}), models["aware"]["onnx"], onnx=True,
                          progress=False, output_dir=str(tmp_path / "x"))


def test_scripts_deploy_evaluate_and_demo_onnx(models, tmp_path, capsys):
    out = str(tmp_path / "cli" / "ssd")
    assert _script("deploy").main(["--prefix", models["aware"]["prefix"], "--epoch", "1", "--output", out,
                                   "--format", "onnx"]) == 0
    assert "ssd.onnx" in capsys.readouterr().out
    assert _script("evaluate").main(["--onnx", out + ".onnx", "--config", "tiny_256_synthetic", "--data-root",
                                     models["synthetic"].devkit, "--val", "2007/test", "--no-progress",
                                     "--output", str(tmp_path / "eval")]) == 0
    assert "VOC07 mAP" in capsys.readouterr().out
    assert _script("demo").main(["--onnx", out + ".onnx", "--images", models["images"][0], "--output",
                                 str(tmp_path / "demo"), "--score-thresh", "0.1"]) == 0
    report = json.load(open(tmp_path / "demo" / "detections.json"))
    assert len(report[models["images"][0]]) > 0


def test_gluoncv_zoo_ssd_exports_the_same_detections(tmp_path):
    """An imported GluonCV zoo SSD (random weights) exports like ssdkit's own models."""
    gluoncv = pytest.importorskip("gluoncv")
    from gluoncv import model_zoo

    name, size = "ssd_512_mobilenet1.0_voc", 512
    net = model_zoo.get_model(name, pretrained=False, pretrained_base=False)
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))                          # shapes the deferred parameters
    x = np.random.RandomState(3).normal(size=(2, 3, size, size)).astype(np.float32)
    rng = np.random.default_rng(5)
    for param in net.collect_params().values():               # He-scaled convolutions: spread scores
        if param.name.endswith("weight") and len(param.shape) == 4:
            param.set_data(mx.nd.array(rng.normal(0, np.sqrt(2.0 / np.prod(param.shape[1:])), param.shape)))
        elif param.name.endswith(("running_var", "moving_var")):   # GluonCV's SSD layers draw these too
            param.set_data(mx.nd.ones(param.shape))
    feats = net.features(mx.nd.array(x))
    for predictors, spread in ((net.class_predictors, 2.0), (net.box_predictors, 1.0)):
        for feat, head in zip(feats, predictors):          # logits of std 2 (unsaturated), offsets of std 1
            scale = spread / float(head(feat).asnumpy().std())
            head.predictor.weight.set_data(head.predictor.weight.data() * scale)
            head.predictor.bias.set_data(head.predictor.bias.data() * scale)
    params = str(tmp_path / (name + ".params"))
    net.save_parameters(params)
    deploy = str(tmp_path / "gcv")
    deploy_gluoncv_zoo(params, name, deploy)
    written = deploy_gluoncv_zoo(params, name, deploy, format="onnx")
    want = _mxnet_rows(deploy, x)
    model = OnnxDetectionModel(written["onnx"])
    got = model.run(x)
    assert (want[:, :, 0] >= 0).sum(axis=1).min() > 10
    _assert_same_rows(got, want)
    assert model.meta["gluoncv_zoo"] == name
    del gluoncv


# --- refusals ---------------------------------------------------------------------------------------

def test_fpn_int8_and_portable_exports_are_refused(models, tmp_path):
    config = apply_overrides(load_config("fpn_resnet18_synthetic"), {"model.resize_short": 128,
                                                                     "model.resize_long": 160})
    fpn = write_untrained_checkpoint(str(tmp_path / "fpn"), config, CLASSES)
    with pytest.raises(InputError, match="FPN models .* cannot be exported to ONNX: .*FPNProposal.*no ONNX"):
        deploy_model(fpn, str(tmp_path / "fpn_out"), epoch=1, format="onnx")
    with pytest.raises(InputError, match="--portable"):
        deploy_model(models["aware"]["prefix"], str(tmp_path / "p"), epoch=1, format="onnx", portable=True)
    from ssdkit.api.quantize import Calibration
    with pytest.raises(InputError, match="--int8"):
        deploy_model(models["aware"]["prefix"], str(tmp_path / "q"), epoch=1, format="onnx",
                     int8=Calibration(data=models["synthetic"].image_dir, images=1))
    with pytest.raises(InputError, match="format must be one of"):
        deploy_model(models["aware"]["prefix"], str(tmp_path / "r"), epoch=1, format="tflite")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".onnx")]


def test_loading_bad_onnx_files_names_the_fix(tmp_path):
    with pytest.raises(MissingFileError, match="--format onnx"):
        OnnxDetectionModel(str(tmp_path / "none.onnx"))
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "plain",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(InputError, match="not written by deploy.py --format onnx"):
        OnnxDetectionModel(str(tmp_path / "plain.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    with pytest.raises(InputError, match="not a readable ONNX file"):
        OnnxDetectionModel(str(tmp_path / "junk.onnx"))


def test_folded_anchors_equal_the_graphs_anchor_output(models, monkeypatch):
    """The anchors folded from the priors' inferred input shapes equal a forward pass of the anchor graph
    (the fallback for other layouts)."""
    from ssdkit.api import onnx_export

    symbol, arg, aux, meta = load_inference_model(models["aware"]["deploy"], deploy=True)
    anchor_output = symbol.get_internals()["multibox_anchors_output"]
    shape = (1, 3, meta["data_shape"], meta["data_shape"])
    folded = onnx_export._anchors(anchor_output, shape, arg, aux)
    monkeypatch.setattr(onnx_export, "_prior_layers", lambda nodes, head: None)
    forward = onnx_export._anchors(anchor_output, shape, arg, aux)
    assert folded.shape == (forward.shape[0], 4) and forward.shape[0] > 1000
    np.testing.assert_array_equal(folded, forward)
