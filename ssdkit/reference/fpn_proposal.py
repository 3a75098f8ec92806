"""numpy reference of the FPNProposal operator (see ``src/operators/fpn_proposal/fpn_proposal-inl.h``).

Per image and per FPN level: rank the anchors with a finite score (descending, ties by ascending
anchor index), keep the first ``pre_nms_top_n``, decode (log-size clamp), clip to ``im_info``, drop
NaN boxes, boxes narrower or lower than ``min_size`` and empty boxes, greedy NMS within the level;
then the best ``post_nms_top_n`` of all levels (ties by ascending anchor index), padded with rows
``[b, 0, 0, 0, 0]`` of score -1.
"""
import numpy as np

from ssdkit.boxes import LOG_SIZE_CLAMP, clip_to_image, decode
from ssdkit.reference.nms import nms, rank_descending
from ssdkit.reference.two_stage import check_im_info


def propose_level(scores, deltas, anchors, im_height, im_width, *, pre_nms_top_n, post_nms_top_n,
                  nms_threshold, min_size, stds):
    """Proposals of one level of one image.

    Parameters
    ----------
    scores : (n,) objectness of the level's anchors
    deltas : (n, 4) regressions
    anchors : (n, 4) pixel corner anchors
    im_height, im_width : float, the valid image size (``im_info[b, :2]``)
    other arguments : as the operator's attributes

    Returns
    -------
    keep : (K,) int64 indices into the level's anchors, in NMS (descending score) order
    boxes : (K, 4) float32 clipped boxes
    """
    scores = np.asarray(scores, dtype=np.float32)
    finite = np.flatnonzero(np.isfinite(scores))
    ranked = finite[rank_descending(scores[finite])]
    if pre_nms_top_n > 0:
        ranked = ranked[:pre_nms_top_n]
    boxes = decode(anchors[ranked], deltas[ranked], stds, max_log_size=LOG_SIZE_CLAMP)
    boxes = clip_to_image(boxes, im_height, im_width)
    with np.errstate(invalid="ignore"):
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ok = (w >= np.float32(min_size)) & (h >= np.float32(min_size)) & (w > 0) & (h > 0)
    ranked, boxes = ranked[ok], boxes[ok]
    kept = nms(boxes, scores[ranked], nms_threshold, max_keep=post_nms_top_n)
    return ranked[kept], boxes[kept]


def fpn_proposal(cls_prob, bbox_pred, anchor, im_info, *, level_sizes, pre_nms_top_n=1000,
                 post_nms_top_n=1000, nms_threshold=0.7, min_size=0.0, stds=(1.0, 1.0, 1.0, 1.0)):
    """Region proposals from multi-level RPN outputs.

    Parameters
    ----------
    cls_prob : (B, N) sigmoid objectness, levels concatenated
    bbox_pred : (B, N*4) regressions
    anchor : (1, N, 4) pixel corner anchors, levels concatenated in ``level_sizes`` order
    im_info : (B, 3) ``[valid_height, valid_width, scale]``; a NaN, inf or non-positive height or width is a
        ValueError (:func:`ssdkit.reference.two_stage.check_im_info`), as it is an error of the operator
    level_sizes : sequence of int, anchors per level (sum N)
    other arguments : as the operator's attributes (``pre_nms_top_n=-1``: every anchor)

    Returns
    -------
    rois : (B*P, 5) float32 rows ``[b, x0, y0, x1, y1]``
    scores : (B*P, 1) float32, -1 on padding rows
    """
    cls_prob = np.asarray(cls_prob, dtype=np.float32)
    batch, n = cls_prob.shape
    deltas = np.asarray(bbox_pred, dtype=np.float32).reshape(batch, n, 4)
    anchors = np.asarray(anchor, dtype=np.float32).reshape(n, 4)
    im_info = check_im_info(im_info)
    if sum(level_sizes) != n:
        raise ValueError("level_sizes %r do not sum to N=%d" % (level_sizes, n))
    bounds = np.cumsum([0] + list(level_sizes))
    rows = post_nms_top_n
    rois = np.zeros((batch * rows, 5), dtype=np.float32)
    out_scores = np.full((batch * rows, 1), -1, dtype=np.float32)
    for b in range(batch):
        all_idx, all_boxes = [], []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            keep, boxes = propose_level(cls_prob[b, lo:hi], deltas[b, lo:hi], anchors[lo:hi], im_info[b, 0],
                                        im_info[b, 1], pre_nms_top_n=pre_nms_top_n, post_nms_top_n=rows,
                                        nms_threshold=nms_threshold, min_size=min_size, stds=stds)
            all_idx.append(keep + lo)
            all_boxes.append(boxes)
        idx = np.concatenate(all_idx)
        boxes = np.concatenate(all_boxes).reshape(-1, 4)
        best = rank_descending(cls_prob[b, idx])[:rows]  # stable: ties stay in anchor order
        block = slice(b * rows, (b + 1) * rows)
        rois[block, 0] = b
        rois[block][:len(best), 1:] = boxes[best]
        out_scores[block][:len(best), 0] = cls_prob[b, idx[best]]
    return rois, out_scores
