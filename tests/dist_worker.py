"""One worker of tests/test_distributed.py: trains a toy classifier with dist_sync and saves its weights.

Run by the test with DMLC_* variables set; argv: output folder.
"""
import os
import sys

import mxnet as mx
import numpy as np

from ssdkit.config.schema import Config, RuntimeConfig, SolverConfig
from ssdkit.engine.trainer import fit, make_kvstore


def main(out_dir):
    runtime = RuntimeConfig(kv_store="dist_sync", prefix=os.path.join(out_dir, "toy"), seed=0)
    kv = make_kvstore(runtime, 1)
    rng = np.random.default_rng(100 + kv.rank)            # each worker sees different data
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] - x[:, 2] > 0).astype(np.float32)
    data = mx.io.NDArrayIter(x, y, batch_size=16, label_name="label")
    net = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=2, name="fc"),
                               mx.sym.var("label"), normalization="batch", name="softmax")
    cfg = Config(solver=SolverConfig(lr=0.1, epochs=2, lr_steps=(1.0,)), runtime=runtime)
    result = fit(net, data, cfg, train_metric=mx.metric.CrossEntropy(), progress=False, kvstore=kv)
    args, _ = result["module"].get_params()
    mx.nd.save(os.path.join(out_dir, "worker%d.params" % kv.rank), args)
    print("worker", kv.rank, "of", kv.num_workers, "done")


if __name__ == "__main__":
    main(sys.argv[1])
