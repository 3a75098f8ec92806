"""Bad input to the scripts (issue 21): one ``error: ...`` line and exit status 2 instead of a traceback;
parameters that do not fit their meta's graph refused by deploy / evaluate / Detector (nothing written);
demo skips an unreadable image and reports the others.

The models are untrained: parameters of the right (or deliberately wrong) shapes written straight to
``.params`` files, so no test here trains.
"""
import json
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

import ssdkit  # noqa: F401
from ssdkit.api.deploy import deploy_model
from ssdkit.api.family import family_of
from ssdkit.api.param_check import check_params
from ssdkit.cli import run_script
from ssdkit.config import apply_overrides, load_config
from ssdkit.dataset.synthetic import make_synthetic_dataset
from ssdkit.detector import Detector
from ssdkit.errors import InputError, MissingFileError, ParameterMismatchError

from untrained_models import write_untrained_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["circle", "ring", "box", "triangle", "star", "cross"]


def _config(network):
    if network == "fpn":
        return apply_overrides(load_config("fpn_resnet18_synthetic"), {
            "model.resize_short": 128, "model.resize_long": 160, "data.batch_size": 2})
    return apply_overrides(load_config("tiny_256_synthetic"), {"model.data_shape": 128})


def _untrained(prefix, network="ssd", *, trained_classes=6, meta_classes=6):
    """An untrained checkpoint at ``prefix`` with ``trained_classes`` classes whose meta names ``meta_classes``."""
    return write_untrained_checkpoint(prefix, _config(network), CLASSES[:meta_classes],
                                      trained_classes=CLASSES[:trained_classes])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"good": _untrained(str(root / "good")),
            "mismatch": _untrained(str(root / "mismatch"), trained_classes=6, meta_classes=5)}


def _run(args):
    return subprocess.run([sys.executable] + args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=300)


def _user_error(proc):
    """The one ``error:`` line of a script that ended on a user error (exit 2, no traceback)."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


# --- the error format ---------------------------------------------------------------------------------

def test_run_script_prints_user_errors_and_keeps_tracebacks_of_defects(capsys):
    def fails(exc):
        def main(argv):
            raise exc
        return main

    assert run_script(lambda argv: 0) == 0
    assert run_script(fails(InputError("data.root: no such folder"))) == 2
    assert capsys.readouterr().err == "error: data.root: no such folder\n"
    # a ValueError that no validation site marked, or any other exception, is a defect: it propagates
    with pytest.raises(ValueError, match="a bug"):
        run_script(fails(ValueError("a bug")))
    with pytest.raises(KeyError):
        run_script(fails(KeyError("network")))
    assert capsys.readouterr().err == ""


def test_cli_user_errors_are_one_line(models, tmp_path):
    synthetic = make_synthetic_dataset(str(tmp_path / "syn"), num_train=4, num_test=2, seed=3, image_size=(96, 128))
    cases = [
        (["train.py", "--config", "no_such_preset", "--prefix", str(tmp_path / "t")], "no preset named"),
        (["train.py", "--config", "tiny_256_synthetic", "--data-root", synthetic.devkit, "--class-names",
          "circle,ring", "--prefix", str(tmp_path / "t"), "--epochs", "1", "--no-progress"], "unknown class name"),
        (["evaluate.py", "--prefix", str(tmp_path / "nothing")], "nothing-meta.json not found"),
        (["demo.py", "--prefix", models["good"], "--images", str(tmp_path / "no_such_folder")],
         "neither an image file nor a folder"),
    ]
    for args, fragment in cases:
        line = _user_error(_run(args))
        assert fragment in line, (args, line)
    assert not os.path.exists(str(tmp_path / "t") + "-meta.json")


def test_missing_weight_files_are_user_errors(tmp_path):
    from ssdkit.api.deploy import deploy_gluoncv_zoo
    from ssdkit.api.train import initial_weights

    missing = str(tmp_path / "nothing.params")
    with pytest.raises(MissingFileError, match="nothing.params not found"):
        deploy_gluoncv_zoo(missing, "ssd_512_resnet50_v1_voc", str(tmp_path / "out"))
    for key in ("model.finetune", "model.pretrained"):
        config = apply_overrides(_config("ssd"), {key: missing})
        with pytest.raises(MissingFileError, match="%s: weight file .*nothing.params not found" % key):
            initial_weights(config, None, (1, 3, 128, 128))
    assert not os.listdir(tmp_path)


# --- parameters that do not fit the graph -------------------------------------------------------------

def test_deploy_refuses_parameters_of_another_class_count(models, tmp_path):
    out = tmp_path / "deploy" / "ssd"
    line = _user_error(_run(["deploy.py", "--prefix", models["mismatch"], "--epoch", "1", "--output", str(out)]))
    assert "feat0_cls_pred_weight: graph (24, 64, 3, 3), file (28, 64, 3, 3)" in line
    assert "trained with 6 classes, the meta says 5" in line
    assert models["mismatch"] + "-0001.params" in line
    assert not os.path.exists(tmp_path / "deploy")       # nothing written, not even the folder


def test_evaluate_refuses_parameters_of_another_class_count(models, tmp_path):
    line = _user_error(_run(["evaluate.py", "--config", "tiny_256_synthetic", "--prefix", models["mismatch"],
                             "--epoch", "1", "--output", str(tmp_path / "eval"), "--no-progress"]))
    assert "feat0_cls_pred_weight" in line and "trained with 6 classes, the meta says 5" in line
    assert not os.path.exists(tmp_path / "eval")


def test_detector_refuses_a_deploy_model_whose_meta_was_changed(models, tmp_path):
    out = str(tmp_path / "ssd")
    deploy_model(models["good"], out, epoch=1)
    meta = json.load(open(out + "-meta.json"))
    json.dump(dict(meta, class_names=CLASSES[:5]), open(out + "-meta.json", "w"))
    with pytest.raises(ParameterMismatchError, match="trained with 6 classes, the meta says 5") as err:
        Detector(out, deploy=True)
    assert isinstance(err.value, ValueError)        # Python callers may still catch ValueError
    assert any(p.startswith("feat0_cls_pred_bias: graph (24,), file (28,)") for p in err.value.problems)


def test_fpn_deploy_refuses_parameters_of_another_class_count(tmp_path):
    prefix = _untrained(str(tmp_path / "fpn"), "fpn", trained_classes=6, meta_classes=5)
    with pytest.raises(ParameterMismatchError) as err:
        deploy_model(prefix, str(tmp_path / "out" / "fpn"), epoch=1)
    message = str(err.value)
    assert "rcnn_cls_score_weight: graph (6, 256), file (7, 256)" in message
    assert "rcnn_bbox_pred_weight" in message and "trained with 6 classes, the meta says 5" in message
    assert not os.path.exists(tmp_path / "out")


def test_check_params_names_missing_extra_and_shapes(models):
    config = _config("ssd")
    family = family_of(config)
    _, symbol = family.symbols(config, 6)
    meta = json.load(open(models["good"] + "-meta.json"))
    loaded = mx.nd.load(models["good"] + "-0001.params")
    arg = {k[4:]: v for k, v in loaded.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in loaded.items() if k.startswith("aux:")}
    shapes = family.inference_shapes(meta, 1)
    check_params(symbol, arg, aux, shapes, source="x.params", meta=meta)            # fits: no error
    bad_arg = dict(arg, extra_weight=mx.nd.zeros((3,)))
    del bad_arg["conv1_weight"]
    bad_aux = dict(aux, conv1_bn_moving_var=mx.nd.ones((5,)))
    with pytest.raises(ParameterMismatchError) as err:
        check_params(symbol, bad_arg, bad_aux, shapes, source="x.params", meta=meta)
    problems = err.value.problems
    assert "conv1_weight: missing from the file" in problems
    assert "extra_weight: in the file, not in the graph" in problems
    assert any(p.startswith("conv1_bn_moving_var: graph (") and p.endswith("file (5,)") for p in problems)
    assert len(problems) == 3 and "weights of another network than the meta's tiny" in str(err.value)
    # allow_extra (imported files that hold more than the graph): extras are dropped, not refused
    check_params(symbol, dict(arg, extra_weight=mx.nd.zeros((3,))), aux, shapes, source="x", allow_extra=True)


# --- demo on a folder with an unreadable image -------------------------------------------------------

def test_demo_skips_an_unreadable_image_and_reports_the_others(models, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.jpg", "c.png"):
        assert cv2.imwrite(str(images / name), rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    (images / "b.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    out = tmp_path / "demo"
    proc = _run(["demo.py", "--prefix", models["good"], "--epoch", "1", "--images", str(images),
                 "--output", str(out), "--score-thresh", "0.0"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    report = json.load(open(out / "detections.json"))
    assert sorted(report) == [str(images / "a.jpg"), str(images / "c.png")]
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 1 and str(images / "b.jpg") in skipped[0]
    assert "detections of 2 image(s)" in proc.stdout and "1 unreadable image(s) skipped" in proc.stdout
    assert os.path.getsize(out / "c_det.png") > 0 and not os.path.exists(out / "b_det.png")
