"""Reading and restoring a Module's optimizer state (momentum buffers, update counts, schedule).

MXNet's Module keeps its updater either locally (``_updater``) or inside the kvstore
(``_kvstore._updater``, when it updates on the kvstore) and offers no public accessor that also
carries the optimizer object. This file is the only place in ssdkit that reaches into those
attributes.
"""


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


def optimizer_state_arrays(mod):
    """The optimizer's state arrays (momentum, Adam moments ...) as a dict ``"index/k" -> NDArray``."""
    arrays = {}

    def collect(key, value):
        if value is None:
            return
        if isinstance(value, (tuple, list)):
            for k, item in enumerate(value):
                collect("%s/%d" % (key, k), item)
        else:
            arrays[key] = value

    for index, value in _updater(mod).states.items():
        collect(str(index), value)
    return arrays
