"""numpy reference of the MultiBoxDetection operator (see ``multibox_detection-inl.h``).

Equal to ``mx.contrib.nd.MultiBoxDetection`` with ``background_id=0`` (contrib ignores
``background_id``; here and in the operator it is honoured). Boxes are decoded by
:func:`ssdkit.boxes.decode`, which follows the operator's arithmetic; compare with a tolerance all
the same (exp may differ from the C++ one by an ulp), and note that ``clip`` keeps NaN coordinates
as NaN where the operator clips them to 1.
"""
import numpy as np

from ssdkit.boxes import VARIANCES, decode
from ssdkit.reference.nms import nms, rank_descending


def best_classes(cls_prob, threshold=0.01, background_id=0):
    """Best object class per anchor.

    Parameters
    ----------
    cls_prob : (C+1, N) probabilities of one image; channel ``background_id`` is background
        (-1: none)
    threshold : float, candidates need score >= threshold

    Returns
    -------
    classes : (N,) int64 0-based object class, -1 for anchors that are not candidates
    scores : (N,) float32 the best object probability (-1 when no channel exceeds -1)
    """
    prob = np.asarray(cls_prob, dtype=np.float32)
    masked = np.where(np.isnan(prob), -np.inf, prob)
    if background_id >= 0:
        masked[background_id] = -np.inf
    channel = np.argmax(masked, axis=0)  # first channel wins ties, as a strict '>' scan does
    score = masked[channel, np.arange(prob.shape[1])]
    found = score > -1
    score = np.where(found, score, np.float32(-1)).astype(np.float32)
    candidate = found & ~(score < np.float32(threshold))
    cls = np.where((background_id >= 0) & (channel > background_id), channel - 1, channel)
    return np.where(candidate, cls, -1).astype(np.int64), score


def multibox_detection(cls_prob, loc_pred, anchor, *, clip=True, threshold=0.01, background_id=0,
                       nms_threshold=0.5, force_suppress=False, variances=VARIANCES, nms_topk=-1,
                       max_detections=-1):
    """Decode, rank and suppress SSD predictions.

    Parameters
    ----------
    cls_prob : (B, C+1, N) class probabilities
    loc_pred : (B, N*4) box regressions
    anchor : (1, N, 4) corner anchors
    other arguments : as ``mx.nd.MultiBoxDetection``

    Returns
    -------
    (B, N, 6) float32, or (B, max_detections, 6): rows ``[cls_id, score, xmin, ymin, xmax, ymax]``,
    ``cls_id = -1`` for removed rows, in the operator's layout.
    """
    cls_prob = np.asarray(cls_prob, dtype=np.float32)
    batch, _, n = cls_prob.shape
    loc = np.asarray(loc_pred, dtype=np.float32).reshape(batch, n, 4)
    anchors = np.asarray(anchor, dtype=np.float32).reshape(n, 4)
    rows = max_detections if max_detections > 0 else n
    out = np.full((batch, rows, 6), -1, dtype=np.float32)
    nms_on = 0 < nms_threshold <= 1
    for b in range(batch):
        classes, scores = best_classes(cls_prob[b], threshold, background_id)
        idx = np.flatnonzero(classes >= 0)
        table = np.empty((len(idx), 6), dtype=np.float32)
        table[:, 0] = classes[idx]
        table[:, 1] = scores[idx]
        table[:, 2:] = decode(anchors[idx], loc[b, idx], variances, clip=clip)
        if not nms_on:
            if max_detections > 0:
                table = table[rank_descending(table[:, 1])]
            ranked = table
        else:
            topk = nms_topk if 0 < nms_topk < len(idx) else len(idx)
            order = rank_descending(table[:, 1])[:topk]
            keep = nms(table[:, 2:], table[:, 1], nms_threshold,
                       classes=None if force_suppress else table[:, 0], topk=topk)
            if max_detections > 0:
                ranked = table[keep]
            else:
                # rows past nms_topk hold the remaining candidates in anchor order, removed
                ranked = np.concatenate([table[order], table[topk:]])
                alive = np.zeros(len(idx), dtype=bool)
                alive[:topk] = np.isin(order, keep)
                ranked[~alive, 0] = -1
        ranked = ranked[:rows]
        out[b, :len(ranked)] = ranked
    return out
