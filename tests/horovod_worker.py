"""One process of tests/test_horovod.py: trains a toy classifier with :func:`ssdkit.engine.trainer.fit`.

    horovodrun -np 2 -H localhost:2 --gloo python tests/horovod_worker.py OUT horovod EPOCHS [--resume]
    python tests/horovod_worker.py OUT local2 EPOCHS     # one process, 2 CPU contexts, the same batches
    python tests/horovod_worker.py OUT local1 EPOCHS     # one process, 1 CPU context, the same batches

Every mode trains on the same 128 samples in the same total batches of 32: Horovod worker ``r`` reads
rows ``32 i + 16 r ... 32 i + 16 r + 15`` of batch ``i`` (its shard), which are the rows the local
``local2`` run gives its context ``r``. Writes ``OUT/MODE-rank<r>.params`` (the final weights) and the
checkpoints ``OUT/MODE-*`` (rank 0 only).
"""
import argparse
import logging
import os

import mxnet as mx
import numpy as np

from ssdkit.config.schema import Config, RuntimeConfig, SolverConfig
from ssdkit.engine.trainer import fit, make_contexts, make_kvstore
from ssdkit.engine.workers import rank_and_workers

SAMPLES, TOTAL_BATCH = 128, 32


def toy_data():
    """``x (128, 8)`` float32 features and ``y (128,)`` labels in {0, 1, 2}."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(SAMPLES, 8)).astype(np.float32)
    y = (x[:, 0] - x[:, 2] > 0).astype(np.float32) + (x[:, 1] > 1).astype(np.float32)
    return x, y


def shard(array, rank, num_workers):
    """Rows of worker ``rank``: its slice of every total batch of 32."""
    per_worker = TOTAL_BATCH // num_workers
    rows = [i * TOTAL_BATCH + rank * per_worker + j for i in range(SAMPLES // TOTAL_BATCH)
            for j in range(per_worker)]
    return array[rows]


def toy_symbol():
    hidden = mx.sym.Activation(mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=16, name="fc1"),
                               act_type="relu")
    return mx.sym.SoftmaxOutput(mx.sym.FullyConnected(hidden, num_hidden=3, name="fc2"), mx.sym.var("label"),
                                normalization="batch", name="softmax")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("mode", choices=["horovod", "local2", "local1"])
    parser.add_argument("epochs", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    runtime = RuntimeConfig(kv_store="horovod" if args.mode == "horovod" else "local",
                            cpus=2 if args.mode == "local2" else 1,
                            prefix=os.path.join(args.out_dir, args.mode), seed=0, resume=args.resume)
    kv = make_kvstore(runtime, len(make_contexts(runtime)))
    rank, num_workers = rank_and_workers(kv)
    x, y = toy_data()
    x, y = shard(x, rank, num_workers), shard(y, rank, num_workers)
    data = mx.io.NDArrayIter(x, y, batch_size=TOTAL_BATCH // num_workers, label_name="label")
    cfg = Config(solver=SolverConfig(lr=0.1, momentum=0.9, epochs=args.epochs), runtime=runtime)
    result = fit(toy_symbol(), data, cfg, train_metric=mx.metric.CrossEntropy(), progress=False, kvstore=kv)
    arg_params, _ = result["module"].get_params()
    mx.nd.save(os.path.join(args.out_dir, "%s-rank%d.params" % (args.mode, rank)), arg_params)
    print("%s rank %d of %d finished epoch %d" % (args.mode, rank, num_workers, result["epoch"]))


if __name__ == "__main__":
    main()
