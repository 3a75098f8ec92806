"""Numpy reference of the ``MultiBoxTarget`` operator (``src/operators/multibox_target/``).

Written for reading, not speed: it spells out the algorithm documented in
``multibox_target-inl.h`` (that of ``mx.contrib.nd.MultiBoxTarget``) step by step, with the same
tie-breaking, using the shared :func:`ssdkit.boxes.box_iou` and :func:`ssdkit.boxes.encode`.
"""
import numpy as np

from ssdkit.boxes import VARIANCES, box_iou, encode

UNMATCHED = -1
"""Match value of an anchor matched to no ground truth (a background candidate)."""
IGNORED = -2
"""Match value of an anchor excluded from the losses."""
MIN_CLAIM_IOU = np.float32(1e-6)
"""A ground truth claims an anchor in the bipartite step only if their IoU is above this."""


def valid_ground_truths(label, num_classes):
    """The label rows of one image that are ground truths.

    Parameters
    ----------
    label : (M, W >= 5) rows ``[cls, xmin, ymin, xmax, ymax, ...]``, padded with rows of -1
    num_classes : int, C (object classes, background excluded)

    Returns
    -------
    (G,) int indices of the rows before the first padding row (class -1) whose class is in
    ``[0, C)`` and whose box is finite.

    This is ``MultiBoxTarget``'s rule (no area check); the two-stage
    operators also require ``x1 > x0`` and ``y1 > y0`` (:func:`ssdkit.reference.two_stage.ground_truth_rows`,
    ``common/ground_truth.h``). The references mirror their operators, so the two rules differ as the
    operators do.
    """
    rows = []
    for r, row in enumerate(np.asarray(label, dtype=np.float32)):
        if row[0] == -1:
            break
        if 0 <= row[0] < num_classes and np.all(np.isfinite(row[1:5])):
            rows.append(r)
    return np.asarray(rows, dtype=np.int64)


def ssd_match(iou, overlap_threshold):
    """SSD matching (``MultiBoxTarget``): bipartite claim, then threshold matching (the RPN's
    Faster R-CNN matching is :func:`ssdkit.reference.rpn_target.rpn_match_labels`).

    Parameters
    ----------
    iou : (N, G) float32 IoU of every anchor with every ground truth
    overlap_threshold : float, anchors whose best IoU is above it match (skipped when <= 0)

    Returns
    -------
    (N,) int match: ground-truth index or ``UNMATCHED``
    """
    num_anchors, num_gt = iou.shape
    match = np.full(num_anchors, UNMATCHED, dtype=np.int64)
    free = iou.copy()
    for _ in range(num_gt):
        # argmax over the flattened (anchor, gt) matrix: ties go to the lowest anchor, then gt.
        flat = int(np.argmax(np.where(np.isnan(free), -np.inf, free)))
        j, g = divmod(flat, num_gt)
        if not free[j, g] > MIN_CLAIM_IOU:
            break
        match[j] = g
        free[j, :] = -1      # the anchor is taken
        free[:, g] = -1      # the ground truth has its anchor
    if overlap_threshold > 0 and num_gt > 0:
        best_gt = np.argmax(iou, axis=1)
        best_iou = iou[np.arange(num_anchors), best_gt]
        take = (match == UNMATCHED) & (best_iou > np.float32(overlap_threshold))
        match[take] = best_gt[take]
    return match


def background_probability(cls_pred):
    """Softmax probability of class 0 for every anchor.

    Parameters
    ----------
    cls_pred : (C + 1, N) raw scores of one image

    Returns
    -------
    (N,) float32, computed as ``exp(x0 - max) / sum_k exp(xk - max)``, summed in class order.
    Like the operator's vectorised exp (common/fast_exp.h), ``exp(d)`` is 0 for ``d < -87.3``
    where float32 would go denormal.
    """
    x = np.asarray(cls_pred, dtype=np.float32)
    top = x.max(axis=0)

    def exp(d):
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            return np.where(d < np.float32(-87.3), np.float32(0), np.exp(d)).astype(np.float32)

    total = np.zeros(x.shape[1], dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(x.shape[0]):
            total += exp(x[k] - top)
        return exp(x[0] - top) / total


def sample_hard_negatives(match, best_iou, score, count, iou_threshold):
    """Keep the ``count`` unmatched anchors with the lowest score as negatives, ignore the rest.

    Parameters
    ----------
    match : (N,) int match from :func:`ssd_match` (not modified)
    best_iou : (N,) best IoU of each anchor; candidates need ``best_iou < iou_threshold``
    score : (N,) lower = harder; ties go to the lower anchor index, NaN ranks last
    count : int, negatives wanted (fewer when there are fewer candidates)

    Returns
    -------
    (N,) int match with ``IGNORED`` for every unmatched anchor that was not kept.
    """
    out = match.copy()
    unmatched = match == UNMATCHED
    candidates = np.flatnonzero(unmatched & (best_iou < np.float32(iou_threshold)))
    order = candidates[np.argsort(score[candidates], kind="stable")]
    out[unmatched] = IGNORED
    out[order[:max(0, count)]] = UNMATCHED
    return out


def multibox_target(anchor, label, cls_pred, overlap_threshold=0.5, ignore_label=-1.0,
                    negative_mining_ratio=-1.0, negative_mining_thresh=0.5,
                    minimum_negative_samples=0, variances=VARIANCES):
    """Training targets of SSD, like ``mx.nd.MultiBoxTarget``.

    Parameters
    ----------
    anchor : (1, N, 4) corner anchors
    label : (B, M, W >= 5) rows ``[cls, xmin, ymin, xmax, ymax, ...]`` padded with -1
    cls_pred : (B, C + 1, N) raw class scores, channel 0 = background
    overlap_threshold, ignore_label, negative_mining_ratio, negative_mining_thresh,
    minimum_negative_samples, variances : as the operator

    Returns
    -------
    loc_target : (B, N * 4) encoded boxes of positive anchors, 0 elsewhere
    loc_mask : (B, N * 4) 1 for positive anchors, 0 elsewhere
    cls_target : (B, N) class + 1 (positives), 0 (negatives), ``ignore_label`` (the rest)
    """
    anchors = np.asarray(anchor, dtype=np.float32).reshape(-1, 4)
    label = np.asarray(label, dtype=np.float32)
    cls_pred = np.asarray(cls_pred, dtype=np.float32)
    batch, num_anchors = label.shape[0], anchors.shape[0]
    num_classes = cls_pred.shape[1] - 1
    mining = negative_mining_ratio > 0
    loc_target = np.zeros((batch, num_anchors, 4), dtype=np.float32)
    loc_mask = np.zeros((batch, num_anchors, 4), dtype=np.float32)
    cls_target = np.full((batch, num_anchors), ignore_label, dtype=np.float32)
    for b in range(batch):
        rows = valid_ground_truths(label[b], num_classes)
        if len(rows) == 0 and not (mining and minimum_negative_samples > 0):
            continue  # no ground truth: every anchor is ignored
        gts = label[b, rows, 1:5]
        iou = box_iou(anchors, gts)                                   # (N, G)
        best_iou = iou.max(axis=1) if len(rows) else np.full(num_anchors, -1, np.float32)
        match = ssd_match(iou, overlap_threshold)
        num_positive = int(np.sum(match >= 0))
        if mining:
            wanted = int(np.float32(num_positive) * np.float32(negative_mining_ratio))
            wanted = min(max(wanted, minimum_negative_samples), num_anchors - num_positive)
            match = sample_hard_negatives(match, best_iou, background_probability(cls_pred[b]),
                                          wanted, negative_mining_thresh)
        pos = match >= 0
        cls_target[b, match == UNMATCHED] = 0
        cls_target[b, pos] = label[b, rows[match[pos]], 0] + 1
        loc_target[b, pos] = encode(anchors[pos], gts[match[pos]], variances)
        loc_mask[b, pos] = 1
    return (loc_target.reshape(batch, -1), loc_mask.reshape(batch, -1), cls_target)
