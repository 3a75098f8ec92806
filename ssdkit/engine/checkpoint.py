"""Checkpoints: ``prefix-symbol.json``, ``prefix-NNNN.params``, ``prefix-NNNN.states`` and
``prefix-NNNN.json`` (trainer state), plus ``prefix-last.json`` naming the newest complete epoch.

Every file is written atomically and ``prefix-last.json`` last, so an interrupted save leaves the
previous checkpoint as the latest one. ``.params`` use MXNet's ``arg:``/``aux:`` naming, so
``mx.model.load_checkpoint(prefix, epoch)`` reads them too.
"""
import json
import os

import mxnet as mx

from ssdkit.engine import atomic


def _paths(prefix, epoch):
    return {"params": "%s-%04d.params" % (prefix, epoch), "states": "%s-%04d.states" % (prefix, epoch),
            "state": "%s-%04d.json" % (prefix, epoch)}


def save_params(path, arg_params, aux_params):
    """Write ``arg:``/``aux:`` parameters atomically (MXNet's .params format)."""
    blob = {"arg:" + k: v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    blob.update({"aux:" + k: v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    with atomic.atomic_path(path) as tmp:
        mx.nd.save(tmp, blob)


def load_params(path):
    """Read a .params file into ``(arg_params, aux_params)``; raise a clear error if it is unreadable."""
    try:
        blob = mx.nd.load(path)
    except mx.base.MXNetError as err:
        raise ValueError("cannot read parameters from %s (%s); is it a complete .params file?"
                         % (path, str(err).splitlines()[0])) from None
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


def save_checkpoint(prefix, epoch, symbol, arg_params, aux_params, optimizer_states=None,
                    trainer_state=None):
    """Write the checkpoint of ``epoch`` (1-based: the number of finished epochs).

    Parameters
    ----------
    prefix : str, e.g. ``output/ssd``
    epoch : int
    symbol : mx.sym.Symbol, the training symbol
    arg_params, aux_params : dict name -> NDArray
    optimizer_states : bytes or None, serialised optimizer state (see Trainer)
    trainer_state : dict or None, JSON-serialisable (epoch, iteration, best metric, ...)
    """
    paths = _paths(prefix, epoch)
    atomic.write_text(prefix + "-symbol.json", symbol.tojson())
    save_params(paths["params"], arg_params, aux_params)
    if optimizer_states is not None:
        atomic.write_bytes(paths["states"], optimizer_states)
    atomic.write_json(paths["state"], dict(trainer_state or {}, epoch=epoch))
    atomic.write_json(prefix + "-last.json", {"epoch": epoch})


def latest_epoch(prefix):
    """Epoch of the newest complete checkpoint, or ``None`` if there is none."""
    pointer = prefix + "-last.json"
    if not os.path.exists(pointer):
        return None
    with open(pointer) as f:
        epoch = int(json.load(f)["epoch"])
    missing = [p for k, p in _paths(prefix, epoch).items() if k != "states" and not os.path.exists(p)]
    if missing:
        raise FileNotFoundError("%s names epoch %d but %s is missing" % (pointer, epoch, missing[0]))
    return epoch


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
    paths = _paths(prefix, epoch)
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
