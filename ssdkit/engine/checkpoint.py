"""Checkpoints: ``prefix-symbol.json``, ``prefix-NNNN.params``, ``prefix-NNNN.states`` (optimizer),
``prefix-NNNN.devices`` (each device's auxiliary states, only when training on several devices) and
``prefix-NNNN.json`` (trainer state), plus ``prefix-last.json`` naming the newest complete epoch.

Every file is written atomically (:mod:`ssdkit.engine.atomic`), in the order symbol, params, states,
devices, trainer state, and ``prefix-last.json`` last (:func:`mark_latest`): an interrupted save leaves the
previous checkpoint as the latest one. ``.params`` use MXNet's ``arg:``/``aux:`` naming, so
``mx.model.load_checkpoint(prefix, epoch)`` reads them too. :func:`verify_checkpoint` reads a
checkpoint back and checks it (readable, parameters finite) before a run resumes from it.
"""
import glob
import json
import os
import pickle
import re

import mxnet as mx
import numpy as np

from ssdkit.engine import atomic
from ssdkit.errors import InputError


class CheckpointError(InputError):
    """A checkpoint file is missing, unreadable or holds non-finite values; the message names it.

    An :class:`~ssdkit.errors.InputError` (so a ``ValueError``): the scripts print it as one line.
    """


def checkpoint_paths(prefix, epoch):
    """The per-epoch files: dict ``params``, ``states`` (optimizer), ``devices`` (per-device
    auxiliary states), ``state`` (trainer, JSON)."""
    return {"params": "%s-%04d.params" % (prefix, epoch), "states": "%s-%04d.states" % (prefix, epoch),
            "devices": "%s-%04d.devices" % (prefix, epoch), "state": "%s-%04d.json" % (prefix, epoch)}


def _write_optional(path, write, value):
    """``write(path, value)`` when ``value`` is not None, else remove a stale ``path`` of an earlier run."""
    if value is not None:
        write(path, value)
    elif os.path.exists(path):
        os.remove(path)


def _save_arrays(path, arrays):
    """``mx.nd.save`` atomically; a failed write (e.g. "FileStream.Write incomplete" on a full disk)
    raises :class:`~ssdkit.engine.atomic.WriteError` naming ``path``."""
    with atomic.atomic_path(path) as tmp:
        try:
            mx.nd.save(tmp, arrays)
        except mx.base.MXNetError as err:
            raise atomic.write_failed(path, err) from None


def save_params(path, arg_params, aux_params):
    """Write ``arg:``/``aux:`` parameters atomically (MXNet's .params format).

    Raises
    ------
    ssdkit.engine.atomic.WriteError
        when the file cannot be written (e.g. disk full); the message names ``path``.
    """
    blob = {"arg:" + k: v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    blob.update({"aux:" + k: v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    _save_arrays(path, blob)


def load_params(path):
    """Read a .params file into ``(arg_params, aux_params)``; raise a clear error if it is unreadable."""
    try:
        blob = mx.nd.load(path)
    except mx.base.MXNetError as err:
        raise ValueError("cannot read parameters from %s (%s); is it a complete .params file?"
                         % (path, atomic.error_detail(err))) from None
    if not isinstance(blob, dict):
        raise ValueError("%s holds an unnamed list of arrays, not named parameters" % path)
    arg, aux = {}, {}
    for key, value in blob.items():
        kind, _, name = key.partition(":")
        if kind == "arg":
            arg[name] = value
        elif kind == "aux":
            aux[name] = value
        else:       # plain names (e.g. gluon's save_parameters)
            arg[key] = value
    return arg, aux


def nonfinite_names(*param_dicts):
    """Names of the arrays holding NaN or inf, over dicts ``name -> NDArray`` (sorted)."""
    bad = set()
    for params in param_dicts:
        for name, value in params.items():
            if not np.isfinite(value.asnumpy()).all():
                bad.add(name)
    return sorted(bad)


def save_checkpoint(prefix, epoch, symbol, arg_params, aux_params, optimizer_states=None,
                    trainer_state=None, commit=True, device_aux=None):
    """Write the checkpoint of ``epoch`` (1-based: the number of finished epochs).

    Parameters
    ----------
    prefix : str, e.g. ``output/ssd``
    epoch : int
    symbol : mx.sym.Symbol, the training symbol
    arg_params, aux_params : dict name -> NDArray; every value must be finite (the caller checks,
        see :func:`nonfinite_names`); pending writes to them must have finished (``mx.nd.waitall()``)
    optimizer_states : bytes or None, serialised optimizer state (see :mod:`module_state`)
    device_aux : dict ``"dev<k>:<name>" -> NDArray`` or None, every device's auxiliary states
        (with several devices their BatchNorm statistics differ; ``aux_params`` is their mean)
    trainer_state : dict or None, JSON-serialisable (epoch, iteration, best metric, history rows,
        data iterator position ...)
    commit : bool, write ``prefix-last.json`` naming this epoch at the end; with False the caller
        writes more files first and then calls :func:`mark_latest`
    """
    paths = checkpoint_paths(prefix, epoch)
    atomic.write_text(prefix + "-symbol.json", symbol.tojson())
    save_params(paths["params"], arg_params, aux_params)
    _write_optional(paths["states"], atomic.write_bytes, optimizer_states)
    _write_optional(paths["devices"], _save_arrays, device_aux)
    atomic.write_json(paths["state"], dict(trainer_state or {}, epoch=epoch))
    if commit:
        mark_latest(prefix, epoch)


def mark_latest(prefix, epoch):
    """Write ``prefix-last.json`` naming ``epoch`` (the commit of a checkpoint)."""
    atomic.write_json(prefix + "-last.json", {"epoch": int(epoch)})


def read_latest_pointer(prefix):
    """The epoch ``prefix-last.json`` names, or None when there is no such file.

    Raises
    ------
    CheckpointError
        when the file exists but is not ``{"epoch": N}`` JSON.
    """
    pointer = prefix + "-last.json"
    if not os.path.exists(pointer):
        return None
    try:
        with open(pointer) as f:
            epoch = int(json.load(f)["epoch"])
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise CheckpointError("%s is damaged (%s: %s); resume with --resume falls back to the newest "
                              "intact checkpoint" % (pointer, type(err).__name__, err)) from None
    return epoch


def latest_epoch(prefix):
    """Epoch of the newest complete checkpoint (named by ``prefix-last.json``), or ``None``.

    Raises
    ------
    CheckpointError
        when ``prefix-last.json`` is damaged or names a checkpoint whose files are missing.
    """
    epoch = read_latest_pointer(prefix)
    if epoch is None:
        return None
    paths = checkpoint_paths(prefix, epoch)
    missing = [paths[k] for k in ("params", "state") if not os.path.exists(paths[k])]
    if missing:
        raise CheckpointError("%s-last.json names epoch %d but %s is missing" % (prefix, epoch, missing[0]))
    return epoch


def saved_epochs(prefix):
    """Epochs that have a ``prefix-NNNN.params`` file, newest first (complete or not)."""
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"-(\d{4,})\.params$")
    epochs = []
    for path in glob.glob(glob.escape(prefix) + "-*.params"):
        match = pattern.match(os.path.basename(path))
        if match and int(match.group(1)) > 0:
            epochs.append(int(match.group(1)))
    return sorted(set(epochs), reverse=True)


def load_checkpoint(prefix, epoch=None):
    """Read a checkpoint.

    Returns
    -------
    dict with ``epoch``, ``symbol``, ``arg_params``, ``aux_params``, ``optimizer_states`` (bytes or
    None) and ``trainer_state`` (dict).
    """
    if epoch is None:
        epoch = latest_epoch(prefix)
        if epoch is None:
            raise FileNotFoundError("no checkpoint with prefix %s (no %s-last.json)" % (prefix, prefix))
    paths = checkpoint_paths(prefix, epoch)
    symbol = mx.sym.load(prefix + "-symbol.json")
    arg, aux = load_params(paths["params"])
    states = None
    if os.path.exists(paths["states"]):
        with open(paths["states"], "rb") as f:
            states = f.read()
    state = {}
    if os.path.exists(paths["state"]):
        with open(paths["state"]) as f:
            state = json.load(f)
    return {"epoch": epoch, "symbol": symbol, "arg_params": arg, "aux_params": aux,
            "optimizer_states": states, "trainer_state": state}


def verify_checkpoint(prefix, epoch, *, need_states=True):
    """Read the checkpoint of ``epoch`` and check everything a resumed run needs.

    Checks: the trainer state is a JSON object for this epoch, the parameters (and per-device
    auxiliary states, when saved) load and are all finite, the optimizer states exist
    (``need_states``) and unpickle, the symbol file loads.

    Returns
    -------
    dict as :func:`load_checkpoint` returns, plus ``device_aux`` (dict or None).

    Raises
    ------
    CheckpointError
        naming the first damaged file and what is wrong with it.
    """
    paths = checkpoint_paths(prefix, epoch)
    for key in ("params", "state") + (("states",) if need_states else ()):
        if not os.path.exists(paths[key]):
            raise CheckpointError("%s is missing" % paths[key])
    try:
        with open(paths["state"]) as f:
            state = json.load(f)
    except (ValueError, OSError) as err:
        raise CheckpointError("%s is not readable JSON (%s)" % (paths["state"], err)) from None
    if not isinstance(state, dict) or state.get("epoch") != epoch:
        raise CheckpointError("%s is not the trainer state of epoch %d" % (paths["state"], epoch))
    try:
        arg, aux = load_params(paths["params"])
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    bad = nonfinite_names(arg, aux)
    if bad:
        raise CheckpointError("%s holds NaN/inf in %d arrays (%s)" % (paths["params"], len(bad),
                                                                      ", ".join(bad[:4])))
    states = None
    if os.path.exists(paths["states"]):
        with open(paths["states"], "rb") as f:
            states = f.read()
        try:
            pickle.loads(states)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
            raise CheckpointError("%s is not a readable optimizer state (%s: %s)"
                                  % (paths["states"], type(err).__name__, err)) from None
    device_aux = None
    if os.path.exists(paths["devices"]):
        try:
            device_aux = mx.nd.load(paths["devices"])
        except mx.base.MXNetError as err:
            raise CheckpointError("cannot read %s (%s)"
                                  % (paths["devices"], atomic.error_detail(err))) from None
        if not isinstance(device_aux, dict) or nonfinite_names(device_aux):
            raise CheckpointError("%s holds unnamed or non-finite arrays" % paths["devices"])
    try:
        symbol = mx.sym.load(prefix + "-symbol.json")
    except mx.base.MXNetError as err:
        raise CheckpointError("%s-symbol.json is not readable (%s)"
                              % (prefix, atomic.error_detail(err))) from None
    return {"epoch": epoch, "symbol": symbol, "arg_params": arg, "aux_params": aux,
            "optimizer_states": states, "trainer_state": state, "device_aux": device_aux}
