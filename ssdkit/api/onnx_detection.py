"""SSD's detection step (ssdkit's ``MultiBoxDetection``) as ONNX operators, for :mod:`ssdkit.api.onnx_export`.

Shapes: B images, C object classes, N anchors, K1 = min(nms_topk, N) ranked candidates, R rows out.

Inputs of the subgraph
  ``cls_prob (B, C+1, N)`` class probabilities (channel ``background_id`` is the background, -1: none),
  ``loc_pred (B, N*4)`` box regressions, anchor-major ``(t_x, t_y, t_w, t_h)``; the anchors ``(N, 4)``
  are a constant of the graph (folded for the fixed input size).
Output
  ``detections (B, R, 6)`` rows ``[cls_id, score, xmin, ymin, xmax, ymax]``, padded with rows of -1.

The steps follow ``src/operators/multibox_detection/multibox_detection-inl.h``:

1. per anchor the best object class (``ArgMax``: the first channel wins ties) and its probability; the
   anchor is a candidate unless that probability is below ``threshold``;
2. candidates ranked by descending score, ties by lower anchor index (``TopK``, whose ties are ordered
   that way by the ONNX specification), the first ``K1 = min(nms_topk, N)`` kept (``nms_topk <= 0``: all);
3. the K1 boxes decoded with the variances and clipped to [0, 1] when ``clip`` (the box coder of
   ``common/bbox.h``, same operations in the same order);
4. greedy NMS by ``NonMaxSuppression``, per class (each candidate in its own class's score row) or over
   all classes (``force_suppress``). NMS is not given the probabilities but each candidate's rank
   ``K1 - position`` (non-candidates 0, under the 0.5 score threshold): every score is distinct, so the
   visiting order is exactly step 2's whatever order an NMS implementation gives equal scores, and
   ``MultiBoxDetection``'s "suppress at IoU >= t" becomes ONNX's "IoU > t'" with t' the float32 just
   below t;
5. the kept candidates in rank order (descending score, ties by lower anchor index), the first R
   (``max_detections``; -1: one row per anchor), padded with rows of -1.

With ``max_detections = -1`` the rows with ``cls_id >= 0`` equal ``MultiBoxDetection``'s; its other rows
hold removed candidates marked ``cls_id = -1``, here rows of -1 (consumers read only ``cls_id >= 0``).

The settings that inference overrides change (``threshold``, ``nms_threshold``, ``nms_topk``, rows)
are scalar initializers named in :data:`SETTING_NAMES`, so a loaded model can be re-set without
re-exporting (:func:`set_settings`). Probabilities are assumed finite and >= 0 (a softmax output).
"""
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper, numpy_helper

P = "ssdkit_detection/"
"""Prefix of every value and node name this module adds."""

SETTING_NAMES = {"score_thresh": P + "threshold", "nms_thresh": P + "nms_threshold_below",
                 "nms_topk": P + "nms_topk", "max_detections": P + "rows"}
"""Initializer of each inference setting (:class:`~ssdkit.api.inference.InferenceOverrides` field names)."""


@dataclass(frozen=True)
class DetectionSettings:
    """The ``MultiBoxDetection`` attributes the ONNX subgraph reproduces.

    Attributes
    ----------
    num_classes : int C, object classes (``cls_prob`` has C+1 channels, or C with ``background_id=-1``)
    threshold : float, score threshold of candidates
    nms_threshold : float in (0, 1], suppress at IoU >= it
    nms_topk : int, candidates ranked before NMS (<= 0: all)
    max_detections : int, rows per image (-1: one per anchor)
    force_suppress : bool, class-agnostic NMS
    clip : bool, clip decoded boxes to [0, 1]
    variances : 4 floats of the box coder
    background_id : int, background channel (-1: none)
    """

    num_classes: int
    threshold: float = 0.01
    nms_threshold: float = 0.5
    nms_topk: int = -1
    max_detections: int = 100
    force_suppress: bool = False
    clip: bool = True
    variances: tuple = (0.1, 0.1, 0.2, 0.2)
    background_id: int = 0

    def __post_init__(self):
        if not 0 < self.nms_threshold <= 1:
            raise ValueError("ONNX export needs NMS: nms_threshold must be in (0, 1], got %r" % (self.nms_threshold,))
        if self.max_detections == 0 or self.max_detections < -1:
            raise ValueError("max_detections must be -1 or positive, got %r" % (self.max_detections,))


def settings_from_attrs(attrs, num_classes):
    """:class:`DetectionSettings` of a ``MultiBoxDetection`` node's attributes (``{name: text}``, the
    operator's defaults for absent ones)."""
    def flag(name, default):
        return str(attrs.get(name, default)).strip().lower() in ("true", "1")

    variances = tuple(float(v) for v in str(attrs.get("variances", "(0.1, 0.1, 0.2, 0.2)")).strip("()[] ").split(","))
    return DetectionSettings(num_classes=int(num_classes), threshold=float(attrs.get("threshold", 0.01)),
                             nms_threshold=float(attrs.get("nms_threshold", 0.5)),
                             nms_topk=int(attrs.get("nms_topk", -1)),
                             max_detections=int(attrs.get("max_detections", -1)),
                             force_suppress=flag("force_suppress", False), clip=flag("clip", True),
                             variances=variances, background_id=int(attrs.get("background_id", 0)))


def setting_values(settings, num_anchors):
    """``{initializer name: numpy array}`` of the overridable settings."""
    return _setting_arrays({"score_thresh": settings.threshold, "nms_thresh": settings.nms_threshold,
                            "nms_topk": settings.nms_topk, "max_detections": settings.max_detections}, num_anchors)


def set_settings(model, overrides, num_anchors):
    """Replace the setting initializers of an exported ``model`` (onnx ModelProto, changed in place)
    by the given :class:`~ssdkit.api.inference.InferenceOverrides` fields (``{name: value}``)."""
    current = {init.name: init for init in model.graph.initializer}
    for name, value in _setting_arrays(overrides, num_anchors).items():
        current[name].CopyFrom(numpy_helper.from_array(value, name))


def _setting_arrays(values, num_anchors):
    """The initializer arrays of settings ``{InferenceOverrides field: value}``: NonMaxSuppression's
    threshold is the float32 just below ``nms_thresh`` (ONNX suppresses at IoU > it, ssdkit at
    IoU >= nms_thresh); rows -1 means one per anchor."""
    arrays = {}
    for key, value in values.items():
        if key == "nms_thresh":
            below = np.nextafter(np.float32(value), np.float32(-np.inf), dtype=np.float32)
            array = np.array(max(below, np.float32(0)), np.float32)
        elif key == "score_thresh":
            array = np.array(value, np.float32)
        elif key == "max_detections":
            array = np.array([value if value > 0 else num_anchors], np.int64)
        else:
            array = np.array([value], np.int64)
        arrays[SETTING_NAMES[key]] = array
    return arrays


def anchor_constants(anchors):
    """Centre ``(N, 2)`` and size ``(N, 2)`` of corner anchors ``(N, 4)``, float32 as bbox.h computes them."""
    a = np.asarray(anchors, np.float32).reshape(-1, 4)
    half = np.float32(0.5)
    centre = np.stack([(a[:, 0] + a[:, 2]) * half, (a[:, 1] + a[:, 3]) * half], axis=1)
    size = np.stack([a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]], axis=1)
    return centre.astype(np.float32), size.astype(np.float32)


class _Graph:
    """Nodes and initializers under construction (names prefixed with :data:`P`)."""

    def __init__(self):
        self.nodes, self.initializers = [], []

    def const(self, name, value):
        self.initializers.append(numpy_helper.from_array(np.asarray(value), P + name))
        return P + name

    def op(self, op_type, inputs, name, **attrs):
        out = P + name
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def detection_nodes(cls_prob, loc_pred, anchors, settings, output="detections"):
    """ONNX nodes and initializers computing ``output (B, R, 6)`` from the values ``cls_prob`` and
    ``loc_pred`` (names in the enclosing graph) and the anchors ``(N, 4)`` (numpy, folded).

    Returns
    -------
    (nodes, initializers) to append to the graph (opset >= 13).
    """
    n = int(np.asarray(anchors).reshape(-1, 4).shape[0])
    g = _Graph()
    for name, value in setting_values(settings, n).items():
        g.initializers.append(numpy_helper.from_array(value, name))
    centre, size = anchor_constants(anchors)
    v = np.asarray(settings.variances, np.float32)
    i64 = lambda *x: np.array(x, np.int64)  # noqa: E731

    # 1. best object class and score per anchor: (B, N)
    prob = cls_prob
    bg = settings.background_id
    channels = settings.num_classes + (1 if bg >= 0 else 0)
    if bg >= 0:
        parts = []
        if bg > 0:
            parts.append(g.op("Slice", [cls_prob, g.const("bg_lo_s", i64(0)), g.const("bg_lo_e", i64(bg)),
                                        g.const("bg_axis", i64(1))], "obj_lo"))
        if bg < channels - 1:
            parts.append(g.op("Slice", [cls_prob, g.const("bg_hi_s", i64(bg + 1)), g.const("bg_hi_e", i64(channels)),
                                        g.const("bg_axis1", i64(1))], "obj_hi"))
        prob = parts[0] if len(parts) == 1 else g.op("Concat", parts, "obj_prob", axis=1)
    best_cls = g.op("ArgMax", [prob], "best_cls", axis=1, keepdims=0)                    # (B, N) int64
    best = g.op("ReduceMax", [prob], "best_score", axes=[1], keepdims=0)                 # (B, N)
    below = g.op("Less", [best, SETTING_NAMES["score_thresh"]], "below_thresh")
    candidate = g.op("Not", [below], "candidate")
    masked = g.op("Where", [candidate, best, g.const("neg_inf", np.array(-np.inf, np.float32))], "masked_score")

    # 2. rank: TopK with k1 = min(nms_topk, N), or N when nms_topk <= 0
    n_const = g.const("num_anchors", i64(n))
    topk_pos = g.op("Greater", [SETTING_NAMES["nms_topk"], g.const("zero_i", i64(0))], "topk_given")
    topk_min = g.op("Min", [SETTING_NAMES["nms_topk"], n_const], "topk_min")
    k1 = g.op("Where", [topk_pos, topk_min, n_const], "k1")
    g.nodes.append(helper.make_node("TopK", [masked, k1], [P + "ranked_score", P + "ranked_idx"], name=P + "rank_topk",
                                    axis=1, largest=1, sorted=1))
    score, idx = P + "ranked_score", P + "ranked_idx"                                     # (B, K1)
    valid = g.op("Greater", [score, g.const("neg_inf2", np.array(-np.inf, np.float32))], "valid")
    cls = g.op("GatherElements", [best_cls, idx], "ranked_cls", axis=1)                   # (B, K1) int64

    # 3. decode the K1 ranked boxes
    loc = g.op("Reshape", [loc_pred, g.const("loc_shape", i64(0, -1, 4))], "loc")        # (B, N, 4)
    idx3 = g.op("Unsqueeze", [idx, g.const("axis_last", i64(-1))], "ranked_idx3")        # (B, K1, 1)
    t = g.op("GatherND", [loc, idx3], "ranked_loc", batch_dims=1)                        # (B, K1, 4)
    a_xy = g.op("Gather", [g.const("anchor_centre", centre), idx], "a_xy", axis=0)      # (B, K1, 2)
    a_wh = g.op("Gather", [g.const("anchor_size", size), idx], "a_wh", axis=0)
    t_xy = g.op("Slice", [t, g.const("s0", i64(0)), g.const("e2", i64(2)), g.const("ax2", i64(2))], "t_xy")
    t_wh = g.op("Slice", [t, g.const("s2", i64(2)), g.const("e4", i64(4)), g.const("ax2b", i64(2))], "t_wh")
    o_xy = g.op("Add", [g.op("Mul", [g.op("Mul", [t_xy, g.const("var_xy", v[:2])], "t_xy_v"), a_wh], "t_xy_va"),
                        a_xy], "o_xy")
    half_wh = g.op("Mul", [g.op("Mul", [g.op("Exp", [g.op("Mul", [t_wh, g.const("var_wh", v[2:])], "t_wh_v")],
                                               "exp_wh"), a_wh], "exp_wh_a"),
                           g.const("half", np.array(0.5, np.float32))], "half_wh")
    boxes = g.op("Concat", [g.op("Sub", [o_xy, half_wh], "lo"), g.op("Add", [o_xy, half_wh], "hi")], "boxes",
                 axis=2)
    if settings.clip:
        boxes = g.op("Clip", [boxes, g.const("zero_f", np.array(0, np.float32)),
                              g.const("one_f", np.array(1, np.float32))], "boxes_clipped")

    # 4. NMS on rank scores K1 - position (0 for non-candidates)
    shape = g.op("Shape", [score], "ranked_shape")                                        # [B, K1]
    k1_scalar = g.op("Squeeze", [k1, g.const("axis0", i64(0))], "k1_scalar")
    pos = g.op("Range", [g.const("zero_s", np.array(0, np.int64)), k1_scalar, g.const("one_s", np.array(1, np.int64))],
               "pos")
    rank = g.op("Cast", [g.op("Sub", [k1_scalar, pos], "rank_i")], "rank_f", to=TensorProto.FLOAT)   # (K1,)
    rank = g.op("Where", [valid, rank, g.const("zero_f2", np.array(0, np.float32))], "rank")         # (B, K1)
    if settings.force_suppress:
        nms_scores = g.op("Unsqueeze", [rank, g.const("axis1", i64(1))], "nms_scores")              # (B, 1, K1)
    else:
        onehot = g.op("OneHot", [cls, g.const("depth", np.array(settings.num_classes, np.int64)),
                                 g.const("onehot_values", np.array([0, 1], np.float32))], "onehot", axis=1)
        nms_scores = g.op("Mul", [onehot, g.op("Unsqueeze", [rank, g.const("axis1", i64(1))], "rank3")],
                          "nms_scores")                                                                 # (B, C, K1)
    rows = SETTING_NAMES["max_detections"]
    selected = g.op("NonMaxSuppression", [boxes, nms_scores, rows, SETTING_NAMES["nms_thresh"],
                                          g.const("half_f", np.array(0.5, np.float32))], "selected")  # (M, 3)
    sel_bp = g.op("Gather", [selected, g.const("cols_bp", i64(0, 2))], "selected_bp", axis=1)        # (M, 2)
    zeros = g.op("ConstantOfShape", [shape], "zeros", value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))
    ones = g.op("Expand", [g.const("one_f2", np.array([1], np.float32)),
                           g.op("Slice", [g.op("Shape", [selected], "sel_shape"), g.const("s0b", i64(0)),
                                          g.const("e1", i64(1))], "num_selected")], "ones")
    kept = g.op("ScatterND", [zeros, sel_bp, ones], "kept")                                            # (B, K1)

    # 5. the first R kept in rank order, padded with rows of -1
    kept_rank = g.op("Mul", [kept, rank], "kept_rank")
    k2 = g.op("Min", [rows, k1], "k2")
    g.nodes.append(helper.make_node("TopK", [kept_rank, k2], [P + "out_rank", P + "out_pos"], name=P + "pick_topk",
                                    axis=1, largest=1, sorted=1))
    out_rank, out_pos = P + "out_rank", P + "out_pos"                                                  # (B, K2)
    table = g.op("Concat", [g.op("Unsqueeze", [g.op("Cast", [cls], "cls_f", to=TensorProto.FLOAT),
                                               g.const("axis_last2", i64(-1))], "cls3"),
                            g.op("Unsqueeze", [score, g.const("axis_last3", i64(-1))], "score3"), boxes],
                 "table", axis=2)                                                                      # (B, K1, 6)
    picked = g.op("GatherND", [table, g.op("Unsqueeze", [out_pos, g.const("axis_last4", i64(-1))], "out_pos3")],
                  "picked", batch_dims=1)                                                              # (B, K2, 6)
    is_kept = g.op("Unsqueeze", [g.op("Greater", [out_rank, g.const("half_f2", np.array(0.5, np.float32))],
                                      "out_kept"), g.const("axis_last5", i64(-1))], "out_kept3")
    filled = g.op("Where", [is_kept, picked, g.const("minus_one", np.array(-1, np.float32))], "filled")
    pad_rows = g.op("Sub", [rows, k2], "pad_rows")
    zero3 = g.const("zeros3", i64(0, 0, 0, 0))
    pads = g.op("Concat", [zero3, pad_rows, g.const("zero1", i64(0))], "pads", axis=0)   # [0,0,0, 0,R-K2,0]
    g.nodes.append(helper.make_node("Pad", [filled, pads, P + "minus_one"], [output], name=P + "pad", mode="constant"))
    return g.nodes, g.initializers
