"""The scripts end to end on a small synthetic dataset: train, resume, evaluate, deploy, portable, demo."""
import json
import os
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest

import ssdkit  # noqa: F401
from ssdkit.api.deploy import deploy_model
from ssdkit.api.data import load_split
from ssdkit.api.family import check_test_shape, family_of, input_size, make_iterator
from ssdkit.api.model_files import inference_symbol, read_meta
from ssdkit.api.train import train_detector
from ssdkit.config import apply_overrides, load_config
from ssdkit.dataset.augment import Normalization
from ssdkit.dataset.synthetic import make_synthetic_dataset
from ssdkit.detector import Detector
from ssdkit.engine.checkpoint import latest_epoch, load_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_dataset(str(root), num_train=24, num_test=8, seed=3, image_size=(128, 160))


def _run(args, cwd=REPO, env=None, timeout=600):
    proc = subprocess.run([sys.executable] + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def _common_flags(synthetic, prefix):
    return ["--config", "tiny_256_synthetic", "--data-root", synthetic.devkit, "--data-shape", "128",
            "--batch-size", "8", "--num-workers", "1", "--prefix", prefix]


@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory):
    """Two epochs through the real train.py CLI."""
    prefix = str(tmp_path_factory.mktemp("run") / "ssd")
    out = _run(["train.py"] + _common_flags(synthetic, prefix) +
               ["--epochs", "2", "--val-interval", "1", "--lr", "0.01", "--no-progress"])
    assert "finished epoch 2" in out
    return prefix


def test_train_cli_writes_checkpoints_and_history(trained):
    assert latest_epoch(trained) == 2
    for suffix in ("-symbol.json", "-0002.params", "-0002.states", "-meta.json", "-history.csv",
                   "-curves.png", "-best.params"):
        assert os.path.exists(trained + suffix), suffix
    rows = json.load(open(trained + "-history.json"))
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["CrossEntropy"]) and np.isfinite(r["SmoothL1"]) and "mAP" in r for r in rows)
    meta = read_meta(trained)
    assert meta["class_names"] == ["circle", "ring", "box", "triangle", "star", "cross"]
    assert meta["data_shape"] == 128


def test_resume_through_the_cli(trained, synthetic, tmp_path):
    prefix = str(tmp_path / "ssd")
    for name in os.listdir(os.path.dirname(trained)):     # copy the 2-epoch run, then continue to 3
        src = os.path.join(os.path.dirname(trained), name)
        if os.path.isfile(src):
            with open(src, "rb") as f, open(os.path.join(tmp_path, name), "wb") as g:
                g.write(f.read())
    out = _run(["train.py"] + _common_flags(synthetic, prefix) +
               ["--epochs", "3", "--lr", "0.01", "--resume", "--no-progress"])
    assert "resuming from" in out and "finished epoch 3" in out
    rows = json.load(open(prefix + "-history.json"))
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    state = json.load(open(prefix + "-0003.json"))
    first = json.load(open(prefix + "-0002.json"))
    assert state["iteration"] == first["iteration"] * 3 // 2


def test_evaluate_cli_matches_training_validation(trained, synthetic, tmp_path):
    out = _run(["evaluate.py", "--config", "tiny_256_synthetic", "--data-root", synthetic.devkit,
                "--prefix", trained, "--epoch", "2", "--output", str(tmp_path / "eval"), "--no-progress"])
    assert "VOC07 mAP" in out and "COCO AP" in out
    metrics = json.load(open(tmp_path / "eval" / "metrics.json"))
    rows = json.load(open(trained + "-history.json"))
    assert metrics["voc07"] == pytest.approx(rows[1]["mAP"], abs=1e-6)
    assert metrics["images"] == 8
    for name in ("ap_table.txt", "pr_curves.png", "coco_results.json"):
        assert os.path.getsize(tmp_path / "eval" / name) > 0


def test_a_meta_file_of_the_old_format_evaluates_to_the_same_map(trained, synthetic, tmp_path):
    """A checkpoint whose meta file was written before the typed specs (no max_detections, portable,
    gluoncv_zoo keys), or as commit 528e114 wrote it (no layout, matching or mining: the keys of
    tests/data/meta_528e114_lite_256_synthetic.json) evaluates to the same mAP as with today's meta file."""
    meta = json.load(open(trained + "-meta.json"))
    at_528e114 = json.load(open(os.path.join(REPO, "tests", "data", "meta_528e114_lite_256_synthetic.json")))
    old_keys = {"old": ("network", "data_shape", "test_shape", "nms_thresh", "nms_topk", "force_suppress",
                        "class_names", "mean", "std"),
                "528e114": tuple(at_528e114)}
    prefixes = [("new", trained)]
    for name, keys in old_keys.items():
        assert set(keys) < set(meta)
        prefix = str(tmp_path / name / "ssd")
        os.makedirs(os.path.dirname(prefix))
        with open(prefix + "-meta.json", "w") as f:
            json.dump({k: meta[k] for k in keys}, f)
        os.symlink(trained + "-0002.params", prefix + "-0002.params")
        prefixes.append((name, prefix))
    results = {}
    for name, prefix in prefixes:
        _run(["evaluate.py", "--config", "tiny_256_synthetic", "--data-root", synthetic.devkit, "--prefix", prefix,
              "--epoch", "2", "--output", str(tmp_path / name), "--no-progress"])
        results[name] = json.load(open(tmp_path / name / "metrics.json"))
    for name in old_keys:
        assert results[name]["voc07"] == results["new"]["voc07"]
        assert results[name]["coco"] == results["new"]["coco"]


def _inference_outputs(symbol, arg, aux, data):
    mod = mx.mod.Module(symbol, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", data.shape)], for_training=False)
    mod.set_params(arg, aux, allow_extra=True)
    mod.forward(mx.io.DataBatch([mx.nd.array(data)]), is_train=False)
    return mod.get_outputs()[0].asnumpy()


def _kept_rows(dets):
    """Rows with cls >= 0 sorted by (score desc, then coordinates) for order-free comparison."""
    rows = dets[dets[:, 0] >= 0]
    return rows[np.lexsort((rows[:, 2], rows[:, 0], -rows[:, 1]))]


def test_deploy_model_equals_training_inference_branch(trained, tmp_path):
    out = str(tmp_path / "deploy" / "ssd")
    _run(["deploy.py", "--prefix", trained, "--output", out, "--epoch", "2", "--max-detections", "-1"])
    data = np.random.default_rng(0).normal(size=(2, 3, 128, 128)).astype(np.float32)
    # Reference: the training graph's own detection output with the same weights.
    train_sym = mx.sym.load(trained + "-symbol.json")
    arg, aux = load_params(trained + "-0002.params")
    train_exe = train_sym.simple_bind(mx.cpu(), data=data.shape, label=(2, 16, 6), grad_req="null")
    for name, value in arg.items():
        train_exe.arg_dict[name][:] = value
    for name, value in aux.items():
        train_exe.aux_dict[name][:] = value
    train_exe.arg_dict["data"][:] = data
    train_exe.arg_dict["label"][:] = -1.0
    train_det = train_exe.forward(is_train=False)[3].asnumpy()
    dep_sym, dep_arg, dep_aux = mx.model.load_checkpoint(out, 0)
    assert not [n for n in dep_sym.list_arguments() if n == "label"]
    dep_det = _inference_outputs(dep_sym, dep_arg, dep_aux, data)
    np.testing.assert_allclose(dep_det, train_det, rtol=1e-5, atol=1e-5)


def test_portable_model_runs_without_ssdkit(trained, tmp_path):
    ours = str(tmp_path / "deploy" / "ssd")
    portable = str(tmp_path / "deploy" / "ssd_portable")
    deploy_model(trained, ours, epoch=2, max_detections=-1)
    deploy_model(trained, portable, epoch=2, portable=True)
    data = np.random.default_rng(1).normal(size=(1, 3, 128, 128)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    code = textwrap.dedent("""
        import sys, numpy as np, mxnet as mx
        sym, arg, aux = mx.model.load_checkpoint(%r, 0)
        mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
        mod.bind(data_shapes=[("data", (1, 3, 128, 128))], for_training=False)
        mod.set_params(arg, aux)
        mod.forward(mx.io.DataBatch([mx.nd.array(np.load(%r))]), is_train=False)
        np.save(%r, mod.get_outputs()[0].asnumpy())
        net = mx.gluon.SymbolBlock.imports(%r, ["data"], %r)
        np.save(%r, net(mx.nd.array(np.load(%r))).asnumpy())
        assert "ssdkit" not in sys.modules
    """ % (portable, str(tmp_path / "x.npy"), str(tmp_path / "p.npy"), portable + "-symbol.json",
           portable + "-0000.params", str(tmp_path / "g.npy"), str(tmp_path / "x.npy")))
    _run(["-c", code], cwd=str(tmp_path))
    plain = np.load(tmp_path / "p.npy")
    gluon = np.load(tmp_path / "g.npy")
    # SymbolBlock runs the same graph through another executor: float differences of ~1e-7 may flip
    # a few near-threshold NMS decisions, so compare the best detection and most rows.
    assert gluon.shape == plain.shape
    np.testing.assert_allclose(gluon[0, 0], plain[0, 0], rtol=1e-5, atol=1e-5)
    assert np.mean(gluon[..., 0] == plain[..., 0]) > 0.98
    sym, arg, aux = mx.model.load_checkpoint(ours, 0)
    ssdkit_det = _inference_outputs(sym, arg, aux, data)
    np.testing.assert_allclose(_kept_rows(plain[0]), _kept_rows(ssdkit_det[0]), rtol=1e-5, atol=1e-5)


def _with_uniform_class_heads(prefix, epoch, out_prefix):
    """Copy a run with every class-head bias set to 0, so each anchor's classes start equally likely.

    Two epochs from the background-prior initialisation may leave every object score under
    MultiBoxDetection's 0.01 threshold (no detections at all); these tests check the plumbing
    (ranking, pixel scaling, files), which needs candidates.
    """
    params = mx.nd.load("%s-%04d.params" % (prefix, epoch))
    for name in params:
        if name.endswith("_cls_pred_bias"):
            params[name] = mx.nd.zeros_like(params[name])
    mx.nd.save("%s-%04d.params" % (out_prefix, epoch), params)
    with open(prefix + "-meta.json") as src, open(out_prefix + "-meta.json", "w") as dst:
        dst.write(src.read())
    return out_prefix


def test_detector_api_and_demo(trained, synthetic, tmp_path):
    trained = _with_uniform_class_heads(trained, 2, str(tmp_path / "uniform"))
    images = sorted(os.listdir(synthetic.image_dir))[:2]
    paths = [os.path.join(synthetic.image_dir, f) for f in images]
    det = Detector(trained, epoch=2, score_thresh=0.0)
    results = det.detect_many(paths)
    assert len(results) == 2
    for path, rows in zip(paths, results):
        h, w = ssdkit.dataset.image.load_image_rgb(path).shape[:2]
        assert rows.shape[1] == 6 and len(rows) > 0
        assert np.all(np.diff(rows[:, 1]) <= 0)
        assert rows[:, 2].min() >= -1e-3 and rows[:, 4].max() <= w + 1e-3
        assert rows[:, 3].min() >= -1e-3 and rows[:, 5].max() <= h + 1e-3
    # The Detector equals the graph run on the same preprocessed input, boxes scaled to pixels.
    sym = inference_symbol(read_meta(trained), max_detections=100)
    arg, aux = load_params(trained + "-0002.params")
    raw = _inference_outputs(sym, arg, aux, det.preprocess(ssdkit.dataset.image.load_image_rgb(paths[0]))[None])
    kept = raw[0][raw[0][:, 0] >= 0]
    h, w = ssdkit.dataset.image.load_image_rgb(paths[0]).shape[:2]
    np.testing.assert_allclose(results[0][:, 2:], kept[:, 2:] * [w, h, w, h], rtol=1e-5, atol=1e-3)
    out = _run(["demo.py", "--prefix", trained, "--epoch", "2", "--images", synthetic.image_dir, "--limit", "2",
                "--output", str(tmp_path / "demo"), "--score-thresh", "0.0"])
    assert out.count("objects ->") == 2
    report = json.load(open(tmp_path / "demo" / "detections.json"))
    assert len(report) == 2
    assert os.path.getsize(tmp_path / "demo" / (os.path.splitext(images[0])[0] + "_det.png")) > 1000


def test_train_api_with_two_cpu_contexts(synthetic, tmp_path):
    cfg = apply_overrides(load_config("tiny_256_synthetic"), {
        "data.root": synthetic.devkit, "model.data_shape": 128, "data.batch_size": 8, "data.val": (),
        "solver.epochs": 1, "runtime.cpus": 2, "runtime.prefix": str(tmp_path / "ssd"), "data.num_workers": 1})
    result = train_detector(cfg, progress=False)
    assert len(result["module"]._context) == 2
    assert result["epoch"] == 1 and latest_epoch(cfg.runtime.prefix) == 1
    # the executor skips the detections; the checkpoint keeps the whole training graph
    assert result["module"].output_names == ["cls_prob_output", "loc_loss_output", "cls_label_output"]
    assert mx.sym.load(cfg.runtime.prefix + "-symbol.json").list_outputs()[3] == "det_out_output"
    assert np.isfinite(result["history"].rows[-1]["CrossEntropy"])


def test_bad_config_value_is_a_clear_error(synthetic, tmp_path):
    proc = subprocess.run([sys.executable, "train.py", "--config", "tiny_256_synthetic", "--lr", "-1",
                           "--prefix", str(tmp_path / "x")], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode != 0
    assert "solver.lr" in proc.stdout and "must be > 0" in proc.stdout


def test_test_shape_sets_the_inference_size(trained, synthetic, tmp_path):
    """--test-shape evaluates (and a meta's test_shape deploys) a fully convolutional SSD at another size."""
    out = _run(["evaluate.py", "--config", "tiny_256_synthetic", "--data-root", synthetic.devkit,
                "--prefix", trained, "--epoch", "2", "--test-shape", "160", "--output", str(tmp_path / "eval"),
                "--no-progress"])
    assert "VOC07 mAP" in out
    assert json.load(open(tmp_path / "eval" / "metrics.json"))["images"] == 8
    family = family_of(read_meta(trained))
    meta = dict(read_meta(trained), test_shape=160)
    assert family.inference_shapes(meta, 2) == [("data", (2, 3, 160, 160))]
    assert family.preprocess(meta, np.zeros((50, 70, 3), np.uint8), Normalization()).shape == (3, 160, 160)
    config = load_config("tiny_256_synthetic")
    # data_shape keeps meaning the trained size; the evaluation iterator runs at input_size (test_shape)
    evaluated = family.apply_meta(config, meta).model
    assert (evaluated.data_shape, evaluated.test_shape, input_size(evaluated, "val")) == (128, 160, 160)
    evaluated = family.apply_meta(config, dict(meta, test_shape=0)).model
    assert (evaluated.data_shape, input_size(evaluated, "val")) == (128, 128)   # trained size
    config = apply_overrides(config, {"data.root": synthetic.devkit, "data.num_workers": 1})
    evaluated = family.apply_meta(config, meta)
    assert make_iterator(evaluated, "val", load_split(evaluated, "val")).provide_data[0].shape[2:] == (160, 160)
    assert make_iterator(evaluated, "train", load_split(evaluated, "train")).provide_data[0].shape[2:] == (128, 128)
    # presets whose anchor steps are fractions of the training input cannot change size
    with pytest.raises(ValueError, match="fixes its anchor steps"):
        check_test_shape("mobilenet", 512, 448)
    check_test_shape("mobilenet", 512, 512)
