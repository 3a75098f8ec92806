"""The training engine on a toy classifier: checkpoints, resume, NaN guard, devices, schedules, config."""
import dataclasses
import json
import os

import mxnet as mx
import numpy as np
import pytest

from ssdkit.config import apply_overrides, load_config
from ssdkit.config.schema import Config, RuntimeConfig, SolverConfig
from ssdkit.engine import checkpoint, module_state
from ssdkit.engine.schedule import build_lr_scheduler
from ssdkit.engine.trainer import NonFiniteLossError, fit


def _toy_problem(n=64, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32) * scale
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    return mx.io.NDArrayIter(x, y, batch_size=16, shuffle=False, label_name="label")


def _toy_symbol():
    data = mx.sym.var("data")
    fc = mx.sym.FullyConnected(data, num_hidden=2, name="fc")
    return mx.sym.SoftmaxOutput(fc, mx.sym.var("label"), normalization="batch", name="softmax")


def _config(tmp_path, **solver):
    solver = dict(dict(lr=0.1, epochs=3, lr_steps=(2.0,), warmup_epochs=0.5), **solver)
    return Config(solver=SolverConfig(**solver),
                  runtime=RuntimeConfig(prefix=str(tmp_path / "run" / "toy"), seed=0))


def _metric():
    return mx.metric.CrossEntropy()


def test_fit_writes_checkpoints_history_and_curve(tmp_path):
    cfg = _config(tmp_path)
    result = fit(_toy_symbol(), _toy_problem(), cfg, train_metric=_metric(), progress=False,
                 val_fn=lambda a, x, e: {"mAP": 0.1 * e})
    prefix = cfg.runtime.prefix
    assert result["epoch"] == 3 and result["best"] == pytest.approx(0.3)
    for e in (1, 2, 3):
        assert os.path.exists("%s-%04d.params" % (prefix, e))
        assert os.path.exists("%s-%04d.states" % (prefix, e))
    assert checkpoint.latest_epoch(prefix) == 3
    with open(prefix + "-best.json") as f:
        assert json.load(f)["epoch"] == 3
    rows = json.load(open(prefix + "-history.json"))
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0]["cross-entropy"] > rows[-1]["cross-entropy"]       # it learns
    assert os.path.getsize(prefix + "-curves.png") > 1000
    # MXNet's own loader reads our checkpoints.
    sym, args, auxs = mx.model.load_checkpoint(prefix, 3)
    assert "fc_weight" in args


def test_resume_continues_with_identical_optimizer_state(tmp_path):
    cfg = _config(tmp_path, epochs=2)
    first = fit(_toy_symbol(), _toy_problem(), cfg, train_metric=_metric(), progress=False)
    saved = checkpoint.load_checkpoint(cfg.runtime.prefix, 2)
    # An uninterrupted 3-epoch run is the reference for the resumed one.
    ref_cfg = dataclasses.replace(_config(tmp_path / "ref", epochs=3))
    ref = fit(_toy_symbol(), _toy_problem(), ref_cfg, train_metric=_metric(), progress=False)

    resumed_cfg = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, epochs=3),
                                      runtime=dataclasses.replace(cfg.runtime, resume=True))
    # Rebuild the resumed module by hand first to compare optimizer state right after loading.
    mod = first["module"]
    before = module_state.current_optimizer(mod)
    resumed = fit(_toy_symbol(), _toy_problem(), resumed_cfg, train_metric=_metric(), progress=False)
    opt = module_state.current_optimizer(resumed["module"])
    assert opt.num_update == ref_opt_updates(ref)
    args_r, _ = resumed["module"].get_params()
    args_ref, _ = ref["module"].get_params()
    for name in args_ref:       # bit for bit (tests/test_resume.py covers kills and damage)
        assert np.array_equal(args_r[name].asnumpy(), args_ref[name].asnumpy()), name
    assert before.num_update == 8 and saved["trainer_state"]["iteration"] == 8
    assert [r["epoch"] for r in resumed["history"].rows] == [1, 2, 3]


def ref_opt_updates(result):
    return module_state.current_optimizer(result["module"]).num_update


def test_saved_optimizer_state_round_trips(tmp_path):
    cfg = _config(tmp_path, epochs=1)
    result = fit(_toy_symbol(), _toy_problem(), cfg, train_metric=_metric(), progress=False)
    blob = checkpoint.load_checkpoint(cfg.runtime.prefix)["optimizer_states"]
    assert blob == module_state.get_optimizer_states(result["module"])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = _config(tmp_path, epochs=1, lr=0.1)
    fit(_toy_symbol(), _toy_problem(), cfg, train_metric=_metric(), progress=False)
    good = open("%s-0001.params" % cfg.runtime.prefix, "rb").read()
    bad_iter = _toy_problem(scale=np.nan)
    cfg2 = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, epochs=2),
                               runtime=dataclasses.replace(cfg.runtime, resume=True))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 1.*last finite checkpoint is "
                       r".*toy-0001\.params \(epoch 1"):
        fit(_toy_symbol(), bad_iter, cfg2, train_metric=_metric(), progress=False)
    assert checkpoint.latest_epoch(cfg.runtime.prefix) == 1
    assert open("%s-0001.params" % cfg.runtime.prefix, "rb").read() == good


def test_interrupted_save_leaves_previous_checkpoint_latest(tmp_path, monkeypatch):
    cfg = _config(tmp_path, epochs=1)
    fit(_toy_symbol(), _toy_problem(), cfg, train_metric=_metric(), progress=False)
    prefix = cfg.runtime.prefix
    real_save = mx.nd.save

    def crash(path, data):
        real_save(path, data)
        with open(path, "r+b") as f:      # half-written file, then the process "dies"
            f.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(mx.nd, "save", crash)
    cfg2 = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, epochs=2),
                               runtime=dataclasses.replace(cfg.runtime, resume=True))
    with pytest.raises(KeyboardInterrupt):
        fit(_toy_symbol(), _toy_problem(), cfg2, train_metric=_metric(), progress=False)
    monkeypatch.undo()
    assert checkpoint.latest_epoch(prefix) == 1
    assert not os.path.exists("%s-0002.params" % prefix)
    assert [f for f in os.listdir(os.path.dirname(prefix)) if f.endswith(".tmp")] == []
    ckpt = checkpoint.load_checkpoint(prefix)
    assert ckpt["epoch"] == 1 and "fc_weight" in ckpt["arg_params"]


def test_two_cpu_contexts_train_like_one(tmp_path):
    one = fit(_toy_symbol(), _toy_problem(), _config(tmp_path / "a", epochs=2), train_metric=_metric(),
              progress=False)
    cfg2 = _config(tmp_path / "b", epochs=2)
    cfg2 = dataclasses.replace(cfg2, runtime=dataclasses.replace(cfg2.runtime, cpus=2))
    two = fit(_toy_symbol(), _toy_problem(), cfg2, train_metric=_metric(), progress=False)
    assert len(two["module"]._context) == 2
    a, _ = one["module"].get_params()
    b, _ = two["module"].get_params()
    # Same data, loss normalised per device and gradients rescaled by 1/devices: same update.
    for name in a:
        np.testing.assert_allclose(a[name].asnumpy(), b[name].asnumpy(), rtol=1e-4, atol=1e-5)


def test_schedules():
    step = build_lr_scheduler(SolverConfig(lr=0.1, epochs=10, lr_steps=(5.0, 8.0), warmup_epochs=1), 10)
    lrs = [step(i) for i in range(1, 101)]
    assert lrs[0] < 0.1 and lrs[9] == pytest.approx(0.1)
    assert lrs[49] == pytest.approx(0.1) and lrs[50] == pytest.approx(0.01)
    assert lrs[80] == pytest.approx(0.001)
    cos = build_lr_scheduler(SolverConfig(lr=0.1, epochs=10, schedule="cosine"), 10)
    assert cos(1) == pytest.approx(0.1, rel=1e-2) and cos(50) == pytest.approx(0.05, rel=0.05)
    assert cos(100) == pytest.approx(0.0, abs=1e-3)


def test_config_files_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[solver]\nlr = 0.02\nlr_steps = [3, 4]\n[model]\nnetwork = "vgg16_reduced"\n')
    cfg = load_config(str(path))
    assert cfg.solver.lr == 0.02 and cfg.solver.lr_steps == (3.0, 4.0)
    assert cfg.model.network == "vgg16_reduced" and cfg.data.batch_size == 16
    cfg = apply_overrides(cfg, {"solver.lr": 0.5, "data.batch_size": "8", "runtime.seed": None})
    assert cfg.solver.lr == 0.5 and cfg.data.batch_size == 8
    bad = tmp_path / "bad.toml"
    bad.write_text("[solver]\nlearning_rate = 0.1\n")
    with pytest.raises(ValueError, match="bad.toml: unknown config key 'solver.learning_rate'"):
        load_config(str(bad))
    bad.write_text('[solver]\nlr = "fast"\n')
    with pytest.raises(ValueError, match="'solver.lr': expected a number"):
        load_config(str(bad))
    bad.write_text("[solver]\nlr = -1\n")
    with pytest.raises(ValueError, match="solver.lr.*> 0"):
        load_config(str(bad))
    bad.write_text("[optimiser]\nlr = 1\n")
    with pytest.raises(ValueError, match=r"unknown config section \[optimiser\]"):
        load_config(str(bad))
    with pytest.raises(ValueError, match="unknown config key 'data.batchsize'"):
        apply_overrides(cfg, {"data.batchsize": 3})
