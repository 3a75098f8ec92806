"""Rewrite a graph that uses ssdkit's operators into one that uses MXNet's built-in contrib ops.

The result loads and runs on plain MXNet without ssdkit installed. Differences (by design of the
contrib ops): ``MultiBoxDetection`` returns all N rows (``max_detections`` is dropped; read rows with
``cls_id >= 0``) and treats channel 0 as the background (a graph with another ``background_id`` is
refused). ``MultiBoxTarget`` and ``MultiBoxPrior`` have identical semantics.
"""
import json

import mxnet as mx

_CONTRIB = {
    "MultiBoxPrior": ("_contrib_MultiBoxPrior", ()),
    "MultiBoxTarget": ("_contrib_MultiBoxTarget", ()),
    "MultiBoxDetection": ("_contrib_MultiBoxDetection", ("max_detections",)),
}


def to_portable_json(graph_json):
    """Return ``graph_json`` (a symbol's JSON text) with ssdkit ops replaced by contrib ops."""
    graph = json.loads(graph_json)
    for node in graph["nodes"]:
        op = node.get("op")
        if op not in _CONTRIB:
            continue
        name, dropped = _CONTRIB[op]
        attrs = dict(node.get("attrs", {}))
        if op == "MultiBoxDetection" and int(float(attrs.get("background_id", 0))) != 0:
            raise ValueError("node %s: contrib MultiBoxDetection always uses channel 0 as background; "
                             "background_id=%s cannot be made portable" % (node["name"], attrs["background_id"]))
        for key in dropped:
            attrs.pop(key, None)
        # Our attribute values are Python reprs; contrib parses "(a, b)" tuples and "True"/"False".
        node["op"] = name
        node["attrs"] = {k: _normalise(v) for k, v in attrs.items()}
    return json.dumps(graph)


def to_portable(symbol):
    """``mx.sym.Symbol`` -> the same graph with contrib ops (loaded back through JSON)."""
    return mx.sym.load_json(to_portable_json(symbol.tojson()))


def _normalise(value):
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = "(" + text[1:-1] + ")"
    return text
