"""Inference-time settings of a trained detector, applied explicitly (like GluonCV's ``net.set_nms``).

A model's meta file records the NMS threshold, NMS top-k, score threshold and detection rows its graph
was built with. Evaluate, deploy, demo and :class:`ssdkit.Detector` change them only through an
:class:`InferenceOverrides`: the detector family maps each given value onto its meta keys and onto the
attributes of its detection operator (:meth:`ssdkit.api.ssd.SSDFamily.with_inference`,
:meth:`~ssdkit.api.ssd.SSDFamily.set_inference`), and refuses a value its graph cannot honour
(e.g. a top-k for FPN models, whose ``RCNNDetection`` has none) with a ValueError that says so.

Graphs rebuilt from a meta file are built from the overridden meta; a saved deploy graph is changed
in place with :func:`set_detection_attrs`.
"""
import dataclasses
import json
from dataclasses import dataclass
from typing import Optional

import mxnet as mx

from ssdkit import ops  # noqa: F401  (detection graphs hold ssdkit's operators)


@dataclass(frozen=True)
class InferenceOverrides:
    """Inference settings to change; ``None`` keeps the model's own value.

    Attributes
    ----------
    nms_thresh : float in (0, 1], NMS IoU threshold of the detection operator
    nms_topk : int > 0 or -1 (all), candidates kept before NMS (SSD only)
    score_thresh : float in [0, 1), candidates scoring below it are dropped before NMS
    max_detections : int > 0 (or -1 for SSD: one row per anchor), detection rows per image
    """

    nms_thresh: Optional[float] = None
    nms_topk: Optional[int] = None
    score_thresh: Optional[float] = None
    max_detections: Optional[int] = None

    def __post_init__(self):
        if self.nms_thresh is not None and not 0 < self.nms_thresh <= 1:
            raise ValueError("nms_thresh must be in (0, 1], got %r" % (self.nms_thresh,))
        if self.nms_topk is not None and not (self.nms_topk == -1 or self.nms_topk > 0):
            raise ValueError("nms_topk must be > 0 or -1 (all), got %r" % (self.nms_topk,))
        if self.score_thresh is not None and not 0 <= self.score_thresh < 1:
            raise ValueError("score_thresh must be in [0, 1), got %r" % (self.score_thresh,))
        if self.max_detections is not None and not (self.max_detections == -1 or self.max_detections > 0):
            raise ValueError("max_detections must be > 0 or -1, got %r" % (self.max_detections,))

    def given(self):
        """``{name: value}`` of the settings that are not None."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def merged(self, **defaults):
        """A copy whose unset (None) fields take ``defaults`` (None values in ``defaults`` are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in defaults.items()
                                            if v is not None and getattr(self, k) is None})


NO_OVERRIDES = InferenceOverrides()


def set_detection_attrs(symbol, attrs_by_op):
    """``symbol`` with attributes of its detection node replaced (a new symbol, through its JSON).

    Parameters
    ----------
    symbol : mx.sym.Symbol holding exactly one node whose op is a key of ``attrs_by_op``
    attrs_by_op : dict ``{op name: {attribute: value}}``; values are written as text

    Raises
    ------
    ValueError : no or several detection nodes
    """
    graph = json.loads(symbol.tojson())
    nodes = [n for n in graph["nodes"] if n.get("op") in attrs_by_op]
    if len(nodes) != 1:
        raise ValueError("expected one detection node (%s) in the graph, found %d"
                         % (", ".join(sorted(attrs_by_op)), len(nodes)))
    node = nodes[0]
    attrs = attrs_by_op[node["op"]]
    if not attrs:
        return symbol
    node["attrs"] = dict(node.get("attrs", {}), **{k: str(v) for k, v in attrs.items()})
    return mx.sym.load_json(json.dumps(graph))


def detection_attrs_of(symbol, ops):
    """``{attribute: text}`` of the graph's detection node (the first node whose op is in ``ops``)."""
    for node in json.loads(symbol.tojson())["nodes"]:
        if node.get("op") in ops:
            return dict(node.get("attrs", {}))
    raise ValueError("no detection node (%s) in the graph" % ", ".join(sorted(ops)))


def has_op(symbol, op):
    """Whether a node of ``symbol`` runs operator ``op``."""
    return any(n.get("op") == op for n in json.loads(symbol.tojson())["nodes"])
