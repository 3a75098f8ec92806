"""The one list of operator cases that the device checks share: seeded random inputs and edge cases for
every operator with a CUDA kernel.

Used by
  * ``tests/test_gpu_selftest.py``: writes them (with the outputs MXNet computes on the CPU) to a case
    file, builds the standalone self-test (tests/gpu_selftest/) and runs its CPU half on it;
  * ``tools/gpu_selftest.sh``: the same case file for the self-test's CPU and GPU halves on a GPU machine;
  * ``tests/test_ops_gpu.py`` (``pytest -m gpu``): each case on ``mx.gpu()`` against ``mx.cpu()``.
  * the CPU operator tests (tests/test_<op>.py): ``test_op_cases_match_*`` runs every case of its
    operator (``cases_for``) on the CPU against the numpy reference in ssdkit/reference (and MXNet's
    contrib op where one exists), so one list of cases feeds the CPU tests, the self-test and the GPU
    tests. The CPU test files keep their hand-computed fixtures, error tests and larger randomised sweeps.
The cases cover seeded random inputs and edge cases (ties, padding rows, images without ground truths,
NaN inputs, nms_topk / max_detections cuts, force_suppress, sampling that keeps everything), in sizes
small enough for a fast run.

Comparison rule (``compare`` here and ``Compare`` in tests/gpu_selftest/selftest.cc implement it alike):
  * two values agree if both are NaN, or they are equal, or |a - b| <= atol + rtol * |b| with the
    output's (rtol, atol);
  * ``exact`` outputs (rtol = atol = 0): class ids, targets, masks, counts, anchors, IoU-only results.
    The CUDA build has FMA contraction off (-fmad=false) and runs the CPU's host/device functions, so
    everything made of + - * / and comparisons is the CPU's bit for bit.
  * ``close`` outputs: values that pass through expf / logf (box encode / decode, RoIAlign's atomics).
    CUDA's expf/logf may differ from glibc's by an ulp or two: (rtol, atol) = (1e-5, 1e-5).
    Tie rule: a decoded box a few ulps off could flip an NMS or threshold decision only if an IoU or
    score sits within ~1e-6 of its threshold; such a flip is reported as a mismatch, never hidden.
    Equal scores rank by index on both sides (stable radix sorts on the GPU, the index in the sort key
    on the CPU), so exact ties cannot flip.
  * ``sampled`` cases draw random samples (the CPU uses mt19937 states, the GPU Philox: different
    samples by design): only the per-image counts of positive / zero / negative values of one output
    (``count_output``) are compared.
"""
import ast
import dataclasses
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np

EXACT = (0.0, 0.0)
CLOSE = (1e-5, 1e-5)
CASE_FILE_MAGIC = "ssdkit-op-cases 1"


@dataclasses.dataclass(frozen=True)
class OpCase:
    """One operator call.

    name : unique id; op : registered operator name (``mx.nd.<op>``); attrs : attribute strings;
    inputs : float32 arrays in the operator's input order; tolerances : (rtol, atol) per output;
    count_output / count_groups : for a ``sampled`` case, the output whose per-image value counts are
    compared and the number of images it splits into (None: compare every value); backward : also run
    the backward pass with ``output_grads(case, outputs)`` and compare every input's gradient (the
    GPU's atomics add in another order: CLOSE tolerances).
    """
    name: str
    op: str
    attrs: Dict[str, str]
    inputs: Tuple[np.ndarray, ...]
    tolerances: Tuple[Tuple[float, float], ...]
    count_output: Optional[int] = None
    count_groups: int = 1
    backward: bool = False  # also compare the input gradients for a seeded output gradient (rtol = atol = 1e-5)


def _f32(x):
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def _boxes(rng, n, lo=0.02, hi=0.5, scale=1.0):
    centre = rng.uniform(0, 1, (n, 2))
    size = rng.uniform(lo, hi, (n, 2))
    return np.concatenate([centre - size / 2, centre + size / 2], 1) * scale


def _batch_rois(rng, batch, per_image, lo, hi, scale):
    """``(batch * per_image, 5)`` RoIs ``[image, x0, y0, x1, y1]``, ``per_image`` random boxes per image."""
    rois = np.zeros((batch * per_image, 5), np.float32)
    for i in range(batch):
        rois[i * per_image:(i + 1) * per_image, 0] = i
        rois[i * per_image:(i + 1) * per_image, 1:] = _boxes(rng, per_image, lo, hi, scale)
    return rois


def _labels(rng, batch, rows, num_classes, counts, scale=1.0, width=5):
    lab = -np.ones((batch, rows, width), np.float32)
    for b, g in enumerate(counts):
        lab[b, :g, 0] = rng.integers(0, num_classes, g)
        lab[b, :g, 1:5] = _boxes(rng, g, 0.05, 0.5, scale)
        if width > 5:
            lab[b, :g, 5] = 0
    return lab


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def multibox_target_cases(rng):
    out = []
    n, c, b = 700, 5, 3
    anchors = _f32(_boxes(rng, n)[None])
    grid = _f32(np.round(_boxes(rng, n) * 8)[None] / 8)  # ties in IoU
    tol = (CLOSE, EXACT, EXACT)
    lab = _labels(rng, b, 6, c, [3, 6, 1])
    pred = _f32(rng.normal(0, 2, (b, c + 1, n)))
    out.append(OpCase("target_plain", "MultiBoxTarget", {}, (anchors, lab, pred), tol))
    out.append(OpCase("target_mining", "MultiBoxTarget", {"negative_mining_ratio": "3"},
                      (anchors, lab, pred), tol))
    lab_empty = _labels(rng, b, 6, c, [0, 4, 2], width=6)
    lab_empty[2, 2, 0] = 99.0           # class out of range: not a ground truth
    lab_empty[2, 3, :5] = [1, np.nan, 0.1, 0.2, 0.3]  # non-finite box: not a ground truth either
    pred_nan = pred.copy()
    pred_nan[1, :, 5] = np.nan
    out.append(OpCase("target_min_negatives_no_gt_nan", "MultiBoxTarget",
                      {"negative_mining_ratio": "2", "minimum_negative_samples": "7",
                       "negative_mining_thresh": "0.4", "overlap_threshold": "0.3"},
                      (anchors, _f32(lab_empty), _f32(pred_nan)), tol))
    out.append(OpCase("target_ties", "MultiBoxTarget", {"negative_mining_ratio": "3", "ignore_label": "-2",
                                                        "variances": "(0.1, 0.1, 0.2, 0.3)"},
                      (grid, _f32(np.round(lab * 8) / 8), _f32(np.round(pred))), tol))
    return out


def multibox_detection_cases(rng):
    out = []
    n, c, b = 900, 4, 3
    anchors = _f32(_boxes(rng, n)[None])
    loc = _f32(rng.normal(0, 1, (b, 4 * n)))
    peaked = _softmax(rng.normal(0, 4, (b, c + 1, n)), 1)
    dense = _softmax(rng.normal(0, 0.5, (b, c + 1, n)), 1)
    tied = np.round(peaked * 8) / 8
    tol = (CLOSE,)
    for name, prob, attrs in [
        ("det_peaked", peaked, {}),
        ("det_dense_topk", dense, {"threshold": "0.01", "nms_topk": "60"}),
        ("det_force_suppress", peaked, {"force_suppress": "True", "nms_threshold": "0.3"}),
        ("det_max_detections", peaked, {"max_detections": "25", "nms_topk": "200"}),
        ("det_no_nms", peaked, {"nms_threshold": "-1", "threshold": "0.3"}),
        ("det_no_nms_capped", dense, {"nms_threshold": "-1", "max_detections": "40"}),
        ("det_ties_noclip", tied, {"clip": "False", "threshold": "0.1"}),
        ("det_background_minus1", peaked, {"background_id": "-1", "threshold": "0.5"}),
    ]:
        out.append(OpCase(name, "MultiBoxDetection", attrs, (_f32(prob), loc, anchors), tol))
    return out


def anchor_cases(rng):
    data = np.zeros((1, 1, 5, 7), np.float32)
    return [
        OpCase("prior_basic", "MultiBoxPrior", {"sizes": "(0.2, 0.35)", "ratios": "(1, 2, 0.5)"}, (data,),
               (EXACT,)),
        OpCase("prior_steps_offsets_clip", "MultiBoxPrior",
               {"sizes": "(0.5,)", "ratios": "(1, 3)", "steps": "(0.1, 0.2)", "offsets": "(0.3, 0.6)",
                "clip": "True"}, (data,), (EXACT,)),
        OpCase("rpn_anchors", "RPNAnchors", {"stride": "8", "scales": "(8, 16)", "ratios": "(0.5, 1, 2)"},
               (data,), (EXACT,)),
    ]


def rpn_target_cases(rng):
    b, h, w = 2, 96.0, 128.0
    anchors = _f32(_boxes(rng, 400, 0.05, 0.4, 128.0)[None])
    lab = _labels(rng, b, 5, 3, [4, 0], scale=110.0)
    im_info = _f32([[h, w, 1.0], [h, w, 1.0]])
    tol = (EXACT, CLOSE, EXACT)
    return [
        OpCase("rpn_target_keep_all", "RPNTarget",
               {"batch_size_per_image": "400", "positive_fraction": "1.0", "allowed_border": "0"},
               (anchors, lab, im_info), tol),
        OpCase("rpn_target_sampled", "RPNTarget", {"batch_size_per_image": "32", "positive_iou": "0.5"},
               (anchors, lab, im_info), tol, count_output=0, count_groups=b),
    ]


def fpn_proposal_cases(rng):
    b, levels = 2, (240, 60, 15)
    n = sum(levels)
    anchors = _f32(_boxes(rng, n, 0.05, 0.5, 128.0)[None])
    scores = rng.uniform(0, 1, (b, n))
    scores[1, :20] = scores[1, 20]  # ties
    scores[0, 3] = np.nan
    deltas = _f32(rng.normal(0, 0.5, (b, 4 * n)))
    im_info = _f32([[100.0, 128.0, 1.0], [128.0, 90.0, 1.0]])
    return [OpCase("fpn_proposal", "FPNProposal",
                   {"level_sizes": str(levels), "pre_nms_top_n": "100", "post_nms_top_n": "50",
                    "nms_threshold": "0.6", "min_size": "2"},
                   (_f32(scores), deltas, anchors, im_info), (CLOSE, EXACT))]


def proposal_target_cases(rng):
    b, c, r = 2, 4, 60
    rois = _batch_rois(rng, b, r, 0.05, 0.5, 100.0)
    rois[5] = [0, 0, 0, 0, 0]  # padding row
    lab = _labels(rng, b, 4, c, [3, 2], scale=100.0)
    tol = (EXACT, EXACT, CLOSE, EXACT)
    common = {"num_classes": str(c), "batch_images": str(b)}
    return [
        OpCase("proposal_target_keep_all", "ProposalTarget",
               dict(common, batch_rois="80", fg_fraction="1.0", bg_thresh_lo="0.0"), (_f32(rois), lab), tol),
        OpCase("proposal_target_sampled", "ProposalTarget", dict(common, batch_rois="16"), (_f32(rois), lab), tol,
               count_output=1, count_groups=b),
    ]


def rcnn_detection_cases(rng):
    b, r, c = 2, 50, 3
    rois = _batch_rois(rng, b, r, 0.1, 0.6, 100.0)
    prob = _softmax(rng.normal(0, 2, (b * r, c + 1)), 1)
    prob[7] = np.round(prob[7] * 4) / 4
    deltas = _f32(rng.normal(0, 0.5, (b * r, 4 * (c + 1))))
    im_info = _f32([[100.0, 100.0, 1.0], [90.0, 110.0, 1.0]])
    return [OpCase("rcnn_detection", "RCNNDetection",
                   {"score_threshold": "0.05", "nms_threshold": "0.5", "max_detections": "30"},
                   (_f32(rois), _f32(prob), deltas, im_info), (CLOSE,)),
            OpCase("rcnn_detection_normalized", "RCNNDetection",
                   {"score_threshold": "0.2", "max_detections": "12", "normalize": "True", "clip": "False"},
                   (_f32(rois), _f32(prob), deltas, im_info), (CLOSE,))]


def roi_align_cases(rng):
    b, ch = 2, 3
    feats = [_f32(rng.normal(0, 1, (b, ch, 32 // s, 32 // s))) for s in (1, 2, 4)]
    rois = np.zeros((12, 5), np.float32)
    rois[:, 0] = rng.integers(0, b, 12)
    rois[:, 1:] = _boxes(rng, 12, 0.05, 0.9, 128.0)
    rois[3, 0] = -1  # padding row: zeros
    levels = _f32(rng.integers(2, 5, 12))
    base = {"spatial_scales": "(0.25, 0.125, 0.0625)", "pooled_size": "(3, 3)", "min_level": "2"}
    return [
        OpCase("roi_align_fpn_rule", "MultiLevelROIAlign",
               dict(base, sample_ratio="2", aligned="True", canonical_size="32"),
               tuple(feats) + (_f32(rois),), (CLOSE,), backward=True),
        OpCase("roi_align_level_input", "MultiLevelROIAlign", dict(base, sample_ratio="-1", level_input="True"),
               tuple(feats) + (_f32(rois), levels), (CLOSE,), backward=True),
    ]


def mask_target_cases(rng):
    b, m, c, side = 2, 4, 3, 50                      # masks at stride 2 of 100 x 100 images
    lab = _labels(rng, b, m, c, [4, 2], scale=100.0)
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    masks = np.zeros((b, m, side, side), np.float32)
    for i in range(b):
        for j in range(m):
            x0, y0, x1, y1 = lab[i, j, 1:5] / 2
            masks[i, j] = (((xx - (x0 + x1) / 2) / max(x1 - x0, 1)) ** 2 +
                           ((yy - (y0 + y1) / 2) / max(y1 - y0, 1)) ** 2 <= 0.25) * (lab[i, j, 0] >= 0)
    soft = _f32(masks * rng.uniform(0.2, 1.0, masks.shape))
    rois = _batch_rois(rng, b, 30, 0.05, 0.5, 100.0)
    labels = np.zeros(len(rois), np.float32)
    for r in range(0, len(rois), 2):                 # every other RoI: a jittered ground truth, labelled
        i = int(rois[r, 0])
        j = int(rng.integers(0, 4 if i == 0 else 2))
        rois[r, 1:] = lab[i, j, 1:5] + rng.normal(0, 2.0, 4)
        labels[r] = lab[i, j, 0] + 1
    labels[7] = labels[6] % c + 1                    # a foreground label of another class: -1 row
    rois[9] = [0, 0, 0, 0, 0]                        # padding RoI
    labels[9] = -1
    rois[11, 2] = np.nan                             # non-finite RoI
    labels[11] = 1
    inputs = (_f32(rois), labels, lab, _f32(masks))
    return [OpCase("mask_target", "MaskTarget", {"mask_size": "14", "spatial_scale": "0.5", "num_classes": str(c)},
                   inputs, (EXACT,)),
            OpCase("mask_target_adaptive_soft", "MaskTarget",
                   {"mask_size": "7", "spatial_scale": "0.5", "sample_ratio": "-1", "aligned": "False",
                    "threshold": "0.3"}, inputs[:3] + (soft,), (EXACT,))]


def cases() -> List[OpCase]:
    """Every case, built from one seeded generator (same inputs on every run and machine)."""
    rng = np.random.default_rng(20261202)
    found = []
    for make in (multibox_target_cases, multibox_detection_cases, anchor_cases, rpn_target_cases,
                 fpn_proposal_cases, proposal_target_cases, rcnn_detection_cases, roi_align_cases,
                 mask_target_cases):
        found += make(rng)
    names = [c.name for c in found]
    assert len(set(names)) == len(names), "case names must be unique"
    return found


def cases_for(op) -> List[OpCase]:
    """The cases of one operator (``op``: its registered name), in ``cases()`` order."""
    found = [c for c in cases() if c.op == op]
    assert found, "no case in tests/op_cases.py calls %s" % op
    return found


def case_kwargs(case) -> Dict[str, object]:
    """The case's attributes as Python values for the numpy references (``"(0.1, 0.2)"`` -> a tuple,
    ``"True"`` -> True, ``"3"`` -> 3)."""
    return {k: ast.literal_eval(v) for k, v in case.attrs.items()}


def output_grads(case, outputs):
    """The seeded output gradients of a backward case: N(0, 1) draws shaped like ``outputs``."""
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    return [_f32(rng.normal(0, 1, y.shape)) for y in outputs]


def run_case(case, ctx, with_grads=False):
    """Outputs of one case on ``ctx`` (mx.cpu() / mx.gpu()) as numpy arrays; with ``with_grads`` (a
    backward case) also the input gradients for ``output_grads``: (outputs, grads)."""
    import mxnet as mx

    import ssdkit.ops  # noqa: F401  (registers the operators)

    ssdkit.ops.load_library()
    args = [mx.nd.array(x, ctx=ctx, dtype="float32") for x in case.inputs]
    if with_grads:
        for a in args:
            a.attach_grad()
    if with_grads:
        with mx.autograd.record():
            result = getattr(mx.nd, case.op)(*args, **case.attrs)
    else:
        result = getattr(mx.nd, case.op)(*args, **case.attrs)
    result = list(result) if isinstance(result, (list, tuple)) else [result]
    outputs = [r.asnumpy() for r in result]
    if not with_grads:
        return outputs
    heads = [mx.nd.array(g, ctx=ctx) for g in output_grads(case, outputs)]
    mx.autograd.backward(result, head_grads=heads)
    return outputs, [a.grad.asnumpy() for a in args]


def sign_counts(values, groups):
    """Per group (image), the numbers of values > 0, == 0 and < 0: (groups, 3)."""
    flat = np.asarray(values, np.float64).reshape(groups, -1)
    return np.stack([(flat > 0).sum(1), (flat == 0).sum(1), (flat < 0).sum(1)], 1)


def compare(case, got, want, tolerances=None):
    """List of mismatch descriptions (empty: agree) of outputs ``got`` against ``want`` (module rule);
    ``tolerances`` replaces the case's (one (rtol, atol) per array, e.g. for gradients)."""
    problems = []
    tolerances = case.tolerances if tolerances is None else tolerances
    if len(got) != len(want):
        return ["%d outputs, expected %d" % (len(got), len(want))]
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            problems.append("output %d: shape %s, expected %s" % (i, g.shape, w.shape))
            continue
        if case.count_output is not None and tolerances is case.tolerances:
            if i == case.count_output and not np.array_equal(sign_counts(g, case.count_groups),
                                                             sign_counts(w, case.count_groups)):
                problems.append("output %d: per-image counts %s, expected %s" % (
                    i, sign_counts(g, case.count_groups).tolist(), sign_counts(w, case.count_groups).tolist()))
            continue
        rtol, atol = tolerances[i]
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        same = (np.isnan(g64) & np.isnan(w64)) | (g64 == w64) | (np.abs(g64 - w64) <= atol + rtol * np.abs(w64))
        if not same.all():
            bad = np.flatnonzero(~same.ravel())
            problems.append("output %d: %d of %d values differ (first at %d: %r vs %r)" % (
                i, bad.size, same.size, bad[0], g.ravel()[bad[0]], w.ravel()[bad[0]]))
    return problems


def _tensor_lines(array):
    array = np.ascontiguousarray(array, dtype="<f4")
    return ["tensor %d %s" % (array.ndim, " ".join(str(d) for d in array.shape)), array.tobytes().hex() or "-"]


def write_case_file(path, selected=None):
    """Write the cases (all, or those named in ``selected``) and their MXNet CPU outputs to ``path``.

    Format (text, read by tests/gpu_selftest/selftest.cc): a magic line, then per case
    ``case NAME OP COUNT_OUTPUT COUNT_GROUPS`` (COUNT_OUTPUT -1: none), ``attrs K`` and K lines
    ``key<TAB>value``, ``inputs N`` / ``outputs N`` each followed by per tensor a line
    ``tensor NDIM D0 D1 ...`` and a line of the float32 little-endian bytes in hex ("-" if empty),
    ``tolerances N`` and N lines ``rtol atol`` (repr of the doubles), ``backward K`` followed (K > 0) by
    the K output-gradient tensors and ``grads N`` with the N input-gradient tensors, then ``end``.
    Returns the number of cases written.
    """
    import mxnet as mx

    lines = [CASE_FILE_MAGIC]
    chosen = [c for c in cases() if selected is None or c.name in selected]
    for case in chosen:
        grads = None
        if case.backward:
            outputs, grads = run_case(case, mx.cpu(), with_grads=True)
        else:
            outputs = run_case(case, mx.cpu())
        lines.append("case %s %s %d %d" % (case.name, case.op,
                                           -1 if case.count_output is None else case.count_output, case.count_groups))
        lines.append("attrs %d" % len(case.attrs))
        lines += ["%s\t%s" % kv for kv in sorted(case.attrs.items())]
        lines.append("inputs %d" % len(case.inputs))
        for x in case.inputs:
            lines += _tensor_lines(x)
        lines.append("outputs %d" % len(outputs))
        for y in outputs:
            lines += _tensor_lines(y)
        lines.append("tolerances %d" % len(case.tolerances))
        lines += ["%r %r" % t for t in case.tolerances]
        if grads is None:
            lines.append("backward 0")
        else:
            heads = output_grads(case, outputs)
            lines.append("backward %d" % len(heads))
            for g in heads:
                lines += _tensor_lines(g)
            lines.append("grads %d" % len(grads))
            for g in grads:
                lines += _tensor_lines(g)
        lines.append("end")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(chosen)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write the operator cases and their MXNet CPU outputs "
                                                 "to a case file for tests/gpu_selftest.")
    parser.add_argument("path")
    args = parser.parse_args()
    print("%d cases written to %s" % (write_case_file(args.path), args.path))
