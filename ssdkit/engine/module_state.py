"""Reading and restoring a Module's optimizer state (momentum buffers, update counts, schedule).

MXNet's Module keeps its updater either locally (``_updater``) or inside the kvstore
(``_kvstore._updater``, when it updates on the kvstore) and offers no public accessor that also
carries the optimizer object. This file is the only place in ssdkit that reaches into those
attributes (and to the executor group's per-device auxiliary states).
"""
import pickle

import mxnet as mx


def _updater(mod):
    if getattr(mod, "_update_on_kvstore", False):
        updater = getattr(mod._kvstore, "_updater", None)
        if updater is None:
            raise RuntimeError("optimizer state lives on the parameter servers (update on kvstore); "
                               "train with MXNET_UPDATE_ON_KVSTORE=0 to checkpoint it")
        return updater
    return mod._updater


def get_optimizer_states(mod):
    """Serialised optimizer states *and* the optimizer (update count, lr schedule position)."""
    return _updater(mod).get_states(dump_optimizer=True)


def set_optimizer_states(mod, blob):
    """Restore what :func:`get_optimizer_states` returned (the module must be bound and initialised)."""
    updater = _updater(mod)
    updater.set_states(blob)
    mod._optimizer = updater.optimizer
    return updater.optimizer


def current_optimizer(mod):
    """The optimizer the module really uses (for reading the learning rate)."""
    return _updater(mod).optimizer


def _leaves(value):
    if value is None:
        return []
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _flatten_states(states, idx2name):
    """``{index: NDArray | tuple | None}`` -> ``{"<param>:opt<k>": NDArray}`` (``@<index>`` added
    when several device copies of one parameter have their own state)."""
    arrays = {}
    for index in sorted(states):
        for k, leaf in enumerate(_leaves(states[index])):
            key = "%s:opt%d" % (idx2name.get(index, index), k)
            arrays[key if key not in arrays else "%s@%d" % (key, index)] = leaf
    return arrays


def optimizer_state_arrays(mod):
    """The optimizer's live state arrays (momentum, Adam moments ...).

    Returns
    -------
    dict ``"<param name>:opt<k>" -> NDArray``: the k-th state array of that parameter.
    """
    updater = _updater(mod)
    return _flatten_states(updater.states, updater.optimizer.idx2name)


def blob_state_arrays(blob):
    """What :func:`optimizer_state_arrays` returns, read from a :func:`get_optimizer_states` blob.

    Returns
    -------
    (arrays, optimizer) : dict as :func:`optimizer_state_arrays`, and the pickled optimizer
    (``num_update``, ``_index_update_count`` ...).
    """
    states, optimizer = pickle.loads(blob)
    return _flatten_states(states, optimizer.idx2name), optimizer


def device_aux_states(mod):
    """Every device's own auxiliary states (BatchNorm moving statistics differ per device).

    Call after ``mx.nd.waitall()``. Returns dict ``"dev<k>:<aux name>" -> NDArray`` (CPU copies).
    """
    group = mod._exec_group
    return {"dev%d:%s" % (k, name): array.copyto(mx.cpu())
            for name, block in zip(group.aux_names, group.aux_arrays) for k, array in enumerate(block)}


def set_device_aux_states(mod, arrays):
    """Give every device its own auxiliary states back (what :func:`device_aux_states` returned).

    Returns
    -------
    bool, False (and nothing changed) when ``arrays`` is not for this module's devices and names.
    """
    group = mod._exec_group
    wanted = {"dev%d:%s" % (k, name) for name, block in zip(group.aux_names, group.aux_arrays)
              for k in range(len(block))}
    if set(arrays) != wanted:
        return False
    for name, block in zip(group.aux_names, group.aux_arrays):
        for k, array in enumerate(block):
            arrays["dev%d:%s" % (k, name)].copyto(array)
    return True
