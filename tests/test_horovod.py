"""Horovod beside dist_sync: ``horovodrun -np 2`` on localhost (Gloo), two CPU workers.

The toy runs (tests/horovod_worker.py) train one epoch under Horovod, resume for a second one, and
compare with one process that holds the same two shards on two CPU contexts (``--cpus 2``): both
sum two gradients and divide by two, so the weights must be bit-identical. A one-context process with
the batch of 32 in one piece sums in another order; it agrees to float32 rounding (atol 1e-6).

Needs Horovod built for MXNet with Gloo in this environment (``tools/install_horovod.sh``, which
``tools/run_tests.sh`` runs); without it the Horovod runs are skipped, saying so.
"""
import json
import os
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from ssdkit.dataset.synthetic import make_synthetic_dataset
from ssdkit.engine.horovod import worker_gpu_ids

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOROVODRUN = shutil.which("horovodrun", path=os.path.dirname(sys.executable))


def _horovod_missing():
    if HOROVODRUN is None:
        return "horovodrun is not installed beside %s" % sys.executable
    probe = subprocess.run([sys.executable, "-c", "import horovod.mxnet as h; assert h.gloo_built()"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if probe.returncode != 0:
        return "horovod.mxnet with Gloo does not import: %s" % (probe.stdout.strip().splitlines() or ["?"])[-1]
    return None


HOROVOD_MISSING = _horovod_missing()
needs_horovod = pytest.mark.skipif(HOROVOD_MISSING is not None,
                                   reason="Horovod for MXNet is not installed (tools/install_horovod.sh "
                                          "builds it from source): %s" % HOROVOD_MISSING)


def _run(cmd, timeout=400):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def _horovodrun(args, timeout=400):
    return _run([HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable] + args, timeout)


def test_worker_gpu_ids_share_the_machine():
    assert worker_gpu_ids([0, 1], local_rank=1, local_size=2) == [1]
    assert worker_gpu_ids([0, 1, 2, 3], local_rank=0, local_size=2) == [0, 2]
    assert worker_gpu_ids([3], local_rank=0, local_size=1) == [3]
    with pytest.raises(ValueError, match="multiple of 2"):
        worker_gpu_ids([0, 1, 2], local_rank=0, local_size=2)


@pytest.mark.slow
@needs_horovod
def test_two_workers_equal_one_process_and_resume(tmp_path):
    worker = os.path.join(REPO, "tests", "horovod_worker.py")
    out = str(tmp_path)
    first = _horovodrun([worker, out, "horovod", "1"])
    assert first.count("of 2 finished epoch 1") == 2, first[-3000:]
    resumed = _horovodrun([worker, out, "horovod", "2", "--resume"])
    assert resumed.count("resuming from") == 2 and resumed.count("of 2 finished epoch 2") == 2, resumed[-3000:]
    _run([sys.executable, worker, out, "local2", "2"])
    _run([sys.executable, worker, out, "local1", "2"])

    def load(name):
        return {k: v.asnumpy() for k, v in mx.nd.load(os.path.join(out, name + ".params")).items()}

    rank0, rank1 = load("horovod-rank0"), load("horovod-rank1")
    two_contexts, one_context = load("local2-rank0"), load("local1-rank0")
    initial = {k[4:]: v.asnumpy() for k, v in mx.nd.load(os.path.join(out, "horovod-0001.params")).items()}
    assert sorted(rank0) == ["fc1_bias", "fc1_weight", "fc2_bias", "fc2_weight"]
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name])
        np.testing.assert_array_equal(rank0[name], two_contexts[name])
        np.testing.assert_allclose(rank0[name], one_context[name], rtol=0, atol=1e-6)
        assert not np.allclose(rank0[name], initial[name])       # epoch 2 moved the weights
    # rank 0 wrote the checkpoints of both epochs, with the optimizer state
    for epoch in (1, 2):
        assert os.path.exists(os.path.join(out, "horovod-%04d.states" % epoch))
        with open(os.path.join(out, "horovod-%04d.json" % epoch)) as f:
            assert json.load(f)["num_workers"] == 2


@pytest.mark.slow
@needs_horovod
def test_train_script_under_horovodrun(tmp_path):
    """train.py --kv-store horovod: each worker reads its half of 16 images (2 batches of 4)."""
    data = make_synthetic_dataset(str(tmp_path / "data"), num_train=16, num_test=4, seed=5, image_size=(96, 128))
    prefix = str(tmp_path / "run" / "ssd")
    out = _horovodrun(["train.py", "--config", "tiny_256_synthetic", "--data-root", data.devkit,
                       "--data-shape", "96", "--batch-size", "4", "--num-workers", "1", "--epochs", "1",
                       "--kv-store", "horovod", "--prefix", prefix, "--no-progress"])
    assert out.count("finished epoch 1") == 2, out[-3000:]
    assert "1 device(s) x 2 worker(s)" in out
    with open(prefix + "-0001.json") as f:
        state = json.load(f)
    assert state["num_workers"] == 2 and state["iteration"] == 2
