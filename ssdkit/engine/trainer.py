"""The training loop: MXNet Module over one or more devices, checkpoints, resume, NaN guard.

:func:`fit` is what ``train.py`` calls; it knows nothing about SSD beyond the metric it is given,
so the FPN path uses it too.
"""
import contextlib
import logging
import math
import os
import time
import warnings

import mxnet as mx
import numpy as np

from ssdkit.engine import atomic, checkpoint, module_state
from ssdkit.engine.history import History
from ssdkit.engine.progress import progress_bar
from ssdkit.engine.schedule import build_lr_scheduler
from ssdkit.symbol.common import he_initializer

log = logging.getLogger("ssdkit.train")


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite; the last good checkpoint was left untouched."""


def make_contexts(runtime):
    """Devices of a :class:`RuntimeConfig`: ``gpus="0,1"`` -> GPUs, else ``cpus`` CPU contexts."""
    if runtime.gpus.strip():
        try:
            ids = [int(i) for i in runtime.gpus.split(",") if i.strip()]
        except ValueError:
            raise ValueError("runtime.gpus must be a comma-separated list of GPU ids, got %r"
                             % runtime.gpus) from None
        return [mx.gpu(i) for i in ids]
    return [mx.cpu(i) for i in range(runtime.cpus)]


def make_kvstore(runtime, num_devices):
    """The kvstore object (or None for one local device); distributed stores need the DMLC_* env."""
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


def fit(symbol, train_iter, config, *, train_metric, outputs=None, data_names=("data",),
        label_names=("label",), val_fn=None, arg_params=None, aux_params=None, fixed_param_names=None,
        initializer=None, progress=True, iters_per_epoch=None, kvstore="auto"):
    """Train ``symbol`` on ``train_iter`` as ``config`` says.

    Parameters
    ----------
    symbol : mx.sym.Symbol, the training graph (its loss outputs drive the gradients)
    train_iter : mx.io.DataIter yielding ``data (B, 3, H, W)`` and ``label (B, M, W)``
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

    Returns
    -------
    dict with ``epoch`` (last finished), ``best`` (best validation value or None), ``history``.

    Raises
    ------
    NonFiniteLossError
        when a loss becomes NaN/inf; the checkpoints on disk are those of the last good epoch.
    """
    solver, runtime = config.solver, config.runtime
    mx.random.seed(runtime.seed)      # parameter initialisation (and MXNet-side randomness)
    contexts = make_contexts(runtime)
    if isinstance(kvstore, str) and kvstore == "auto":
        kvstore = make_kvstore(runtime, len(contexts))
    rank = kvstore.rank if kvstore is not None and "dist" in kvstore.type else 0
    num_workers = kvstore.num_workers if kvstore is not None and "dist" in kvstore.type else 1
    prefix = runtime.prefix
    if rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)

    begin_epoch, trainer_state, states_blob = 0, {}, None
    if runtime.resume:
        last = checkpoint.latest_epoch(prefix)
        if last is None:
            log.warning("--resume: no checkpoint at %s, starting from scratch", prefix)
        else:
            ckpt = checkpoint.load_checkpoint(prefix, last)
            arg_params, aux_params = ckpt["arg_params"], ckpt["aux_params"]
            begin_epoch, trainer_state, states_blob = last, ckpt["trainer_state"], ckpt["optimizer_states"]
            log.info("resuming from %s epoch %d", prefix, last)
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

    history = History.load(prefix, up_to_epoch=begin_epoch)
    best = trainer_state.get("best")
    for epoch in range(begin_epoch, solver.epochs):
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
                    "training loss became non-finite at epoch %d, batch %d (%s). The last good "
                    "checkpoint (%s, epoch %s) is intact; lower the learning rate (solver.lr=%g) or "
                    "check the data for broken boxes." % (
                        epoch + 1, nbatch + 1,
                        ", ".join("%s=%s" % (n, v) for n, v in zip(names, values)),
                        prefix, checkpoint.latest_epoch(prefix), solver.lr))
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
        args, auxs = mod.get_params()
        is_best = False
        if val_fn is not None and ((epoch + 1) % runtime.val_interval == 0 or epoch + 1 == solver.epochs):
            scores = val_fn(args, auxs, epoch + 1)
            row.update(scores)
            key = next(iter(scores))
            log.info("epoch %d validation: %s", epoch + 1,
                     ", ".join("%s=%.4f" % (k, v) for k, v in scores.items()))
            if best is None or scores[key] > best:
                best, is_best = float(scores[key]), True
        if rank == 0:
            state = {"iteration": (epoch + 1) * iters, "best": best, "num_workers": num_workers}
            checkpoint.save_checkpoint(prefix, epoch + 1, symbol, args, auxs,
                                       optimizer_states=module_state.get_optimizer_states(mod),
                                       trainer_state=state)
            if is_best:
                checkpoint.save_params(prefix + "-best.params", args, auxs)
                atomic.write_json(prefix + "-best.json", {"epoch": epoch + 1, "value": best})
            history.append(row)
            history.plot()
    if kvstore is not None and "dist" in kvstore.type:
        kvstore._barrier()
    return {"epoch": max(begin_epoch, solver.epochs), "best": best, "history": history, "module": mod}
