"""What a trained model needs besides its weights: ``<prefix>-meta.json``.

The meta file records the network preset, input size, class names, pixel normalisation and the
inference settings, so evaluation, deployment and the Detector rebuild the same graph without
the training config.
"""
import json
import os

from ssdkit.engine import atomic


def model_meta(config, class_names):
    """The meta dict of a model of ``config``: the family's graph settings (SSD: network, data_shape,
    NMS; FPN: network, resize short/long, padded image shape, ``[fpn]`` settings), class names, mean
    and std."""
    from ssdkit.api.family import family_of

    return dict(family_of(config).meta_fields(config), class_names=list(class_names),
                mean=list(config.data.mean), std=list(config.data.std))


def write_meta(prefix, config, class_names):
    """Write ``<prefix>-meta.json`` (:func:`model_meta`) and return it."""
    meta = model_meta(config, class_names)
    atomic.write_json(prefix + "-meta.json", meta)
    return meta


def read_meta(prefix):
    path = prefix + "-meta.json"
    if not os.path.exists(path):
        raise FileNotFoundError("%s not found: it is written by train.py next to the checkpoints "
                                "(is --prefix the training prefix?)" % path)
    with open(path) as f:
        return json.load(f)


def inference_symbol(meta, *, max_detections=-1):
    """The detection graph of a model (``get_symbol`` of its family and preset).

    ``max_detections``: rows per image (SSD: -1 one per anchor; FPN: -1 keeps the meta's
    ``fpn.test_max_detections``).
    """
    from ssdkit.api.family import family_of

    return family_of(meta).inference_symbol(meta, max_detections=max_detections)


def resolve_epoch(prefix, epoch=None):
    """``.params`` path of a training run: ``epoch`` (int), ``"best"``, or None (best if any, else last)."""
    from ssdkit.engine.checkpoint import latest_epoch

    if epoch == "best" or (epoch is None and os.path.exists(prefix + "-best.params")):
        path = prefix + "-best.params"
        if not os.path.exists(path):
            raise FileNotFoundError("%s not found (no validation was run, so there is no best epoch); "
                                    "give --epoch N" % path)
        return path
    if epoch is None:
        epoch = latest_epoch(prefix)
        if epoch is None:
            raise FileNotFoundError("no checkpoint with prefix %s" % prefix)
    path = "%s-%04d.params" % (prefix, int(epoch))
    if not os.path.exists(path):
        raise FileNotFoundError("%s not found" % path)
    return path


def load_inference_model(prefix, epoch=None, *, deploy=False, max_detections=-1):
    """Everything needed to run a model.

    Parameters
    ----------
    prefix : str, a training prefix (``train.py --prefix``) or, with ``deploy=True``, a deploy prefix
        (``deploy.py --output``: ``PREFIX-symbol.json``, ``PREFIX-0000.params``, ``PREFIX-meta.json``)
    epoch : int, ``"best"`` or None (training prefixes only)
    max_detections : int, detection rows of a rebuilt graph (-1: one per anchor)

    Returns
    -------
    (symbol, arg_params, aux_params, meta)
    """
    import mxnet as mx

    from ssdkit.engine.checkpoint import load_params

    meta = read_meta(prefix)
    if deploy:
        symbol = mx.sym.load(prefix + "-symbol.json")
        arg, aux = load_params(prefix + "-0000.params")
    else:
        symbol = inference_symbol(meta, max_detections=max_detections)
        arg, aux = load_params(resolve_epoch(prefix, epoch))
    return symbol, arg, aux, meta
