"""The training loop: MXNet Module over one or more devices, checkpoints, resume, NaN guard.

:func:`fit` is what ``train.py`` calls; it knows nothing about SSD beyond the metric it is given,
so the FPN path uses it too. What makes ``--resume`` exact, and which checkpoint it continues from,
is described in :mod:`ssdkit.engine.resume`.
"""
import contextlib
import logging
import math
import os
import time
import warnings

import mxnet as mx
import numpy as np

from ssdkit.engine import atomic, checkpoint, module_state, resume
from ssdkit.engine.horovod import HorovodKVStore, worker_gpu_ids
from ssdkit.engine.progress import progress_bar
from ssdkit.engine.schedule import build_lr_scheduler
from ssdkit.engine.workers import is_distributed, rank_and_workers
from ssdkit.errors import UserError
from ssdkit.symbol.common import he_initializer

log = logging.getLogger("ssdkit.train")


class NonFiniteLossError(UserError, RuntimeError):
    """A training loss, parameter or optimizer state became NaN or infinite.

    Nothing non-finite is ever written as a checkpoint: the message names the newest checkpoint on
    disk, which is finite, or says that there is none. A :class:`~ssdkit.errors.UserError` (the
    fix is a lower learning rate or clean data): the scripts print it as one line, from scratch
    and with ``--resume`` alike.
    """


def make_contexts(runtime):
    """Devices of a :class:`RuntimeConfig`: ``gpus="0,1"`` -> GPUs, else ``cpus`` CPU contexts.

    Under ``kv_store="horovod"`` ``gpus`` lists the machine's GPUs and each worker takes its share
    (:func:`~ssdkit.engine.horovod.worker_gpu_ids`).
    """
    if runtime.gpus.strip():
        try:
            ids = [int(i) for i in runtime.gpus.split(",") if i.strip()]
        except ValueError:
            raise ValueError("runtime.gpus must be a comma-separated list of GPU ids, got %r"
                             % runtime.gpus) from None
        if runtime.kv_store == "horovod":
            ids = worker_gpu_ids(ids)
        return [mx.gpu(i) for i in ids]
    return [mx.cpu(i) for i in range(runtime.cpus)]


def make_kvstore(runtime, num_devices):
    """The kvstore object (or None for one local device); distributed stores need the DMLC_* env,
    ``horovod`` a launch by ``horovodrun`` (see :mod:`ssdkit.engine.horovod`)."""
    if runtime.kv_store == "horovod":
        return HorovodKVStore()
    if "dist" in runtime.kv_store:
        return mx.kv.create(runtime.kv_store)
    if num_devices == 1:
        return None
    return mx.kv.create(runtime.kv_store)


@contextlib.contextmanager
def _updates_on_workers(kvstore):
    """Keep the optimizer on the workers under dist kvstores so its state can be checkpointed."""
    if kvstore is None or "dist" not in kvstore.type:
        yield
        return
    old = os.environ.get("MXNET_UPDATE_ON_KVSTORE")
    os.environ["MXNET_UPDATE_ON_KVSTORE"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["MXNET_UPDATE_ON_KVSTORE"]
        else:
            os.environ["MXNET_UPDATE_ON_KVSTORE"] = old


def _count_batches(data_iter):
    data_iter.reset()
    n = sum(1 for _ in data_iter)
    data_iter.reset()
    return n


def _last_good(prefix, epoch):
    """Words naming the newest checkpoint on disk (``epoch``, 0 or None: there is none)."""
    if not epoch:
        return "No checkpoint was written (%s-last.json does not exist)" % prefix
    return "The last finite checkpoint is %s (epoch %d, named by %s-last.json); it is intact" % (
        checkpoint.checkpoint_paths(prefix, epoch)["params"], epoch, prefix)


def _write_epoch(prefix, epoch, symbol, mod, args, auxs, state, history, is_best, best, device_aux):
    """Write the checkpoint of ``epoch`` (plus best and history files), ``-last.json`` last.

    The trainer state holds the history rows, so a kill anywhere in here loses no row: a resumed
    run takes them from the checkpoint it continues from.
    """
    checkpoint.save_checkpoint(prefix, epoch, symbol, args, auxs,
                               optimizer_states=module_state.get_optimizer_states(mod),
                               trainer_state=dict(state, history=history.rows), commit=False,
                               device_aux=device_aux)
    if is_best:
        checkpoint.save_params(prefix + "-best.params", args, auxs)
        atomic.write_json(prefix + "-best.json", {"epoch": epoch, "value": best})
    history.save()
    checkpoint.mark_latest(prefix, epoch)
    history.plot()


def fit(symbol, train_iter, config, *, train_metric, outputs=None, data_names=("data",),
        label_names=("label",), val_fn=None, arg_params=None, aux_params=None, fixed_param_names=None,
        initializer=None, progress=True, iters_per_epoch=None, kvstore="auto"):
    """Train ``symbol`` on ``train_iter`` as ``config`` says.

    Parameters
    ----------
    symbol : mx.sym.Symbol, the training graph (its loss outputs drive the gradients)
    train_iter : mx.io.DataIter yielding ``data (B, 3, H, W)`` and ``label (B, M, W)``; one with
        an integer ``epoch`` attribute (FolderDetIter) is resumed at the right epoch
    config : ssdkit.config.Config (solver, runtime sections are used here)
    train_metric : mx.metric.EvalMetric over the computed outputs; its values are logged and
        checked for NaN/inf after every batch
    outputs : sequence of str or None, names of the outputs the training executor computes, in
        this order (None: all); checkpoints save the whole ``symbol``
    val_fn : callable ``(arg_params, aux_params, epoch) -> dict`` of validation metrics
        (e.g. ``{"mAP": 0.7}``); the first key decides the best checkpoint
    arg_params, aux_params : dict, initial weights (pretrained or fine-tuning)
    fixed_param_names : list of str, parameters kept frozen
    initializer : mx.init.Initializer for parameters not given (default ``he_initializer()``)
    iters_per_epoch : int, batches per epoch (default: ``train_iter.num_batches`` when it knows it,
        else counted by running through ``train_iter`` once)
    kvstore : ``"auto"`` (from ``config.runtime``, see :func:`make_kvstore`), a KVStore or None

    Gradients are rescaled by ``1 / (devices * workers)``: the losses must be normalised per device
    batch (SSD's ``normalization='valid'``, or ``'batch'``).

    At the end of every epoch the parameters are read after all pending work has finished
    (``mx.nd.waitall()``: the last batch's BatchNorm statistics included), checked for NaN/inf
    with the optimizer state, and only then validated and written (:func:`_write_epoch`). With
    ``config.runtime.resume`` the run continues from the newest intact checkpoint, exactly as the
    uninterrupted run would have (:mod:`ssdkit.engine.resume` says what that covers).

    Returns
    -------
    dict with ``epoch`` (last finished), ``best`` (best validation value or None), ``history``,
    ``module``.

    Raises
    ------
    NonFiniteLossError
        when a loss, parameter or optimizer state becomes NaN/inf; nothing of that epoch is
        written, and the message names the newest (finite) checkpoint.
    ssdkit.engine.checkpoint.CheckpointError
        with ``resume`` when checkpoints exist but none is intact.
    ssdkit.engine.atomic.WriteError
        when a checkpoint file cannot be written (disk full); the message names the file.
    """
    solver, runtime = config.solver, config.runtime
    mx.random.seed(runtime.seed)      # parameter initialisation; each epoch reseeds (resume.epoch_seed)
    contexts = make_contexts(runtime)
    if isinstance(kvstore, str) and kvstore == "auto":
        kvstore = make_kvstore(runtime, len(contexts))
    rank, num_workers = rank_and_workers(kvstore)
    prefix = runtime.prefix
    if rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        for path in atomic.remove_stray_temps(prefix):
            log.info("removed %s, left by an interrupted write", path)

    begin_epoch, trainer_state, states_blob, ckpt = 0, {}, None, None
    if runtime.resume:
        begin_epoch, ckpt = resume.resume_point(prefix, rank)
        if ckpt is not None:
            arg_params, aux_params = ckpt["arg_params"], ckpt["aux_params"]
            trainer_state, states_blob = ckpt["trainer_state"], ckpt["optimizer_states"]
    if begin_epoch >= solver.epochs:
        log.info("already trained %d of %d epochs; nothing to do", begin_epoch, solver.epochs)

    graph = symbol if outputs is None else mx.sym.Group([symbol[name] for name in outputs])
    mod = mx.mod.Module(graph, data_names=list(data_names), label_names=list(label_names),
                        context=contexts, fixed_param_names=fixed_param_names)
    mod.bind(data_shapes=train_iter.provide_data, label_shapes=train_iter.provide_label, for_training=True)
    mod.init_params(initializer=initializer or he_initializer(),
                    arg_params=arg_params, aux_params=aux_params, allow_missing=True,
                    allow_extra=True, force_init=True)

    iters = iters_per_epoch or getattr(train_iter, "num_batches", None) or _count_batches(train_iter)
    resume.position_data(train_iter, begin_epoch, trainer_state)
    optimizer = mx.optimizer.create(
        solver.optimizer, learning_rate=solver.lr, wd=solver.wd,
        lr_scheduler=build_lr_scheduler(solver, iters),
        rescale_grad=1.0 / (len(contexts) * num_workers),
        clip_gradient=solver.clip_gradient if solver.clip_gradient > 0 else None,
        **({"momentum": solver.momentum} if solver.optimizer in ("sgd", "nag") else {}))
    with _updates_on_workers(kvstore), warnings.catch_warnings():
        # Module expects rescale_grad = 1/batch; our losses are normalised per device already.
        warnings.filterwarnings("ignore", message="Optimizer created manually outside Module")
        mod.init_optimizer(kvstore=kvstore, optimizer=optimizer)
    if states_blob is not None:
        # Momentum buffers and update counts come from the checkpoint; the schedule from the
        # current config (it may extend the run), positioned by the restored update count.
        restored = module_state.set_optimizer_states(mod, states_blob)
        restored.lr_scheduler = build_lr_scheduler(solver, iters)
        restored.lr = solver.lr

    if ckpt is not None:
        resume.restore_devices(mod, ckpt, prefix, len(contexts))

    history = resume.restore_history(prefix, begin_epoch, trainer_state)
    if begin_epoch and rank == 0:
        history.save()          # the history files agree with the checkpoint resumed from
    best = trainer_state.get("best")
    last_good = begin_epoch
    for epoch in range(begin_epoch, solver.epochs):
        mx.random.seed(resume.epoch_seed(runtime.seed, epoch))
        train_metric.reset()
        train_iter.reset()
        tic = time.time()
        bar = progress_bar(iters, "epoch %d/%d" % (epoch + 1, solver.epochs), progress and rank == 0)
        samples = 0
        for nbatch, batch in enumerate(train_iter):
            mod.forward_backward(batch)
            mod.update()
            mod.update_metric(train_metric, batch.label)
            names, values = train_metric.get()
            names, values = np.atleast_1d(names), np.atleast_1d(values)
            if not all(math.isfinite(float(v)) for v in values):
                if bar is not None:
                    bar.close()
                raise NonFiniteLossError(
                    "training loss became non-finite at epoch %d, batch %d (%s). %s; lower the "
                    "learning rate (solver.lr=%g) or check the data for broken boxes." % (
                        epoch + 1, nbatch + 1,
                        ", ".join("%s=%s" % (n, v) for n, v in zip(names, values)),
                        _last_good(prefix, last_good), solver.lr))
            samples += batch.data[0].shape[0]
            if bar is not None:
                # refresh=False: update() redraws, at most every mininterval (see engine/progress.py)
                bar.set_postfix({str(n): "%.4f" % v for n, v in zip(names, values)}, refresh=False,
                                samples_per_s="%.1f" % (samples / max(time.time() - tic, 1e-9)))
                bar.update(1)
        if bar is not None:
            bar.close()
        elapsed = time.time() - tic
        names, values = train_metric.get()
        row = {"epoch": epoch + 1, "time_s": round(elapsed, 3),
               "samples_per_s": round(samples / max(elapsed, 1e-9), 2),
               "lr": float(module_state.current_optimizer(mod).learning_rate)}
        row.update({str(n): float(v) for n, v in zip(np.atleast_1d(names), np.atleast_1d(values))})
        log.info("epoch %d: %s", epoch + 1, ", ".join("%s=%.4g" % (k, v) for k, v in row.items()
                                                      if k != "epoch"))
        # CPU BatchNorm updates its moving statistics in the backward pass, unseen by the engine's
        # dependency tracking: wait for all pending work before reading them.
        mx.nd.waitall()
        args, auxs = mod.get_params()
        device_aux = module_state.device_aux_states(mod) if len(contexts) > 1 else None
        bad = checkpoint.nonfinite_names(args, auxs, module_state.optimizer_state_arrays(mod))
        if bad:
            raise NonFiniteLossError(
                "epoch %d ended with NaN/inf in %d parameter or optimizer arrays (%s%s); it was not "
                "saved. %s; lower the learning rate (solver.lr=%g) or set solver.clip_gradient." % (
                    epoch + 1, len(bad), ", ".join(bad[:4]), ", ..." if len(bad) > 4 else "",
                    _last_good(prefix, last_good), solver.lr))
        is_best = False
        if val_fn is not None and ((epoch + 1) % runtime.val_interval == 0 or epoch + 1 == solver.epochs):
            scores = val_fn(args, auxs, epoch + 1)
            row.update(scores)
            key = next(iter(scores))
            log.info("epoch %d validation: %s", epoch + 1,
                     ", ".join("%s=%.4f" % (k, v) for k, v in scores.items()))
            if best is None or scores[key] > best:
                best, is_best = float(scores[key]), True
        history.rows.append(row)
        if rank == 0:
            state = {"iteration": (epoch + 1) * iters, "best": best, "num_workers": num_workers,
                     "num_devices": len(contexts), "data_epoch": resume.data_position(train_iter)}
            _write_epoch(prefix, epoch + 1, symbol, mod, args, auxs, state, history, is_best, best,
                         device_aux)
        last_good = epoch + 1
    if is_distributed(kvstore):
        kvstore._barrier()
    return {"epoch": max(begin_epoch, solver.epochs), "best": best, "history": history, "module": mod}
