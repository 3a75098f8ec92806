"""Train a detector (SSD or FPN, see :mod:`ssdkit.api.family`) from a Config: ``train.py`` is argparse
around :func:`train_detector`."""
import logging
import os
import re

from ssdkit.api.builtin_data import with_builtin_data
from ssdkit.api.data import class_names_of, load_split
from ssdkit.api.family import family_of, make_iterator
from ssdkit.api.model_files import write_meta
from ssdkit.engine.checkpoint import load_params
from ssdkit.engine.evaluator import make_validator
from ssdkit.engine.trainer import fit, make_contexts, make_kvstore
from ssdkit.engine.workers import rank_and_workers
from ssdkit.errors import MissingFileError, user_input
from ssdkit.metrics.voc import VOCMeanAP

log = logging.getLogger("ssdkit.train")


def initial_weights(config, train_symbol, data_shape):
    """``(arg_params, aux_params)`` to start from: ``model.finetune`` or ``model.pretrained`` or none.

    Parameters whose shape differs from the graph's (e.g. class heads of another dataset) are
    dropped with a log line and re-initialised. ``data_shape``: the ``data`` shape, or a dict
    ``{input name: shape}`` of every graph input.
    """
    model = config.model
    for key, path in (("model.finetune", model.finetune), ("model.pretrained", model.pretrained)):
        if path and not os.path.isfile(path):
            raise MissingFileError("%s: weight file %s not found" % (key, path))
    if model.finetune:
        arg, aux = load_params(model.finetune)
        source = model.finetune
    elif model.pretrained:
        from ssdkit.weights import import_imagenet

        arg, aux = import_imagenet(model.pretrained, model.network)
        source = model.pretrained
    else:
        return None, None
    shapes = data_shape if isinstance(data_shape, dict) else {"data": data_shape}
    arg_shapes, _, aux_shapes = train_symbol.infer_shape(**shapes)
    wanted = dict(zip(train_symbol.list_arguments(), arg_shapes))
    wanted.update(zip(train_symbol.list_auxiliary_states(), aux_shapes))
    kept_arg = {k: v for k, v in arg.items() if k in wanted and tuple(v.shape) == tuple(wanted[k])}
    kept_aux = {k: v for k, v in aux.items() if k in wanted and tuple(v.shape) == tuple(wanted[k])}
    dropped = sorted(set(arg) - set(kept_arg)) + sorted(set(aux) - set(kept_aux))
    log.info("initial weights from %s: %d tensors loaded, %d not used (%s)", source,
             len(kept_arg) + len(kept_aux), len(dropped), ", ".join(dropped[:6]) + ("..." if len(dropped) > 6 else ""))
    if not kept_arg:
        raise ValueError("%s holds no parameter of the %s graph; is it the right file for this network?"
                         % (source, model.network))
    return kept_arg, kept_aux


def frozen_parameters(symbol, patterns, inputs=("data", "label")):
    """Argument names matching any regular expression in ``patterns`` (the graph ``inputs`` excluded)."""
    regexes = [re.compile(p) for p in patterns]
    names = [n for n in symbol.list_arguments() if n not in inputs]
    frozen = [n for n in names if any(r.search(n) for r in regexes)]
    for pattern, regex in zip(patterns, regexes):
        if not any(regex.search(n) for n in names):
            raise ValueError("--freeze pattern %r matches no parameter of the graph" % pattern)
    return frozen


def train_detector(config, *, progress=True, builtin=None):
    """Train as ``config`` says; return :func:`ssdkit.engine.trainer.fit`'s result plus ``class_names``.

    A config that names no data trains on the built-in synthetic dataset (``builtin``, a
    :class:`~ssdkit.api.builtin_data.BuiltinData`: written on first use; see
    :func:`~ssdkit.api.builtin_data.with_builtin_data`).
    Bad input found while setting up (data, class names, weight files, devices, settings) raises
    :class:`ssdkit.errors.UserError` before the first step.
    """
    with user_input():
        config = with_builtin_data(config, builtin)
    family = family_of(config)
    with user_input():      # devices, data, class names, weight files, freeze patterns: the user's input
        contexts = make_contexts(config.runtime)
        kvstore = make_kvstore(config.runtime, len(contexts))
        rank, parts = rank_and_workers(kvstore)

        train_set = load_split(config, "train")
        val_set = load_split(config, "val")
        class_names = class_names_of(config, train_set)
        if val_set is not None and tuple(val_set.class_names) != tuple(class_names):
            raise ValueError("validation classes %s differ from training classes %s"
                             % (list(val_set.class_names), list(class_names)))
        train_iter = make_iterator(config, "train", train_set, part_index=rank, num_parts=parts)
        train_sym, infer_sym = family.symbols(config, len(class_names), num_devices=len(contexts))
        device_batch = config.data.batch_size // len(contexts)
        arg, aux = initial_weights(config, train_sym, family.input_shapes(config, device_batch))
        label_names = tuple(desc.name for desc in train_iter.provide_label)   # FPN mask models: + gt_masks
        inputs = family.data_names + label_names
        fixed = frozen_parameters(train_sym, config.model.freeze, inputs) if config.model.freeze else None

    val_fn = None
    if config.data.val:
        with user_input():
            val_iter = make_iterator(family.inference_config(config), "val", val_set)  # at test_shape
        use_07 = config.eval.metric != "voc12"
        val_fn = make_validator(infer_sym, val_iter,
                                lambda: VOCMeanAP(class_names, iou_thresh=config.eval.iou_thresh,
                                                  use_07_metric=use_07),
                                config.runtime, progress=False, label_transform=family.metric_labels)
    if rank == 0:
        write_meta(config.runtime.prefix, config, class_names)
    log.info("training %s @%s on %d images, %d classes, %d device(s) x %d worker(s)", config.model.network,
             family.input_shapes(config, 1)["data"][2:], len(train_set) if train_set is not None else -1,
             len(class_names), len(contexts), parts)
    result = fit(train_sym, train_iter, config, train_metric=family.train_metric(),
                 outputs=family.train_outputs, data_names=family.data_names,
                 label_names=label_names, val_fn=val_fn,
                 arg_params=arg, aux_params=aux,
                 fixed_param_names=fixed, progress=progress, kvstore=kvstore,
                 initializer=family.initializer(len(class_names)))
    result["class_names"] = class_names
    return result
