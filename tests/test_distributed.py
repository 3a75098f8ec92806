"""dist_sync on loopback: 1 scheduler, 1 server, 2 workers; both workers end with identical weights."""
import os
import socket
import subprocess
import sys

import mxnet as mx
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dist_sync_two_workers(tmp_path):
    base = dict(os.environ, DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(_free_port()),
                DMLC_NUM_SERVER="1", DMLC_NUM_WORKER="2", DMLC_NODE_HOST="127.0.0.1", OMP_NUM_THREADS="1")
    procs = []
    try:
        for role in ("scheduler", "server"):
            procs.append(subprocess.Popen([sys.executable, "-c", "import mxnet"], env=dict(base, DMLC_ROLE=role),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        workers = [subprocess.Popen([sys.executable, os.path.join(HERE, "dist_worker.py"), str(tmp_path)],
                                    env=dict(base, DMLC_ROLE="worker"), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        procs += workers
        outputs = [w.communicate(timeout=240)[0] for w in workers]
        for w, out in zip(workers, outputs):
            assert w.returncode == 0, out[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    a = mx.nd.load(str(tmp_path / "worker0.params"))
    b = mx.nd.load(str(tmp_path / "worker1.params"))
    assert sorted(a) == sorted(b) == ["fc_bias", "fc_weight"]
    for name in a:
        np.testing.assert_array_equal(a[name].asnumpy(), b[name].asnumpy())
    # Training happened: the weights moved away from their initial values and a checkpoint was written.
    assert os.path.exists(tmp_path / "toy-0002.params")
    init = mx.nd.load(str(tmp_path / "toy-0001.params"))["arg:fc_weight"].asnumpy()
    assert not np.allclose(init, a["fc_weight"].asnumpy())
