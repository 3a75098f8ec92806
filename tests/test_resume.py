"""Checkpoints hold exactly the model's state; resume is exact and survives damage; NaN is never saved.

The problem (tests/resume_worker.py) is tiny: 24 in-memory 16x16 images, a shuffling, augmenting
FolderDetIter, conv + BatchNorm + Dropout + FC, SGD with momentum and a stepped schedule; three epochs
of six batches. The reference is one uninterrupted 3-epoch run; every interrupted-and-resumed run
must reproduce its checkpoints of the later epochs bit for bit (parameters, BatchNorm statistics,
optimizer states and update counts).
"""
import glob
import json
import logging
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from resume_worker import make_metric, train
from ssdkit.cli import run_script
from ssdkit.engine import atomic, checkpoint, module_state, resume
from ssdkit.engine.history import History
from ssdkit.engine.trainer import NonFiniteLossError

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module", autouse=True)
def _no_curves():
    """No loss-curve PNG (0.3-0.5 s per epoch here; test_engine checks it): keeps this file fast."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(History, "plot", lambda self, path=None: None)
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Prefix of the uninterrupted 3-epoch run (checkpoints 1, 2, 3)."""
    prefix = str(tmp_path_factory.mktemp("reference") / "toy")
    train(prefix, 3)
    return prefix


def _arrays(blob):
    """Optimizer states blob -> (dict "param:optK" -> numpy, num_update, per-index update counts)."""
    arrays, optimizer = module_state.blob_state_arrays(blob)
    return ({k: v.asnumpy() for k, v in arrays.items()}, optimizer.num_update,
            dict(optimizer._index_update_count))


def assert_same_checkpoint(prefix, ref_prefix, epoch):
    """Parameters, auxiliary states and optimizer state of ``epoch`` equal bit for bit."""
    paths = checkpoint.checkpoint_paths(prefix, epoch)
    ref_paths = checkpoint.checkpoint_paths(ref_prefix, epoch)
    got, want = checkpoint.load_params(paths["params"]), checkpoint.load_params(ref_paths["params"])
    for kind in (0, 1):
        assert sorted(got[kind]) == sorted(want[kind])
        for name in want[kind]:
            assert np.array_equal(got[kind][name].asnumpy(), want[kind][name].asnumpy()), (epoch, name)
    with open(paths["states"], "rb") as f, open(ref_paths["states"], "rb") as g:
        states, updates, counts = _arrays(f.read())
        ref_states, ref_updates, ref_counts = _arrays(g.read())
    assert sorted(states) == sorted(ref_states) and len(states) >= 2     # momentum of every weight
    for key in ref_states:
        assert np.array_equal(states[key], ref_states[key]), (epoch, key)
    assert updates == ref_updates == 6 * epoch and counts == ref_counts


def _history_rows(prefix):
    with open(prefix + "-history.json") as f:
        return json.load(f)


def _same_rows(rows, ref_rows):
    """History rows equal except the timing columns."""
    drop = ("time_s", "samples_per_s")
    return [{k: v for k, v in r.items() if k not in drop} for r in rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in ref_rows]


def test_resume_after_stopping_at_epoch_1_is_bit_identical(tmp_path, reference):
    prefix = str(tmp_path / "toy")
    train(prefix, 1)
    train(prefix, 3, resume=True)
    for epoch in (2, 3):
        assert_same_checkpoint(prefix, reference, epoch)
    assert _same_rows(_history_rows(prefix), _history_rows(reference))


def test_resume_after_exception_mid_epoch_is_bit_identical(tmp_path, reference):
    """Interrupted in batch 4 of epoch 2, resumed with one decoding thread instead of two."""
    prefix = str(tmp_path / "toy")

    def crash(epoch, batch):
        if (epoch, batch) == (2, 4):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(prefix, 3, on_batch=crash)
    assert checkpoint.latest_epoch(prefix) == 1
    train(prefix, 3, resume=True, num_workers=1)
    for epoch in (2, 3):
        assert_same_checkpoint(prefix, reference, epoch)


def test_resume_needs_the_data_position(tmp_path, reference, monkeypatch):
    """Without positioning the iterator the resumed epoch 2 replays epoch 1's order and augmentation."""
    prefix = str(tmp_path / "toy")
    train(prefix, 1)
    monkeypatch.setattr(resume, "restore_data_position", lambda data_iter, position: True)
    train(prefix, 3, resume=True)
    with pytest.raises(AssertionError):
        assert_same_checkpoint(prefix, reference, 2)


def test_resume_needs_the_per_epoch_seed(tmp_path, monkeypatch):
    """Without reseeding MXNet per epoch, Dropout's masks after a resume differ."""
    real_seed = mx.random.seed
    monkeypatch.setattr(mx.random, "seed",             # only the run's own seed (3), not the epochs'
                        lambda seed, ctx="all": real_seed(seed, ctx) if seed == 3 else None)
    ref, prefix = str(tmp_path / "ref" / "toy"), str(tmp_path / "toy")
    train(ref, 2)
    train(prefix, 1)
    train(prefix, 2, resume=True)
    assert_same_checkpoint(prefix, ref, 1)
    with pytest.raises(AssertionError):
        assert_same_checkpoint(prefix, ref, 2)


KILLS = {"mid_epoch": "batch:2:3", "checkpoint_window": "replace:-last.json:2"}


def test_resume_after_sigkill_is_bit_identical(tmp_path, reference):
    """SIGKILL in batch 3 of epoch 2, and inside epoch 2's checkpoint writes (its trainer state
    written, the new -last.json's temporary file written but not renamed); both workers run at once."""
    prefixes = {name: str(tmp_path / name / "toy") for name in KILLS}
    script = os.path.join(HERE, "resume_worker.py")
    workers = {name: subprocess.Popen([sys.executable, script, prefixes[name], "3", kill],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for name, kill in KILLS.items()}
    for name, proc in workers.items():
        output = proc.communicate(timeout=180)[0]
        assert proc.returncode == -9, output[-2000:]
    for name, prefix in prefixes.items():
        folder = os.path.dirname(prefix)
        assert checkpoint.latest_epoch(prefix) == 1
        strays = glob.glob(os.path.join(folder, ".toy-*.tmp"))
        assert len(strays) == (1 if name == "checkpoint_window" else 0), strays
        if name == "checkpoint_window":
            assert strays[0].startswith(os.path.join(folder, ".toy-last.json."))
            assert os.path.exists(prefix + "-0002.json")       # complete but not committed
        result = train(prefix, 3, resume=True)
        assert glob.glob(os.path.join(folder, "*.tmp")) + glob.glob(os.path.join(folder, ".*.tmp")) == []
        for epoch in (2, 3):
            assert_same_checkpoint(prefix, reference, epoch)
        assert [r["epoch"] for r in result["history"].rows] == [1, 2, 3]
        assert _same_rows(_history_rows(prefix), _history_rows(reference))


def _saved_vs_live_batchnorm(prefix, result, epoch):
    mx.nd.waitall()
    live = result["module"]._exec_group.execs[0].aux_dict
    _, saved = checkpoint.load_params(checkpoint.checkpoint_paths(prefix, epoch)["params"])
    assert sorted(saved) == ["bn_moving_mean", "bn_moving_var"]
    return {name: np.array_equal(saved[name].asnumpy(), live[name].asnumpy()) for name in saved}


def test_saved_batchnorm_statistics_equal_the_live_model(tmp_path, monkeypatch):
    """MXNet's CPU BatchNorm updates its moving statistics in the backward pass, which the engine
    does not count as a write: read without waiting, a checkpoint misses the last batch's update.
    A slow op after the BatchNorm makes that window wide enough to hit every time."""
    prefix = str(tmp_path / "toy")
    result = train(prefix, 1, slow_bn_backward=True)
    assert _saved_vs_live_batchnorm(prefix, result, 1) == {"bn_moving_mean": True, "bn_moving_var": True}
    _, saved = checkpoint.load_params(checkpoint.checkpoint_paths(prefix, 1)["params"])
    assert np.abs(saved["bn_moving_mean"].asnumpy()).max() > 1e-3      # statistics were updated
    assert not np.allclose(saved["bn_moving_var"].asnumpy(), 1.0)
    # the same run reading without waiting (as before the fix) saves stale statistics
    monkeypatch.setattr(mx.nd, "waitall", lambda: None)
    stale = str(tmp_path / "stale" / "toy")
    result = train(stale, 1, slow_bn_backward=True)
    monkeypatch.undo()
    assert _saved_vs_live_batchnorm(stale, result, 1) == {"bn_moving_mean": False, "bn_moving_var": False}


class _Accuracy(mx.metric.EvalMetric):
    """Accuracy of the first object's class: finite even when the predictions are NaN (argmax 0)."""

    def __init__(self):
        super().__init__("acc")

    def update(self, labels, preds):
        pred = preds[0].asnumpy().argmax(axis=1)
        self.sum_metric += float((pred == labels[0].asnumpy()[:, 0, 0]).sum())
        self.num_inst += len(pred)


def _all_saved_params_finite(folder):
    files = glob.glob(os.path.join(folder, "*.params"))
    for path in files:
        arg, aux = checkpoint.load_params(path)
        assert checkpoint.nonfinite_names(arg, aux) == [], path
    return files


def test_diverging_run_from_scratch_saves_nothing_non_finite(tmp_path):
    prefix = str(tmp_path / "toy")
    with pytest.raises(NonFiniteLossError, match=r"epoch 1 ended with NaN/inf .*No checkpoint was written"):
        train(prefix, 2, lr=1e6, metric=_Accuracy())
    assert _all_saved_params_finite(str(tmp_path)) == []
    assert not os.path.exists(prefix + "-last.json") and not os.path.exists(prefix + "-best.params")


def test_diverging_resumed_run_keeps_the_last_finite_checkpoint(tmp_path):
    prefix = str(tmp_path / "toy")
    train(prefix, 1)
    good = open(prefix + "-0001.params", "rb").read()
    expected = r"The last finite checkpoint is %s-0001\.params \(epoch 1" % prefix
    with pytest.raises(NonFiniteLossError, match=r"epoch 2 ended with NaN/inf.*" + expected):
        train(prefix, 3, resume=True, lr=1e6, metric=_Accuracy())
    # with the loss check (NaN cross-entropy) the message names the same checkpoint
    with pytest.raises(NonFiniteLossError, match=r"loss became non-finite at epoch 2.*" + expected):
        train(prefix, 3, resume=True, lr=1e6)
    assert checkpoint.latest_epoch(prefix) == 1
    assert [os.path.basename(p) for p in _all_saved_params_finite(str(tmp_path))] == ["toy-0001.params"]
    assert open(prefix + "-0001.params", "rb").read() == good
    assert [r["epoch"] for r in _history_rows(prefix)] == [1]


def test_corrupt_last_json_falls_back_to_newest_intact_checkpoint(tmp_path, reference, caplog):
    prefix = str(tmp_path / "toy")
    train(prefix, 2)
    with open(prefix + "-last.json", "w") as f:
        f.write('{"epo')                                           # torn write of an older tool
    with pytest.raises(checkpoint.CheckpointError, match="toy-last.json is damaged"):
        checkpoint.latest_epoch(prefix)
    with caplog.at_level(logging.INFO, logger="ssdkit.train"):
        train(prefix, 3, resume=True)
    assert "toy-last.json is damaged" in caplog.text
    assert "resuming from %s epoch 2" % prefix in caplog.text
    assert checkpoint.latest_epoch(prefix) == 3
    assert_same_checkpoint(prefix, reference, 3)


def test_truncated_params_falls_back_to_previous_checkpoint(tmp_path, reference, caplog):
    prefix = str(tmp_path / "toy")
    train(prefix, 2)
    path = checkpoint.checkpoint_paths(prefix, 2)["params"]
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with caplog.at_level(logging.INFO, logger="ssdkit.train"):
        train(prefix, 3, resume=True)
    assert "epoch 2 checkpoint skipped: cannot read parameters from %s" % path in caplog.text
    assert "falling back to epoch 1" in caplog.text
    for epoch in (2, 3):                       # epoch 2 retrained, exactly
        assert_same_checkpoint(prefix, reference, epoch)


def test_resume_refuses_when_no_checkpoint_is_intact(tmp_path):
    prefix = str(tmp_path / "toy")
    train(prefix, 1)
    with open(prefix + "-0001.states", "wb") as f:
        f.write(b"not a pickle")
    with pytest.raises(checkpoint.CheckpointError, match=r"no intact checkpoint.*toy-0001\.states is not "
                                                         r"a readable optimizer state"):
        train(prefix, 2, resume=True)


def test_history_rows_survive_a_lost_history_write(tmp_path, reference):
    """A kill after the checkpoint but before the history file (old write order) lost row 2."""
    prefix = str(tmp_path / "toy")
    train(prefix, 2)
    rows = _history_rows(prefix)
    atomic.write_json(prefix + "-history.json", rows[:1])
    result = train(prefix, 3, resume=True)
    assert [r["epoch"] for r in result["history"].rows] == [1, 2, 3]
    assert _history_rows(prefix)[1] == rows[1]                    # the very row of the first run
    assert _same_rows(_history_rows(prefix), _history_rows(reference))
    with open(prefix + "-history.csv") as f:
        assert len(f.read().strip().splitlines()) == 4


def test_stray_temporary_files_are_removed_and_others_kept(tmp_path):
    prefix = str(tmp_path / "toy")
    ours = [tmp_path / ".toy-0001.params.k2j3.tmp", tmp_path / ".toy-last.json.x9.tmp"]
    others = [tmp_path / ".other-0001.params.ab.tmp", tmp_path / "toy-notes.tmp", tmp_path / ".toy.tmp"]
    for path in ours + others:
        path.write_bytes(b"partial")
    train(prefix, 1)
    assert [p.exists() for p in ours] == [False, False]
    assert [p.exists() for p in others] == [True, True, True]


def test_full_disk_during_checkpoint_names_the_file(tmp_path, monkeypatch):
    prefix = str(tmp_path / "toy")

    def full_disk(path, data):
        with open(path, "wb") as f:
            f.write(b"\0" * 10)
        raise mx.base.MXNetError(       # MXNet 1.9's message on a full disk, word for word
            'Traceback (most recent call last):\n  File "../3rdparty/dmlc-core/src/io/local_filesys.cc", '
            'line 38\nMXNetError: Check failed: std: :fwrite(ptr, 1, size, fp_) == size: FileStream.Write '
            'incomplete')

    monkeypatch.setattr(mx.nd, "save", full_disk)
    with pytest.raises(atomic.WriteError, match=r"cannot write %s-0001\.params \(.*FileStream\.Write "
                                                r"incomplete\): the disk is probably full" % prefix):
        train(prefix, 1)
    assert os.listdir(tmp_path) == ["toy-symbol.json"]           # no temporary file, no pointer


def test_write_error_of_plain_files_names_the_file(tmp_path):
    target = tmp_path / "toy-0001.json"
    with pytest.raises(atomic.WriteError, match="cannot write %s .*No space left" % target) as info:
        with atomic.atomic_path(str(target)):
            raise OSError(28, "No space left on device")
    assert info.value.errno == 28 and os.listdir(tmp_path) == []


def test_optimizer_state_round_trips_through_the_checkpoint(tmp_path):
    prefix = str(tmp_path / "toy")
    result = train(prefix, 1)
    saved, _, _ = _arrays(checkpoint.load_checkpoint(prefix)["optimizer_states"])
    live = module_state.optimizer_state_arrays(result["module"])
    assert sorted(saved) == sorted(live) == ["bn_beta:opt0", "bn_gamma:opt0", "conv_bias:opt0",
                                             "conv_weight:opt0", "fc_bias:opt0", "fc_weight:opt0"]
    for key in live:
        assert np.array_equal(saved[key], live[key].asnumpy()), key


def test_metric_helper_sees_nan():
    metric = make_metric()
    metric.update([mx.nd.zeros((2, 1, 6))], [mx.nd.array([[np.nan, 0.5], [0.5, 0.5]])])
    assert np.isnan(metric.get()[1])


def test_scripts_print_divergence_as_one_line_from_scratch_and_on_resume(tmp_path, capsys):
    """train.py runs under cli.run_script: the same clean 'error:' line (status 2) with or without
    --resume, no traceback."""
    prefix = str(tmp_path / "toy")
    status = run_script(lambda argv: train(prefix, 2, lr=1e6, metric=_Accuracy()))
    first = capsys.readouterr().err.strip().splitlines()
    train(str(tmp_path / "resumed" / "toy"), 1)
    status_resumed = run_script(lambda argv: train(str(tmp_path / "resumed" / "toy"), 3, resume=True, lr=1e6))
    second = capsys.readouterr().err.strip().splitlines()
    assert status == status_resumed == 2
    assert first[-1].startswith("error: epoch 1 ended with NaN/inf")
    assert "No checkpoint was written" in first[-1]
    assert second[-1].startswith("error: training loss became non-finite at epoch 2")
    assert "toy-0001.params (epoch 1" in second[-1]
    assert not any("Traceback" in line for line in first + second)


def test_resume_on_two_devices_is_bit_identical(tmp_path):
    """Two CPU contexts: each device's BatchNorm statistics (which differ; the .params hold their mean)
    are saved in prefix-NNNN.devices and given back, so the averages match bit for bit too."""
    ref, prefix = str(tmp_path / "ref" / "toy"), str(tmp_path / "toy")
    train(ref, 2, cpus=2)
    train(prefix, 1, cpus=2)
    devices = mx.nd.load(checkpoint.checkpoint_paths(prefix, 1)["devices"])
    assert sorted(devices) == ["dev0:bn_moving_mean", "dev0:bn_moving_var", "dev1:bn_moving_mean",
                               "dev1:bn_moving_var"]
    assert not np.array_equal(devices["dev0:bn_moving_mean"].asnumpy(),
                              devices["dev1:bn_moving_mean"].asnumpy())
    result = train(prefix, 2, resume=True, cpus=2)
    assert len(result["module"]._context) == 2
    assert_same_checkpoint(prefix, ref, 2)
    for name, array in mx.nd.load(checkpoint.checkpoint_paths(ref, 2)["devices"]).items():
        assert np.array_equal(mx.nd.load(checkpoint.checkpoint_paths(prefix, 2)["devices"])[name].asnumpy(),
                              array.asnumpy()), name


FULL_DISK_SCRIPT = """
import resource, signal, sys
import mxnet as mx
from ssdkit.engine import atomic, checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # a write past the limit fails (EFBIG) like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    checkpoint.save_checkpoint(sys.argv[1], 1, mx.sym.var("data"), {"w": mx.nd.ones((64, 64))}, {},
                               optimizer_states=b"", trainer_state={})
except atomic.WriteError as err:
    print(err)
"""


def test_a_real_short_write_is_a_write_error_naming_the_file(tmp_path):
    """No mock: the file size limit makes MXNet's own writer fail ("FileStream.Write incomplete")."""
    prefix = str(tmp_path / "toy")
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, prefix], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("cannot write %s-0001.params (Check failed: " % prefix)
    assert "FileStream.Write incomplete): the disk is probably full" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["toy-symbol.json"]           # no temporary file left
