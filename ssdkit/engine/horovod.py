"""Horovod as a kvstore: ``--kv-store horovod`` under ``horovodrun`` (MXNet Module, symbol API).

Each process started by ``horovodrun -np N`` is one worker with its own devices. :class:`HorovodKVStore`
plugs into ``mx.mod.Module`` where ``dist_sync`` would: Module calls :meth:`HorovodKVStore.pushpull` with
each parameter's gradients (one array per local device); the store sums them over the devices, sums
the result over the workers with Horovod's allreduce, and writes the total back to every device. The
optimizer then runs on each worker (``rescale_grad = 1 / (devices * workers)`` in
:func:`ssdkit.engine.trainer.fit`, exactly as with ``dist_sync``), so its state is a plain MXNet
optimizer state that rank 0 checkpoints and every worker reads back on ``--resume``.

Horovod must be built with MXNet support (see README.md)::

    HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \\
        HOROVOD_WITHOUT_PYTORCH=1 pip install --no-build-isolation horovod==0.28.1
"""
import os

import mxnet as mx

INSTALL_HINT = ("HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 "
                "HOROVOD_WITHOUT_PYTORCH=1 pip install --no-build-isolation horovod==0.28.1")


def _import_horovod():
    try:
        import horovod.mxnet as hvd
    except ImportError as err:
        raise RuntimeError("--kv-store horovod needs Horovod built for MXNet (%s). Install it into this "
                           "environment with: %s" % (err, INSTALL_HINT)) from None
    return hvd


def worker_gpu_ids(ids, local_rank=None, local_size=None):
    """The GPUs of one worker: ``ids`` lists the machine's GPUs, worker ``r`` of ``n`` takes ``ids[r::n]``.

    Parameters
    ----------
    ids : list of int, the GPU ids of ``--gpus`` (the same on every worker of a machine)
    local_rank, local_size : int, this worker's rank on its machine and the workers there (default:
        ``HOROVOD_LOCAL_RANK`` / ``HOROVOD_LOCAL_SIZE``, set by ``horovodrun``; 0 / 1 without it)

    Returns
    -------
    list of int, ``len(ids) // local_size`` ids, e.g. ``[1]`` for ids ``[0, 1]`` and local rank 1.
    """
    local_rank = int(os.environ.get("HOROVOD_LOCAL_RANK", 0)) if local_rank is None else local_rank
    local_size = int(os.environ.get("HOROVOD_LOCAL_SIZE", 1)) if local_size is None else local_size
    if not ids or len(ids) % local_size:
        raise ValueError("--gpus %s cannot be shared by the %d Horovod workers of this machine: give a "
                         "multiple of %d GPU ids (one or more per worker)"
                         % (",".join(str(i) for i in ids), local_size, local_size))
    return list(ids)[local_rank::local_size]


class HorovodKVStore(mx.kvstore.KVStoreBase):
    """Gradient sums over devices and Horovod workers, behind MXNet's kvstore interface.

    Created once per process (it calls ``horovod.mxnet.init()``); ``type`` is ``"horovod"``. Without
    ``horovodrun`` it is a single worker.
    """

    def __init__(self):
        self._hvd = _import_horovod()
        self._hvd.init()
        self._barriers = 0

    @property
    def type(self):
        return "horovod"

    @property
    def rank(self):
        return self._hvd.rank()

    @property
    def num_workers(self):
        return self._hvd.size()

    @staticmethod
    def is_capable(capability):
        """No optimizer on the store: Module keeps the updater (and its state) on each worker."""
        return False

    def init(self, key, value):
        """Check that this worker starts from rank 0's value of parameter ``key``.

        Every worker initialises its parameters with the same seed (or reads the same checkpoint); a
        worker whose value differs would silently train another model, so that is an error.
        """
        if self.num_workers == 1:
            return
        for name, array in _as_pairs(key, value):
            root = array.copy()
            self._hvd.broadcast_(root, root_rank=0, name="init." + str(name))
            if not (root == array).min().asscalar():
                raise RuntimeError("Horovod worker %d starts with another value of %s than rank 0: "
                                   "initialise with the same runtime.seed and weight files on every "
                                   "worker" % (self.rank, name))

    def pushpull(self, key, value, out=None, priority=0):
        """Sum ``value`` over the devices and the workers into ``out`` (default: into ``value``).

        Parameters
        ----------
        key : str or int, the parameter's name (the same on every worker)
        value : NDArray or list of NDArray, its gradient on each local device
        out : NDArray or list of NDArray, where the sum goes (every array gets the whole sum)
        priority : int, Horovod's scheduling priority (Module passes minus the parameter index)
        """
        values = value if isinstance(value, (list, tuple)) else [value]
        outs = values if out is None else (out if isinstance(out, (list, tuple)) else [out])
        if len(values) == 1:
            total = values[0] if out is None else values[0].copy()
        else:
            home = values[0].context
            total = mx.nd.add_n(*[v.as_in_context(home) for v in values])
        if self.num_workers > 1:
            self._hvd.allreduce_(total, op=self._hvd.Sum, name=str(key), priority=priority)
        for target in outs:
            if target is not total:
                total.copyto(target)

    def broadcast(self, key, value, out, priority=0):
        """Rank 0's ``value`` into ``out`` (an array or a list of arrays) on every worker."""
        root = value.copy()
        if self.num_workers > 1:
            self._hvd.broadcast_(root, root_rank=0, name="broadcast." + str(key), priority=priority)
        for target in (out if isinstance(out, (list, tuple)) else [out]):
            root.copyto(target)

    def barrier(self):
        """Return once every worker has reached this call."""
        if self.num_workers > 1:
            self._barriers += 1
            self._hvd.allreduce(mx.nd.zeros((1,)), op=self._hvd.Sum,
                                name="barrier.%d" % self._barriers).wait_to_read()

    # mx.kv.KVStore names its barrier ``_barrier`` (MXNet 1.9.1); the trainer calls it by that name.
    _barrier = barrier


def _as_pairs(key, value):
    if isinstance(key, (list, tuple)):
        return list(zip(key, value))
    return [(key, value)]
