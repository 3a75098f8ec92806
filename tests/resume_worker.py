"""A tiny training problem for the resume tests (tests/test_resume.py), and a worker that trains it
and kills itself with SIGKILL at a chosen point.

The problem has everything that makes resuming hard: a shuffling, augmenting FolderDetIter (order
and augmentation drawn per epoch), BatchNorm running statistics, Dropout (MXNet's random state),
SGD with momentum and a stepped learning rate with warm-up. Images are made in memory from their
path (``mem/<i>``), so no file is read.

Run as a script: ``python resume_worker.py PREFIX EPOCHS KILL`` where KILL is ``batch:E:B`` (SIGKILL
inside batch B of epoch E, 1-based), ``replace:SUFFIX:N`` (SIGKILL when a file ending in SUFFIX is
about to be renamed into place for the N-th time, its temporary file written), or ``none``.
"""
import os
import signal
import sys
import time

import mxnet as mx
import numpy as np

from ssdkit.config.schema import Config, RuntimeConfig, SolverConfig
from ssdkit.dataset.augment import Augmentation
from ssdkit.dataset.folder_iter import FolderDetIter
from ssdkit.dataset.records import Record
from ssdkit.engine.history import History
from ssdkit.engine.trainer import fit

SIZE = 16
NUM_IMAGES = 24
BATCH = 4          # 6 batches per epoch


def load_image(path):
    """``(SIZE, SIZE, 3)`` uint8 image of ``mem/<i>``: noise, red channel saturated for odd i."""
    index = int(path.rsplit("/", 1)[1])
    image = np.random.default_rng(index).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    if index % 2:
        image[..., 0] = 255
    return image


def records():
    return [Record(path="mem/%d" % i, width=SIZE, height=SIZE, boxes=[[2, 3, 12, 13]], classes=[i % 2],
                   difficult=[False])
            for i in range(NUM_IMAGES)]


class KillingIter(FolderDetIter):
    """FolderDetIter that calls ``on_batch(epoch, batch)`` (1-based) before yielding each batch."""

    def __init__(self, *args, on_batch=None, **kwargs):
        self.on_batch = on_batch
        self._batch = 0
        super().__init__(*args, **kwargs)

    def reset(self):
        self._batch = 0
        super().reset()

    def next(self):
        batch = super().next()
        self._batch += 1
        if self.on_batch is not None:
            self.on_batch(self.epoch, self._batch)
        return batch


def make_iter(on_batch=None, seed=7, num_workers=2):
    """The shuffling, augmenting training iterator (6 batches of ``(4, 3, 16, 16)``)."""
    return KillingIter(records(), batch_size=BATCH, data_shape=(3, SIZE, SIZE),
                       augment=Augmentation(expand_prob=0.0, crop_samplers=()), shuffle=True,
                       seed=seed, num_workers=num_workers, loader=load_image, on_batch=on_batch)


class _SlowBackward(mx.operator.CustomOp):
    """Identity whose backward sleeps: the BatchNorm backward before it (which updates the moving
    statistics on CPU) finishes well after the step's other work has been queued."""

    def forward(self, is_train, req, in_data, out_data, aux):
        self.assign(out_data[0], req[0], in_data[0])

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        time.sleep(SLOW_BACKWARD_S)
        self.assign(in_grad[0], req[0], out_grad[0])


SLOW_BACKWARD_S = 0.2


@mx.operator.register("ssdkit_test_slow_backward")
class _SlowBackwardProp(mx.operator.CustomOpProp):
    def __init__(self):
        super().__init__(need_top_grad=True)

    def infer_shape(self, in_shape):
        return in_shape, [in_shape[0]], []

    def create_operator(self, ctx, shapes, dtypes):
        return _SlowBackward()


def make_symbol(slow_bn_backward=False):
    """Conv -> BatchNorm -> ReLU -> global pool -> Dropout -> FC -> softmax on the first label's class.

    ``slow_bn_backward``: a Custom op after the BatchNorm delays its backward by ``SLOW_BACKWARD_S``.
    """
    data, label = mx.sym.var("data"), mx.sym.var("label")
    net = mx.sym.Convolution(data, kernel=(3, 3), pad=(1, 1), num_filter=4, name="conv")
    net = mx.sym.BatchNorm(net, fix_gamma=False, momentum=0.8, name="bn")
    if slow_bn_backward:
        net = mx.sym.Custom(net, op_type="ssdkit_test_slow_backward")
    net = mx.sym.Activation(net, act_type="relu")
    net = mx.sym.Flatten(mx.sym.Pooling(net, global_pool=True, pool_type="avg", kernel=(1, 1)))
    net = mx.sym.Dropout(net, p=0.25)
    net = mx.sym.FullyConnected(net, num_hidden=2, name="fc")
    cls = mx.sym.reshape(mx.sym.slice(label, begin=(None, 0, 0), end=(None, 1, 1)), shape=(-1,))
    return mx.sym.SoftmaxOutput(net, cls, normalization="batch", name="softmax")


def _cross_entropy(label, pred):
    cls = label[:, 0, 0].astype(int)
    return float(-np.log(np.maximum(pred[np.arange(len(cls)), cls], 1e-12)).mean())


def make_metric():
    """Cross-entropy of the first object's class (NaN when the predictions are)."""
    return mx.metric.CustomMetric(_cross_entropy, name="xent", allow_extra_outputs=True)


def make_config(prefix, epochs, *, resume=False, lr=0.1, cpus=1):
    solver = SolverConfig(lr=lr, epochs=epochs, lr_steps=(2.0,), warmup_epochs=0.5, wd=1e-4)
    return Config(solver=solver, runtime=RuntimeConfig(prefix=prefix, seed=3, resume=resume, cpus=cpus))


def train(prefix, epochs, *, resume=False, on_batch=None, lr=0.1, metric=None, num_workers=2,
          slow_bn_backward=False, cpus=1):
    """:func:`fit` on the tiny problem (``cpus`` CPU contexts share each batch); returns its result."""
    return fit(make_symbol(slow_bn_backward), make_iter(on_batch, num_workers=num_workers),
               make_config(prefix, epochs, resume=resume, lr=lr, cpus=cpus),
               train_metric=metric or make_metric(), progress=False)


def _sigkill():
    os.kill(os.getpid(), signal.SIGKILL)


def main(prefix, epochs, kill):
    History.plot = lambda self, path=None: None      # as in test_resume.py: no curve PNG, faster
    on_batch = None
    if kill.startswith("batch:"):
        at = tuple(int(v) for v in kill.split(":")[1:])
        on_batch = lambda epoch, batch: _sigkill() if (epoch, batch) == at else None  # noqa: E731
    elif kill.startswith("replace:"):
        _, suffix, nth = kill.split(":")
        real_replace, seen = os.replace, []

        def replace(src, dst):
            if str(dst).endswith(suffix):
                seen.append(dst)
                if len(seen) == int(nth):
                    _sigkill()
            real_replace(src, dst)

        os.replace = replace
    train(prefix, int(epochs), resume=True, on_batch=on_batch)
    print("finished")


if __name__ == "__main__":
    main(*sys.argv[1:4])

