"""Freeze a trained detector into a deploy model: the detection graph without loss layers.

Writes ``OUTPUT-symbol.json``, ``OUTPUT-0000.params`` (only the parameters the graph uses) and
``OUTPUT-meta.json``. With ``portable=True`` the graph uses MXNet's built-in contrib operators
(:mod:`ssdkit.portable`) so plain MXNet runs it without ssdkit.

Loading a deploy model without ssdkit's helpers::

    sym, arg, aux = mx.model.load_checkpoint("OUTPUT", 0)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (1, 3, S, S))], for_training=False)
    mod.set_params(arg, aux)
    # or: net = mx.gluon.SymbolBlock.imports("OUTPUT-symbol.json", ["data"], "OUTPUT-0000.params")
    # (import ssdkit first unless the model is portable)

FPN models (``fpn_*`` networks) have two inputs, ``data (B, 3, H, W)`` with ``(H, W)`` = meta
``image_shape`` and ``im_info (B, 3)``: ``data_names=["data", "im_info"]``; ``ssdkit.Detector`` does the
resize and padding. They always need ssdkit (``portable=True`` raises ValueError).
"""
import os

from ssdkit.api.family import family_of
from ssdkit.api.model_files import inference_symbol, read_meta, resolve_epoch
from ssdkit.engine import atomic
from ssdkit.engine.checkpoint import load_params, save_params
from ssdkit.portable import to_portable


def deploy_model(prefix, output, *, epoch=None, portable=False, max_detections=100):
    """Write the deploy model of training run ``prefix`` to ``output``.

    Parameters
    ----------
    prefix : str, training prefix
    output : str, deploy prefix
    epoch : int, ``"best"`` or None (best, else last)
    portable : bool, use MXNet's contrib operators (all N detection rows; see ssdkit.portable);
        SSD networks only (FPN raises ValueError: its operators have no contrib equivalents)
    max_detections : int, detection rows per image of the ssdkit graph (SSD -1: one per anchor;
        FPN -1: the trained ``fpn.test_max_detections``)

    Returns
    -------
    dict with the written paths and the number of parameters.
    """
    meta = read_meta(prefix)
    family = family_of(meta)
    if portable:
        family.check_portable(meta)
    symbol = inference_symbol(meta, max_detections=-1 if portable else max_detections)
    if portable:
        symbol = to_portable(symbol)
    arg, aux = load_params(resolve_epoch(prefix, epoch))
    needed_arg = set(symbol.list_arguments()) - set(family.data_names)
    needed_aux = set(symbol.list_auxiliary_states())
    missing = sorted((needed_arg - set(arg)) | (needed_aux - set(aux)))
    if missing:
        raise ValueError("checkpoint of %s lacks %d parameters of the detection graph (%s)"
                         % (prefix, len(missing), ", ".join(missing[:5])))
    out_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(out_dir, exist_ok=True)
    atomic.write_text(output + "-symbol.json", symbol.tojson())
    save_params(output + "-0000.params", {k: arg[k] for k in needed_arg}, {k: aux[k] for k in needed_aux})
    meta = family.deploy_meta(meta, max_detections=-1 if portable else max_detections)
    atomic.write_json(output + "-meta.json", dict(meta, portable=bool(portable),
                                                  max_detections=-1 if portable else max_detections))
    return {"symbol": output + "-symbol.json", "params": output + "-0000.params",
            "meta": output + "-meta.json", "num_params": len(needed_arg) + len(needed_aux)}
