"""What a trained model needs besides its weights: ``<prefix>-meta.json``.

The meta file records the network preset, input size, class names, pixel normalisation and the
inference settings, so evaluation, deployment and the Detector rebuild the same graph without
the training config.
"""
import json
import os

from ssdkit.engine import atomic
from ssdkit.errors import InputError, MissingFileError, user_input

META_KEYS = ("network", "class_names", "mean", "std")
"""Keys every meta file holds (the family adds its own, see :meth:`ssdkit.api.ssd.SSDFamily.meta_fields`)."""


def model_meta(config, class_names):
    """The meta dict of a model of ``config``: the JSON form of its typed spec
    (:class:`~ssdkit.api.model_spec.SSDSpec` / :class:`~ssdkit.api.model_spec.FPNSpec`): the family's
    graph settings (SSD: network, data_shape, NMS; FPN: network, resize short/long, padded image shape,
    ``[fpn]`` settings), class names, mean and std."""
    from ssdkit.api.family import family_of

    meta = dict(family_of(config).meta_fields(config), class_names=list(class_names),
                mean=list(config.data.mean), std=list(config.data.std))
    return normalized_meta(meta)


def normalized_meta(meta, *, source="meta"):
    """``meta`` read into its typed spec and written back (:mod:`ssdkit.api.model_spec`): every field
    present, defaults filled in for files written before a field existed. ValueError naming ``source``
    and the key for an unknown key or a value of the wrong type."""
    from ssdkit.api.model_spec import spec_from_meta, spec_to_meta

    return spec_to_meta(spec_from_meta(meta, source=source))


def write_meta(prefix, config, class_names):
    """Write ``<prefix>-meta.json`` (:func:`model_meta`) and return it."""
    meta = model_meta(config, class_names)
    atomic.write_json(prefix + "-meta.json", meta)
    return meta


def read_meta(prefix):
    """``<prefix>-meta.json`` as a dict (:func:`normalized_meta`: the typed spec's JSON form, so files
    written before a field existed get its default); MissingFileError / InputError if it is absent, not
    JSON, lacks one of :data:`META_KEYS` or holds an unknown key or a value of the wrong type."""
    path = prefix + "-meta.json"
    if not os.path.exists(path):
        raise MissingFileError("%s not found: it is written by train.py next to the checkpoints and by "
                               "deploy.py next to the deploy model (is the prefix right?)" % path)
    with open(path) as f:
        try:
            meta = json.load(f)
        except ValueError as err:
            raise InputError("%s is not valid JSON (%s); it is written by train.py / deploy.py" % (path, err)) from None
    absent = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if absent:
        raise InputError("%s lacks %s; it is not a model meta file written by train.py / deploy.py"
                         % (path, ", ".join(absent)))
    with user_input():
        return normalized_meta(meta, source=path)


def inference_symbol(meta, *, max_detections=None):
    """The detection graph of a model (``get_symbol`` of its family and preset).

    ``max_detections``: rows per image (None: the meta's; SSD: -1 one per anchor; FPN: -1 keeps the
    meta's ``fpn.test_max_detections``).
    """
    from ssdkit.api.family import family_of

    return family_of(meta).inference_symbol(meta, max_detections=max_detections)


def resolve_epoch(prefix, epoch=None):
    """``.params`` path of a training run: ``epoch`` (int), ``"best"``, or None (best if any, else last)."""
    from ssdkit.engine.checkpoint import latest_epoch

    if epoch == "best" or (epoch is None and os.path.exists(prefix + "-best.params")):
        path = prefix + "-best.params"
        if not os.path.exists(path):
            raise MissingFileError("%s not found (no validation was run, so there is no best epoch); "
                                   "give --epoch N" % path)
        return path
    if epoch is None:
        epoch = latest_epoch(prefix)
        if epoch is None:
            raise MissingFileError("no checkpoint with prefix %s (no %s-last.json)" % (prefix, prefix))
    path = "%s-%04d.params" % (prefix, int(epoch))
    if not os.path.exists(path):
        raise MissingFileError("%s not found" % path)
    return path


def load_inference_model(prefix, epoch=None, *, deploy=False, overrides=None):
    """Everything needed to run a model.

    Parameters
    ----------
    prefix : str, a training prefix (``train.py --prefix``) or, with ``deploy=True``, a deploy prefix
        (``deploy.py --output``: ``PREFIX-symbol.json``, ``PREFIX-0000.params``, ``PREFIX-meta.json``)
    epoch : int, ``"best"`` or None (training prefixes only)
    overrides : :class:`~ssdkit.api.inference.InferenceOverrides` or None, inference settings that
        replace the meta's (NMS threshold, top-k, score threshold, detection rows; see
        :mod:`ssdkit.api.inference`): a training prefix's graph is rebuilt from the overridden meta, a
        deploy graph gets them as attributes of its detection operator. A graph built from a training
        meta without ``max_detections`` has one row per anchor (SSD) or the trained
        ``fpn.test_max_detections`` (FPN).

    Returns
    -------
    (symbol, arg_params, aux_params, meta); ``meta`` holds the overridden settings

    Raises
    ------
    MissingFileError, InputError : a file is absent or unreadable
    ParameterMismatchError : the parameters do not fit the graph (names or shapes), e.g. a meta file
        whose class list differs from the checkpoint's (see :func:`ssdkit.api.param_check.check_params`);
        a deploy model's parameters must fit both its saved graph and the graph its meta describes
        (except GluonCV zoo imports, whose meta does not record the head layout)
    InputError : an override the model cannot honour (e.g. ``nms_topk`` for FPN models)
    """
    import mxnet as mx

    from ssdkit import ops  # noqa: F401  (a saved graph holds ssdkit's operators)
    from ssdkit.api.family import family_of
    from ssdkit.api.inference import NO_OVERRIDES
    from ssdkit.api.param_check import check_params
    from ssdkit.engine.checkpoint import load_params

    overrides = overrides or NO_OVERRIDES
    meta = read_meta(prefix)
    family = family_of(meta)
    with user_input():      # the overrides are the user's settings
        meta = family.with_inference(meta, overrides)
    if deploy:
        for suffix in ("-symbol.json", "-0000.params"):
            if not os.path.exists(prefix + suffix):
                raise MissingFileError("%s not found: a deploy prefix holds -symbol.json, -0000.params and "
                                       "-meta.json (deploy.py --output)" % (prefix + suffix))
        symbol = mx.sym.load(prefix + "-symbol.json")
        with user_input():
            symbol = family.set_inference(symbol, overrides)
        params = prefix + "-0000.params"
    else:
        symbol = family.inference_symbol(meta)
        params = resolve_epoch(prefix, epoch)
    with user_input():
        arg, aux = load_params(params)
    shapes = family.inference_shapes(meta, 1)
    check_params(symbol, arg, aux, shapes, source=params, meta=meta, meta_source=prefix + "-meta.json")
    if deploy and not meta.get("gluoncv_zoo"):
        # the deploy graph fits its parameters; the meta must describe them too (its class names
        # label the detections): check against the graph the meta describes
        check_params(family.inference_symbol(meta), arg, aux, shapes, source=params, meta=meta,
                     meta_source=prefix + "-meta.json")
    return symbol, arg, aux, meta
