"""Inference settings given to evaluate, deploy, demo and ssdkit.Detector reach the detection operator of
the graph that runs (issue 15, item 3), for SSD and FPN models alike; a setting a model cannot honour,
and evaluate's model flags that differ from the trained model, are refused with a message instead of
being ignored; train's family-specific flags reach the family's setting or are refused.

The models are untrained (random weights of the right shapes written straight to ``.params``): the tests
check where each value goes, not accuracy.
"""
import importlib.util
import json
import os

import mxnet as mx
import pytest

import ssdkit  # noqa: F401
from ssdkit.api import evaluate as evaluate_api
from ssdkit.api.deploy import deploy_model
from ssdkit.api.family import family_of
from ssdkit.api.inference import InferenceOverrides, detection_attrs_of
from ssdkit.cli import config_from_args, make_parser
from ssdkit.config import apply_overrides, load_config
from ssdkit.dataset.synthetic import make_synthetic_dataset
from ssdkit.detector import Detector
from ssdkit.errors import InputError

from untrained_models import write_untrained_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["circle", "ring", "box", "triangle", "star", "cross"]
DETECTION_OPS = ("MultiBoxDetection", "_contrib_MultiBoxDetection", "RCNNDetection")

# override field -> (flag, value, detection attribute of SSD, of FPN)
SETTINGS = {
    "nms_thresh": ("--nms-thresh", 0.3, "nms_threshold", "nms_threshold"),
    "nms_topk": ("--nms-topk", 7, "nms_topk", None),          # FPN: RCNNDetection has no top-k
    "score_thresh": ("--score-thresh", 0.2, "threshold", "score_threshold"),
    "max_detections": ("--max-detections", 5, "max_detections", "max_detections"),
}


def _script(name):
    """The top-level script ``name.py`` as a module (its ``main(argv)`` is the command line)."""
    spec = importlib.util.spec_from_file_location("script_" + name, os.path.join(REPO, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(family, root=""):
    if family == "fpn":
        config = apply_overrides(load_config("fpn_resnet18_synthetic"), {
            "model.resize_short": 128, "model.resize_long": 160, "data.batch_size": 2})
    else:
        config = apply_overrides(load_config("tiny_256_synthetic"), {"model.data_shape": 128,
                                                                      "data.batch_size": 2})
    return apply_overrides(config, {"data.root": root, "data.num_workers": 1}) if root else config


def _untrained(prefix, family):
    """An untrained checkpoint of ``family``'s test network at ``prefix`` (all of CLASSES)."""
    return write_untrained_checkpoint(prefix, _config(family), CLASSES)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("override_models")
    synthetic = make_synthetic_dataset(str(root / "syn"), num_train=2, num_test=2, seed=3, image_size=(96, 128))
    out = {"synthetic": synthetic}
    for family in ("ssd", "fpn"):
        out[family] = _untrained(str(root / family), family)
        out[family + "_deploy"] = str(root / (family + "_deploy"))
        deploy_model(out[family], out[family + "_deploy"], epoch=1)
    return out


def _attrs(symbol):
    return detection_attrs_of(symbol, DETECTION_OPS)


def _rows(symbol, family):
    """K of the graph's ``(B, K, 6)`` detections for one image."""
    shapes = {"data": (1, 3, 128, 128)} if family == "ssd" else {"data": (1, 3, 192, 192), "im_info": (1, 3)}
    _, out_shapes, _ = symbol.infer_shape(**shapes)
    return out_shapes[0][1]


class _Captured(Exception):
    pass


def _run_evaluate(models, family, argv, monkeypatch):
    """Run ``evaluate.py argv`` until it binds its graph; return the graph (evaluation stops there)."""
    seen = {}

    def capture(symbol, *args, **kwargs):
        seen["symbol"] = symbol
        raise _Captured()

    monkeypatch.setattr(evaluate_api, "bind_inference", capture)
    config = "fpn_resnet18_synthetic" if family == "fpn" else "tiny_256_synthetic"
    with pytest.raises(_Captured):
        _script("evaluate").main(["--config", config, "--data-root", models["synthetic"].devkit, "--num-workers",
                                  "1", "--epoch", "1", "--no-progress"] + argv)
    return seen["symbol"]


def _run_deploy(models, family, argv, tmp_path):
    out = str(tmp_path / "dep")
    assert _script("deploy").main(["--prefix", models[family], "--epoch", "1", "--output", out] + argv) == 0
    return mx.sym.load(out + "-symbol.json"), json.load(open(out + "-meta.json"))


def _run_demo(models, family, argv, tmp_path, monkeypatch, *, deploy=False):
    module = _script("demo")
    made = []

    class Recording(Detector):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(module, "Detector", Recording)
    source = ["--deploy", models[family + "_deploy"]] if deploy else ["--prefix", models[family], "--epoch", "1"]
    image = os.path.join(models["synthetic"].image_dir, sorted(os.listdir(models["synthetic"].image_dir))[0])
    assert module.main(source + ["--images", image, "--output", str(tmp_path / "demo")] + argv) == 0
    assert len(json.load(open(tmp_path / "demo" / "detections.json"))) == 1
    return made[0]


def _meta_value(meta, family, field):
    if family == "ssd":
        return meta[field]
    return meta["fpn"]["test_" + {"nms_thresh": "nms_threshold", "score_thresh": "score_threshold",
                                  "max_detections": "max_detections"}[field]]


@pytest.mark.parametrize("family", ["ssd", "fpn"])
@pytest.mark.parametrize("field", sorted(SETTINGS))
@pytest.mark.parametrize("script", ["evaluate", "evaluate_deploy", "deploy", "demo", "demo_deploy", "Detector",
                                    "Detector_deploy"])
def test_inference_flag_reaches_the_detection_operator(models, script, field, family, tmp_path, monkeypatch):
    flag, value, ssd_attr, fpn_attr = SETTINGS[field]
    attr = ssd_attr if family == "ssd" else fpn_attr
    argv = [flag, str(value)]
    deploy = script.endswith("_deploy")
    if attr is None:        # not honourable: refused with a message, nothing written
        with pytest.raises(InputError, match="FPN models have no NMS top-k"):
            if script.startswith("evaluate"):
                _run_evaluate(models, family, argv + (["--deploy", models[family + "_deploy"]] if deploy else
                                                      ["--prefix", models[family]]), monkeypatch)
            elif script == "deploy":
                _run_deploy(models, family, argv, tmp_path)
            elif script.startswith("demo"):
                _run_demo(models, family, argv, tmp_path, monkeypatch, deploy=deploy)
            else:
                Detector(models[family + "_deploy"] if deploy else models[family], epoch=None if deploy else 1,
                         deploy=deploy, inference=InferenceOverrides(**{field: value}))
        assert not os.path.exists(str(tmp_path / "dep") + "-meta.json")
        return
    if script.startswith("evaluate"):
        symbol = _run_evaluate(models, family, argv + (["--deploy", models[family + "_deploy"]] if deploy else
                                                       ["--prefix", models[family]]), monkeypatch)
    elif script == "deploy":
        symbol, meta = _run_deploy(models, family, argv, tmp_path)
        assert _meta_value(meta, family, field) == value      # the deploy meta records it
    elif script.startswith("demo"):
        detector = _run_demo(models, family, argv, tmp_path, monkeypatch, deploy=deploy)
        symbol = detector.symbol
        if field == "score_thresh":
            assert detector.score_thresh == value            # and the drawn detections' threshold
    else:
        detector = Detector(models[family + "_deploy"] if deploy else models[family], epoch=None if deploy else 1,
                            deploy=deploy, inference=InferenceOverrides(**{field: value}))
        symbol = detector.symbol
        assert _meta_value(detector.meta, family, field) == value
    assert float(_attrs(symbol)[attr]) == value
    if field == "max_detections":
        assert _rows(symbol, family) == value


@pytest.mark.parametrize("family", ["ssd", "fpn"])
def test_without_flags_the_models_own_settings_run(models, family, tmp_path, monkeypatch):
    """No flag given: the trained settings (SSD nms 0.45 / top-k 400, FPN 0.5 / score 0.05), as before."""
    symbol = _run_evaluate(models, family, ["--prefix", models[family]], monkeypatch)
    attrs = _attrs(symbol)
    if family == "ssd":
        assert float(attrs["nms_threshold"]) == 0.45 and int(attrs["nms_topk"]) == 400
        assert "threshold" not in attrs and _rows(symbol, family) > 100     # one row per anchor
    else:
        assert float(attrs["nms_threshold"]) == 0.5 and float(attrs["score_threshold"]) == 0.05
        assert int(attrs["max_detections"]) == 100
    deployed = mx.sym.load(models[family + "_deploy"] + "-symbol.json")
    assert _rows(deployed, family) == 100
    assert _rows(Detector(models[family + "_deploy"], deploy=True).symbol, family) == 100
    assert _rows(Detector(models[family], epoch=1).symbol, family) == 100


def test_portable_deploy_takes_nms_settings_and_refuses_max_detections(models, tmp_path):
    out = str(tmp_path / "portable")
    assert _script("deploy").main(["--prefix", models["ssd"], "--epoch", "1", "--output", out, "--portable",
                                   "--nms-thresh", "0.3", "--nms-topk", "7", "--score-thresh", "0.2"]) == 0
    attrs = detection_attrs_of(mx.sym.load(out + "-symbol.json"), ("_contrib_MultiBoxDetection",))
    assert (float(attrs["nms_threshold"]), int(attrs["nms_topk"]), float(attrs["threshold"])) == (0.3, 7, 0.2)
    with pytest.raises(InputError, match="portable deploy graph .* max_detections 5 cannot be honoured"):
        _script("deploy").main(["--prefix", models["ssd"], "--epoch", "1", "--output", str(tmp_path / "p2"),
                                "--portable", "--max-detections", "5"])
    assert not os.path.exists(str(tmp_path / "p2") + "-meta.json")
    # a portable deploy model loaded with a row count: refused too
    with pytest.raises(InputError, match="max_detections cannot be set"):
        Detector(out, deploy=True, max_detections=5)
    # overrides of a portable deploy model reach contrib's attributes
    det = Detector(out, deploy=True, inference=InferenceOverrides(nms_thresh=0.6))
    assert float(detection_attrs_of(det.symbol, ("_contrib_MultiBoxDetection",))["nms_threshold"]) == 0.6


@pytest.mark.parametrize("family, flag, value, message", [
    ("ssd", "--network", "lite", "--network lite differs from the model's tiny"),
    ("ssd", "--data-shape", "256", "--data-shape 256 differs from the model's 128"),
    ("ssd", "--num-class", "3", "--num-class 3 differs from the model's 6|is 3 but class_names lists 6"),
    ("ssd", "--class-names", "a,b,c,d,e,f", "--class-names a,b,c,d,e,f differs"),
    ("ssd", "--resize-short", "128", "--resize-short does not apply to the SSD model"),
    ("fpn", "--resize-long", "200", "--resize-long 200 differs from the model's 160"),
    ("fpn", "--data-shape", "128", "--data-shape does not apply to the FPN model"),
    ("fpn", "--test-shape", "128", "--test-shape does not apply to the FPN model"),
])
def test_evaluate_refuses_model_flags_that_differ_from_the_model(models, family, flag, value, message, monkeypatch):
    with pytest.raises(InputError, match=message):
        _run_evaluate(models, family, ["--prefix", models[family], flag, value], monkeypatch)


@pytest.mark.parametrize("family, argv", [
    ("ssd", ["--network", "tiny", "--data-shape", "128", "--num-class", "6", "--class-names", ",".join(CLASSES)]),
    ("fpn", ["--network", "fpn_resnet18", "--resize-short", "128", "--resize-long", "160", "--num-class", "6"]),
])
def test_evaluate_accepts_model_flags_equal_to_the_model(models, family, argv, monkeypatch):
    symbol = _run_evaluate(models, family, ["--prefix", models[family]] + argv, monkeypatch)
    assert _attrs(symbol)


def test_evaluate_test_shape_sets_the_ssd_input(models, monkeypatch):
    symbol = _run_evaluate(models, "ssd", ["--prefix", models["ssd"], "--test-shape", "160"], monkeypatch)
    _, out_shapes, _ = symbol.infer_shape(data=(1, 3, 160, 160))
    assert out_shapes[0][0] == 1


def test_evaluate_score_thresh_is_also_the_kept_detections_threshold(models, monkeypatch):
    seen = {}
    original = evaluate_api.family_of

    def spy(meta):
        family = original(meta)
        seen["meta"] = meta
        return family

    monkeypatch.setattr(evaluate_api, "family_of", spy)
    config = _config("ssd", models["synthetic"].devkit)
    result = evaluate_api.evaluate_detector(config, models["ssd"], epoch=1, progress=False,
                                            output_dir=None, inference=InferenceOverrides(score_thresh=0.9))
    assert seen["meta"]["score_thresh"] == 0.9
    # untrained weights score about 1/7 everywhere: nothing is kept at 0.9
    assert result["voc07"] == 0.0 and result["images"] == 2


def _train_config(argv):
    return config_from_args(make_parser("train", training=True).parse_args(argv), training=True)


def test_train_nms_thresh_reaches_the_fpn_graph():
    config = _train_config(["--config", "fpn_resnet18_synthetic", "--resize-short", "128", "--resize-long", "160",
                            "--nms-thresh", "0.35"])
    assert config.fpn.test_nms_threshold == 0.35
    _, inference = family_of(config).symbols(config, 3)
    assert float(_attrs(inference)["nms_threshold"]) == 0.35
    config = _train_config(["--config", "tiny_256_synthetic", "--nms-thresh", "0.35"])
    assert config.model.nms_thresh == 0.35
    _, inference = family_of(config).symbols(config, 3)
    assert float(_attrs(inference)["nms_threshold"]) == 0.35


@pytest.mark.parametrize("argv, message", [
    (["--config", "fpn_resnet18_synthetic", "--data-shape", "128"], "--data-shape does not apply to FPN network"),
    (["--network", "fpn_resnet18", "--overlap-threshold", "0.4", "--test-shape", "64"],
     "--test-shape, --overlap-threshold do not apply to FPN network"),
    (["--config", "tiny_256_synthetic", "--resize-short", "128"], "--resize-short does not apply to SSD network"),
])
def test_train_refuses_flags_of_the_other_family(argv, message):
    with pytest.raises(InputError, match=message):
        _train_config(argv)


def test_check_expected_names_the_flag_and_both_values(models):
    meta = json.load(open(models["ssd"] + "-meta.json"))
    family = family_of(meta)
    evaluate_api.check_expected(family, meta, {"model.num_classes": 6, "model.test_shape": 160}, source="m")
    with pytest.raises(InputError, match="--num-class 3 differs from the model's 6 \\(m\\)"):
        evaluate_api.check_expected(family, meta, {"model.num_classes": 3}, source="m")


def _node_attrs(symbol, op):
    return [dict(n.get("attrs", {})) for n in json.loads(symbol.tojson())["nodes"] if n.get("op") == op]


def _num_classes_of(train_symbol, family, config):
    """C of a training graph: the class logits' channels (SSD ``cls_prob (B, C+1, N)``, FPN
    ``rcnn_cls_prob (R, C+1)``) minus background."""
    shapes = family_of(config).input_shapes(config, 2)
    if family == "ssd":
        shapes = dict(shapes, label=(2, 4, 6))
    _, out_shapes, _ = train_symbol.infer_shape(**shapes)
    names = train_symbol.list_outputs()
    key = "cls_prob_output" if family == "ssd" else "rcnn_cls_prob_output"
    shape = out_shapes[names.index(key)]
    return (shape[1] if family == "ssd" else shape[-1]) - 1


# train.py's model flags: (family, flag, value, check(config, train symbol, inference symbol, meta))
TRAIN_FLAGS = [
    ("ssd", "--network", "lite", lambda c, t, i, m: m["network"] == "lite" and any(
        n["name"].startswith("stage4_unit3_pw") for n in json.loads(i.tojson())["nodes"])),
    ("ssd", "--data-shape", "96", lambda c, t, i, m: m["data_shape"] == 96
     and family_of(c).input_shapes(c, 1)["data"] == (1, 3, 96, 96)),
    ("ssd", "--test-shape", "160", lambda c, t, i, m: m["test_shape"] == 160
     and family_of(c).inference_shapes(m, 1) == [("data", (1, 3, 160, 160))]),
    ("ssd", "--nms-thresh", "0.35", lambda c, t, i, m: m["nms_thresh"] == 0.35
     and float(_node_attrs(i, "MultiBoxDetection")[0]["nms_threshold"]) == 0.35
     and float(_node_attrs(t, "MultiBoxDetection")[0]["nms_threshold"]) == 0.35),
    ("ssd", "--overlap-threshold", "0.4",
     lambda c, t, i, m: float(_node_attrs(t, "MultiBoxTarget")[0]["overlap_threshold"]) == 0.4
     and m["overlap_threshold"] == 0.4),
    ("ssd", "--negative-mining-ratio", "2",
     lambda c, t, i, m: float(_node_attrs(t, "MultiBoxTarget")[0]["negative_mining_ratio"]) == 2.0
     and m["negative_mining_ratio"] == 2.0),
    ("ssd", "--num-class", "3", lambda c, t, i, m: _num_classes_of(t, "ssd", c) == 3
     and m["class_names"] == ["class0", "class1", "class2"]),
    ("ssd", "--class-names", "a,b", lambda c, t, i, m: _num_classes_of(t, "ssd", c) == 2
     and m["class_names"] == ["a", "b"]),
    ("fpn", "--network", "fpn_resnet50", lambda c, t, i, m: m["network"] == "fpn_resnet50" and any(
        n["name"].startswith("stage4_unit3") for n in json.loads(i.tojson())["nodes"])),
    ("fpn", "--resize-long", "200", lambda c, t, i, m: (m["resize_long"], m["image_shape"]) == (200, [256, 256])
     and family_of(c).input_shapes(c, 1)["data"] == (1, 3, 256, 256)),
    ("fpn", "--resize-short", "96", lambda c, t, i, m: m["resize_short"] == 96),
    ("fpn", "--nms-thresh", "0.35", lambda c, t, i, m: m["fpn"]["test_nms_threshold"] == 0.35
     and float(_node_attrs(i, "RCNNDetection")[0]["nms_threshold"]) == 0.35),
    ("fpn", "--num-class", "3", lambda c, t, i, m: _num_classes_of(t, "fpn", c) == 3),
    ("fpn", "--class-names", "a,b", lambda c, t, i, m: _num_classes_of(t, "fpn", c) == 2
     and m["class_names"] == ["a", "b"]),
]


@pytest.mark.parametrize("family, flag, value, check", TRAIN_FLAGS, ids=["%s%s" % (f, g) for f, g, _, _ in TRAIN_FLAGS])
def test_train_model_flag_reaches_the_graph_and_the_meta(family, flag, value, check):
    from ssdkit.api.data import class_names_of
    from ssdkit.api.model_files import model_meta

    base = (["--config", "fpn_resnet18_synthetic", "--resize-short", "128", "--resize-long", "160",
             "--batch-size", "2"] if family == "fpn" else ["--config", "tiny_256_synthetic", "--data-shape", "128"])
    if flag in ("--num-class", "--class-names"):
        base += ["--class-names", ""] if flag == "--num-class" else []
    config = _train_config(base + [flag, value])
    names = class_names_of(config)
    train, inference = family_of(config).symbols(config, len(names))
    assert check(config, train, inference, model_meta(config, names))
