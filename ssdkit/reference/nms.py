"""Greedy non-maximum suppression in numpy: the reference for ``src/operators/common/nms.h``."""
import numpy as np

from ssdkit.boxes import box_iou


def rank_descending(scores):
    """Indices ordering ``scores`` (N,) by descending score; ties keep ascending index, NaN last.

    This is the order of ``common/topk.h`` (a stable descending sort).
    """
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    return np.argsort(-scores, kind="stable")


def nms(boxes, scores, iou_threshold, classes=None, topk=-1, max_keep=-1):
    """Greedy NMS.

    Candidates are visited best first (:func:`rank_descending`), only the first ``topk`` when
    ``topk > 0``. A candidate is kept unless a kept one (of the same class when ``classes`` is
    given) overlaps it with IoU >= ``iou_threshold``. Visiting stops after ``max_keep`` kept
    (``max_keep < 0``: no limit).

    Parameters
    ----------
    boxes : (N, 4) corner boxes
    scores : (N,) scores
    iou_threshold : float, suppress at IoU >= this
    classes : (N,) int class ids, or None for class-agnostic NMS
    topk : int, rank only the best ``topk`` candidates (<= 0: all)
    max_keep : int, stop after this many kept (< 0: no limit)

    Returns
    -------
    (K,) int64 indices into ``boxes`` of the kept candidates, best first.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    order = rank_descending(scores)
    if topk > 0:
        order = order[:topk]
    classes = None if classes is None else np.asarray(classes).reshape(-1)
    threshold = np.float32(iou_threshold)
    keep = []
    for idx in order:
        if 0 <= max_keep <= len(keep):
            break
        rivals = keep if classes is None else [k for k in keep if classes[k] == classes[idx]]
        if rivals and np.any(box_iou(boxes[rivals], boxes[idx:idx + 1])[:, 0] >= threshold):
            continue
        keep.append(int(idx))
    return np.asarray(keep, dtype=np.int64)
