"""What a trained model needs besides its weights: ``<prefix>-meta.json``.

The meta file records the network preset, input size, class names, pixel normalisation and the
inference settings, so evaluation, deployment and the Detector rebuild the same graph without
the training config.
"""
import json
import os

from ssdkit.engine import atomic


def write_meta(prefix, config, class_names):
    meta = {
        "network": config.model.network,
        "data_shape": config.model.data_shape,
        "class_names": list(class_names),
        "mean": list(config.data.mean),
        "std": list(config.data.std),
        "nms_thresh": config.model.nms_thresh,
        "nms_topk": config.model.nms_topk,
        "force_suppress": config.model.force_suppress,
    }
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
    """The detection graph of a model (``get_symbol`` of its preset)."""
    from ssdkit.symbol.symbol_factory import get_symbol

    return get_symbol(meta["network"], meta["data_shape"], len(meta["class_names"]),
                      nms_thresh=meta["nms_thresh"], nms_topk=meta["nms_topk"],
                      force_suppress=meta["force_suppress"], max_detections=max_detections)
