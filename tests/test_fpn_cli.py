"""The scripts with an FPN network, end to end on a tiny synthetic set: train, resume, evaluate, deploy,
demo / Detector, and the --portable refusal. fpn_resnet18 at short side 128 / long side 160 (padded
batches of 192 x 192), 8 training images, 2 iterations an epoch: the weights are barely trained, so the
tests check plumbing and equalities, not accuracy."""
import json
import os
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import ssdkit  # noqa: F401
from ssdkit.api.data import load_split
from ssdkit.api.family import FPNFamily, family_of, make_iterator
from ssdkit.api.model_files import inference_symbol, read_meta
from ssdkit.api.train import train_detector
from ssdkit.config import apply_overrides, load_config
from ssdkit.dataset.image import load_image_rgb
from ssdkit.dataset.synthetic import make_synthetic_dataset
from ssdkit.detector import Detector
from ssdkit.engine.checkpoint import latest_epoch, load_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["circle", "ring", "box", "triangle", "star", "cross"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_fpn")
    return make_synthetic_dataset(str(root), num_train=8, num_test=4, seed=5, image_size=(112, 176))


def _run(args, expect=0):
    proc = subprocess.run([sys.executable] + args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)
    assert proc.returncode == expect, proc.stdout[-4000:]
    return proc.stdout


def _flags(synthetic, prefix):
    return ["--config", "fpn_resnet18_synthetic", "--data-root", synthetic.devkit, "--resize-short", "128",
            "--resize-long", "160", "--batch-size", "4", "--num-workers", "1", "--prefix", prefix]


def _config(synthetic, prefix, **overrides):
    return apply_overrides(load_config("fpn_resnet18_synthetic"), dict({
        "data.root": synthetic.devkit, "model.resize_short": 128, "model.resize_long": 160,
        "data.batch_size": 4, "data.num_workers": 1, "runtime.prefix": prefix}, **overrides))


@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory):
    """One epoch (2 iterations) and a validation through the real train.py CLI."""
    prefix = str(tmp_path_factory.mktemp("fpn_run") / "fpn")
    out = _run(["train.py"] + _flags(synthetic, prefix) +
               ["--epochs", "1", "--val-interval", "1", "--no-progress"])
    assert "finished epoch 1" in out
    return prefix


def test_train_cli_writes_checkpoint_meta_and_fpn_losses(trained):
    assert latest_epoch(trained) == 1
    for suffix in ("-symbol.json", "-0001.params", "-0001.states", "-meta.json", "-history.json", "-best.params"):
        assert os.path.exists(trained + suffix), suffix
    meta = read_meta(trained)
    assert meta["network"] == "fpn_resnet18" and meta["family"] == "fpn"
    assert (meta["resize_short"], meta["resize_long"], meta["image_shape"]) == (128, 160, [192, 192])
    assert meta["class_names"] == CLASSES
    assert meta["fpn"]["fpn_channels"] == 128 and meta["fpn"]["rcnn_fc_dim"] == 256     # the preset's [fpn]
    assert "data_shape" not in meta
    (row,) = json.load(open(trained + "-history.json"))
    for name in ("rpn_cls_loss", "rpn_box_loss", "rcnn_cls_loss", "rcnn_box_loss", "rcnn_accuracy", "mAP"):
        assert np.isfinite(row[name]), name
    assert 0 < row["rpn_cls_loss"] < 1.0            # BCE of a near-untrained RPN is about log 2
    # the training graph is the FPN one: data, im_info and label inputs, the FPN losses as outputs
    sym = mx.sym.load(trained + "-symbol.json")
    assert {"data", "im_info", "label"} <= set(sym.list_arguments())
    assert sym.list_outputs()[:4] == ["rpn_cls_loss_output", "rpn_box_loss_output", "rcnn_cls_loss_output",
                                      "rcnn_box_loss_output"]


def test_resume_continues_an_fpn_run(trained, synthetic, tmp_path):
    prefix = str(tmp_path / "fpn")
    for name in os.listdir(os.path.dirname(trained)):
        src = os.path.join(os.path.dirname(trained), name)
        if os.path.isfile(src):
            shutil.copy(src, os.path.join(tmp_path, name))
    cfg = _config(synthetic, prefix, **{"solver.epochs": 2, "runtime.resume": True, "data.val": ()})
    result = train_detector(cfg, progress=False)
    assert result["epoch"] == 2 and latest_epoch(prefix) == 2
    rows = json.load(open(prefix + "-history.json"))
    assert [r["epoch"] for r in rows] == [1, 2]
    first, second = (json.load(open(prefix + "-%04d.json" % e))["iteration"] for e in (1, 2))
    assert second == 2 * first
    # the resumed run started from the epoch-1 weights: they changed, but not from a fresh initialisation
    arg1, _ = load_params(trained + "-0001.params")
    arg2, _ = load_params(prefix + "-0002.params")
    name = "rpn_conv_weight" if "rpn_conv_weight" in arg1 else sorted(arg1)[0]
    diff = np.abs(arg2[name].asnumpy() - arg1[name].asnumpy())
    assert 0 < diff.max() < 0.1 * np.abs(arg1[name].asnumpy()).max() + 1e-3


def test_metric_labels_are_the_records_boxes_normalised(synthetic, tmp_path):
    cfg = _config(synthetic, str(tmp_path / "x"))
    val_set = load_split(cfg, "val")
    batch = next(iter(make_iterator(cfg, "val", val_set)))
    labels = family_of(cfg).metric_labels(batch.label[0].asnumpy(), batch)
    assert len(batch.data) == 2 and batch.data[0].shape == (4, 3, 192, 192)
    for record, rows in zip(val_set.records, labels):
        rows = rows[rows[:, 0] >= 0]
        expected = np.asarray(record.boxes) / [record.width, record.height, record.width, record.height]
        np.testing.assert_array_equal(rows[:, 0], record.classes)
        np.testing.assert_allclose(rows[:, 1:5], expected, atol=2e-3)   # resize rounding of w, h


def test_evaluate_cli_voc_and_coco_match_training_validation(trained, synthetic, tmp_path):
    out = _run(["evaluate.py", "--config", "fpn_resnet18_synthetic", "--data-root", synthetic.devkit,
                "--prefix", trained, "--output", str(tmp_path / "eval"), "--no-progress"])
    assert "VOC07 mAP" in out and "COCO AP" in out
    metrics = json.load(open(tmp_path / "eval" / "metrics.json"))
    (row,) = json.load(open(trained + "-history.json"))
    assert metrics["images"] == 4
    assert metrics["voc07"] == pytest.approx(row["mAP"], abs=1e-6)   # same graph, transform and labels
    assert set(metrics["coco"]) >= {"AP", "AP50", "AP75"}
    results = json.load(open(tmp_path / "eval" / "coco_results.json"))
    assert results and all(len(r["bbox"]) == 4 for r in results)


def _run_graph(symbol, arg, aux, inputs):
    mod = mx.mod.Module(symbol, data_names=["data", "im_info"], label_names=None)
    mod.bind(data_shapes=[("data", inputs[0].shape), ("im_info", inputs[1].shape)], for_training=False)
    mod.set_params(arg, aux, allow_extra=True)
    mod.forward(mx.io.DataBatch([mx.nd.array(x) for x in inputs]), is_train=False)
    return mod.get_outputs()[0].asnumpy()


@pytest.fixture(scope="module")
def deployed(trained, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fpn_deploy") / "fpn")
    _run(["deploy.py", "--prefix", trained, "--output", out, "--max-detections", "50"])
    return out


def test_deploy_equals_the_checkpoint_inference_graph(trained, deployed, synthetic, tmp_path):
    cfg = _config(synthetic, str(tmp_path / "x"))
    batch = next(iter(make_iterator(cfg, "val", load_split(cfg, "val"))))
    inputs = [x.asnumpy() for x in batch.data]
    dep_sym, dep_arg, dep_aux = mx.model.load_checkpoint(deployed, 0)
    assert set(dep_sym.list_arguments()) & {"label", "im_info"} == {"im_info"}
    assert not any(k in dep_arg for k in ("data", "im_info"))
    dep = _run_graph(dep_sym, dep_arg, dep_aux, inputs)
    arg, aux = load_params(trained + "-0001.params")
    ref = _run_graph(inference_symbol(read_meta(trained), max_detections=50), arg, aux, inputs)
    assert dep.shape == (4, 50, 6) and dep.dtype == np.float32
    assert np.sum(dep[:, :, 0] >= 0) > 0
    np.testing.assert_allclose(dep, ref, rtol=1e-5, atol=1e-5)
    meta = read_meta(deployed)
    assert meta["fpn"]["test_max_detections"] == 50 and meta["portable"] is False


def test_detector_and_demo_with_the_deploy_model(deployed, synthetic, tmp_path):
    cfg = _config(synthetic, str(tmp_path / "x"))
    val_set = load_split(cfg, "val")
    paths = [r.path for r in val_set.records[:3]]
    det = Detector(deployed, deploy=True, score_thresh=0.0, batch_size=2)
    results = det.detect_many(paths)       # 3 images in batches of 2: the last batch is padded
    assert len(results) == 3
    # reference: the deploy graph on the validation iterator's batch (its own transform), scaled to pixels
    batch = next(iter(make_iterator(cfg, "val", val_set)))
    sym, arg, aux = mx.model.load_checkpoint(deployed, 0)
    raw = _run_graph(sym, arg, aux, [x.asnumpy() for x in batch.data])
    by_path = {r.path: i for i, r in enumerate(val_set.records)}
    for path, rows in zip(paths, results):
        h, w = load_image_rgb(path).shape[:2]
        assert rows.dtype == np.float32 and rows.ndim == 2 and rows.shape[1] == 6 and len(rows) > 0
        assert np.all(np.diff(rows[:, 1]) <= 0)
        assert rows[:, 2].min() >= -1e-3 and rows[:, 4].max() <= w + 1e-3
        assert rows[:, 3].min() >= -1e-3 and rows[:, 5].max() <= h + 1e-3
        kept = raw[by_path[path]][raw[by_path[path]][:, 0] >= 0]
        np.testing.assert_allclose(rows[:, :2], kept[:, :2], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rows[:, 2:], kept[:, 2:] * [w, h, w, h], rtol=1e-5, atol=1e-3)
    # a portrait array image: the aspect-preserving resize keeps boxes inside its own pixels
    portrait = np.asarray(load_image_rgb(paths[0])).transpose(1, 0, 2).copy()
    rows = det.detect(portrait)
    assert rows[:, 4].max() <= portrait.shape[1] + 1e-3 and rows[:, 5].max() <= portrait.shape[0] + 1e-3
    data, im_info = det.preprocess(portrait)
    assert data.shape[1:] == (int(im_info[0]), int(im_info[1])) and max(im_info[:2]) <= 160

    out = _run(["demo.py", "--deploy", deployed, "--images", synthetic.image_dir, "--limit", "2",
                "--output", str(tmp_path / "demo"), "--score-thresh", "0.0"])
    assert out.count("objects ->") == 2
    assert len(json.load(open(tmp_path / "demo" / "detections.json"))) == 2


def test_portable_deploy_of_fpn_is_a_clear_error(trained, tmp_path):
    out = _run(["deploy.py", "--prefix", trained, "--output", str(tmp_path / "p"), "--portable"], expect=2)
    assert "cannot be deployed with --portable" in out and "FPNProposal" in out
    assert not os.path.exists(str(tmp_path / "p") + "-symbol.json")
    with pytest.raises(ValueError, match="no contrib equivalents"):
        FPNFamily().check_portable(read_meta(trained))
