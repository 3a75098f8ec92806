"""Export an SSD deploy graph to one ONNX file that onnxruntime runs without MXNet or ssdkit.

The file holds

* the network up to the detection operator's inputs, ``cls_prob (B, C+1, N)`` and ``loc_pred (B, N*4)``,
  converted by MXNet's own ONNX converters (``mxnet.onnx``, opset 13, dynamic batch). Their converter
  class is called directly: ``mx.onnx.export_model`` stamps the installed onnx's newest opset (21 for
  onnx 1.16) on nodes converted for opset 13, and some operators changed in between (``Reduce*`` axes);
* the anchors ``(N, 4)`` of the fixed input size ``S`` (the meta's inference size) folded to a constant:
  ``MultiBoxPrior`` depends only on the feature map sizes, so it is run once here;
* ``MultiBoxDetection`` as ONNX operators (:mod:`ssdkit.api.onnx_detection`: decoding, threshold,
  ``nms_topk``, per-class or class-agnostic ``NonMaxSuppression``, rows per image);
* the model's meta (:mod:`ssdkit.api.model_files`) as the metadata entry :data:`META_KEY`, so class
  names, normalisation and the inference settings travel with the file.

Input ``data (B, 3, S, S)`` float32, normalised as the meta's ``mean`` / ``std`` say (what
:meth:`ssdkit.Detector.preprocess` gives); output ``detections (B, R, 6)`` rows ``[cls_id, score, xmin,
ymin, xmax, ymax]`` normalised to [0, 1], padded with rows of -1, as ssdkit's MXNet deploy model gives them.

Running it by hand::

    import onnxruntime as ort
    sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    dets = sess.run(None, {"data": batch})[0]       # (B, R, 6)

FPN models are refused (:func:`check_onnx`): their ``FPNProposal``, ``MultiLevelROIAlign`` and
``RCNNDetection`` operators have no ONNX converters. INT8 graphs are refused too (oneDNN's quantized
operators have no ONNX form here); export the fp32 model and quantize with onnxruntime's tools instead.
"""
import json
import logging

import mxnet as mx
import numpy as np

from ssdkit import ops  # noqa: F401  (the deploy graph holds ssdkit's operators)
from ssdkit.api.family import family_of
from ssdkit.api.inference import has_op
from ssdkit.engine import atomic

log = logging.getLogger("ssdkit.onnx")

OPSET = 13
"""ONNX opset of exported files: the newest that MXNet 1.9's converters are written for."""
META_KEY = "ssdkit_meta"
"""Metadata entry holding the model's meta JSON."""
DETECTION_OP = "MultiBoxDetection"


def check_onnx(meta, *, portable=False, int8=False):
    """Raise ValueError, naming why and what to do instead, if the model of ``meta`` cannot be exported."""
    if family_of(meta).name != "ssd":
        raise ValueError("FPN models (network %s) cannot be exported to ONNX: their detection graph runs ssdkit's "
                         "FPNProposal (per-level top-k and NMS over the pyramid), MultiLevelROIAlign (RoIs "
                         "assigned to levels by size) and RCNNDetection operators, which have no ONNX "
                         "converters; use the FPN deploy model (deploy.py without --format onnx) or an SSD network"
                         % meta["network"])
    if portable:
        raise ValueError("--format onnx and --portable do not go together: the ONNX file already runs without "
                         "ssdkit (onnxruntime); drop --portable")
    if int8:
        raise ValueError("--format onnx and --int8 do not go together: MXNet's oneDNN INT8 operators have no ONNX "
                         "form; export the fp32 model (quantize it with onnxruntime.quantization if needed)")


def export_onnx(symbol, arg_params, aux_params, meta, path):
    """Write the SSD deploy graph ``symbol`` with its parameters as the ONNX file ``path``.

    Parameters
    ----------
    symbol : mx.sym.Symbol, an SSD inference graph ending in one ``MultiBoxDetection`` (input ``data``)
    arg_params, aux_params : dict name -> NDArray (extra entries ignored)
    meta : dict, the model's meta (normalised; its inference size fixes the folded anchors)
    path : str, the ``.onnx`` file to write (atomically)

    Returns
    -------
    dict: ``onnx`` (the path), ``num_anchors``, ``num_params`` (initializers of the network part),
    ``opset``.

    Raises
    ------
    ValueError : an FPN or INT8 graph, or no / several detection operators
    """
    import onnx
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    from onnx import helper

    from ssdkit.api.onnx_detection import detection_nodes, settings_from_attrs

    family = family_of(meta)
    check_onnx(meta, int8=bool(meta.get("int8")) or _is_quantized(symbol))
    graph = json.loads(symbol.tojson())
    detections = [n for n in graph["nodes"] if n["op"] == DETECTION_OP]
    if len(detections) != 1 or has_op(symbol, "_contrib_MultiBoxDetection"):
        raise ValueError("an ONNX export needs an SSD graph with one ssdkit MultiBoxDetection node, found %d%s"
                         % (len(detections), " and contrib's (a portable model: deploy without --portable)"
                            if has_op(symbol, "_contrib_MultiBoxDetection") else ""))
    node = detections[0]
    cls_name, loc_name, anchor_name = (graph["nodes"][i[0]]["name"] for i in node["inputs"])
    internals = symbol.get_internals()
    heads = mx.sym.Group([internals[cls_name + "_output"], internals[loc_name + "_output"]])
    params = {**arg_params, **aux_params}
    used = set(heads.list_arguments()) | set(heads.list_auxiliary_states())
    params = {k: v for k, v in params.items() if k in used}
    (_, data_shape), = family.inference_shapes(meta, 1)
    anchors = _anchors(internals[anchor_name + "_output"], data_shape, arg_params, aux_params)
    num_classes = len(meta["class_names"])
    settings = settings_from_attrs(node.get("attrs", {}), num_classes)

    net = MXNetGraph().create_onnx_graph_proto(
        heads, params, [data_shape], [onnx.TensorProto.FLOAT], opset_version=OPSET,
        dynamic=True, dynamic_input_shapes=[(None,) + tuple(data_shape[1:])])
    outputs = {o.name for o in net.output}       # named as the MXNet nodes, in the converter's order
    if not {cls_name, loc_name} <= outputs:
        raise ValueError("MXNet's ONNX converter named the outputs %s, not %s and %s"
                         % (sorted(outputs), cls_name, loc_name))
    nodes, inits = detection_nodes(cls_name, loc_name, anchors, settings)
    net.node.extend(nodes)
    net.initializer.extend(inits)
    _prune(net)
    del net.output[:]
    net.output.append(helper.make_tensor_value_info("detections", onnx.TensorProto.FLOAT, ["batch", "rows", 6]))
    net.name = "ssdkit_%s_%d" % (meta["network"], data_shape[-1])
    model = helper.make_model(net, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ssdkit")
    helper.set_model_props(model, {META_KEY: json.dumps(meta, sort_keys=True)})
    onnx.checker.check_model(model, full_check=True)
    atomic.write_bytes(path, model.SerializeToString())
    log.info("wrote %s: %s at %dx%d, %d anchors, %d classes, opset %d", path, meta["network"], data_shape[-2],
             data_shape[-1], len(anchors), num_classes, OPSET)
    return {"onnx": path, "num_anchors": int(len(anchors)), "num_params": len(params), "opset": OPSET}


def _anchors(anchor_symbol, data_shape, arg_params, aux_params):
    """``(N, 4)`` float32 corner anchors of the graph's anchor output for input ``data_shape``.

    The anchors depend only on the feature map sizes: for the multibox layout (``Reshape(Concat(Flatten(
    MultiBoxPrior(x_k))))``) each prior runs on zeros of its input's inferred shape; any other graph runs
    one forward pass of a zero image."""
    graph = json.loads(anchor_symbol.tojson())
    priors = _prior_layers(graph["nodes"], graph["heads"][0][0])
    if priors is None:
        executor = anchor_symbol.simple_bind(mx.cpu(), grad_req="null", data=tuple(data_shape))
        executor.copy_params_from(arg_params, aux_params, allow_extra_params=True)
        executor.arg_dict["data"][:] = 0
        return executor.forward(is_train=False)[0].asnumpy().reshape(-1, 4).astype(np.float32)
    internals = anchor_symbol.get_internals()
    parts = []
    for prior in priors:
        source = graph["nodes"][prior["inputs"][0][0]]["name"]
        _, (shape,), _ = internals[source + "_output"].infer_shape(data=tuple(data_shape))
        out = getattr(mx.nd, prior["op"])(mx.nd.zeros(shape), **prior.get("attrs", {}))
        parts.append(out.asnumpy().reshape(-1, 4))
    return np.concatenate(parts).astype(np.float32)


def _prior_layers(nodes, head):
    """The ``MultiBoxPrior`` nodes of ``Reshape(Concat(Flatten(prior_k), ...))`` ending at node ``head``, in
    concatenation order, or None for another layout."""
    if nodes[head]["op"] != "Reshape":
        return None
    concat = nodes[nodes[head]["inputs"][0][0]]
    if concat["op"] != "Concat" or concat.get("attrs", {}).get("dim", "1") != "1":
        return None
    priors = []
    for ref in concat["inputs"]:
        flatten = nodes[ref[0]]
        prior = nodes[flatten["inputs"][0][0]] if flatten["op"] == "Flatten" else None
        if prior is None or prior["op"] not in ("MultiBoxPrior", "_contrib_MultiBoxPrior"):
            return None
        priors.append(prior)
    return priors


def _is_quantized(symbol):
    return any(n.get("attrs", {}).get("quantized") == "true" for n in json.loads(symbol.tojson())["nodes"])


def _prune(graph):
    """Drop initializers no node reads and the graph inputs that only repeat initializers (MXNet's
    converters list every weight as an input too, which keeps onnxruntime from folding constants)."""
    read = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    weights = {init.name for init in keep}
    inputs = [i for i in graph.input if i.name not in weights and i.name in read]
    del graph.input[:]
    graph.input.extend(inputs)
