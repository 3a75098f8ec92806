"""Numpy reference of the ``RPNTarget`` operator (``src/operators/rpn_target/``).

Written for reading: it spells out the steps documented in ``rpn_target-inl.h`` with the shared
:func:`ssdkit.boxes.box_iou` and :func:`ssdkit.boxes.encode`. Matching is deterministic and
equals the operator's; the random subsampling draws from a numpy Generator, so the reference's
samples are other samples than the operator's (which come from MXNet's random states).
"""
import numpy as np

from ssdkit.boxes import box_iou, encode
from ssdkit.reference.two_stage import check_im_info, ground_truth_rows

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1
"""Values of the per-anchor labels (and of ``cls_target``)."""
RPN_STDS = (1.0, 1.0, 1.0, 1.0)
"""Box-coding stds of the RPN."""


def usable_anchors(anchors, im_info_row, allowed_border=0.0):
    """(N,) bool: finite anchors inside the valid image grown by ``allowed_border`` (< 0: any).

    ``im_info_row`` is ``[valid_height, valid_width, scale]`` with a finite positive height and
    width (:func:`ssdkit.reference.two_stage.check_im_info`).
    """
    anchors = np.asarray(anchors, dtype=np.float32)
    usable = np.all(np.isfinite(anchors), axis=1)
    if allowed_border >= 0:
        height, width = np.float32(im_info_row[0]), np.float32(im_info_row[1])
        border = np.float32(allowed_border)
        with np.errstate(invalid="ignore"):
            usable &= ((anchors[:, 0] >= -border) & (anchors[:, 1] >= -border)
                       & (anchors[:, 2] <= width + border) & (anchors[:, 3] <= height + border))
    return usable


def rpn_match_labels(anchors, gts, usable, positive_iou=0.7, negative_iou=0.3):
    """Faster R-CNN matching of one image (before sampling).

    Parameters
    ----------
    anchors : (N, 4) pixel corners
    gts : (G, 4) ground-truth corners
    usable : (N,) bool, anchors that take part (the others are ignored)
    positive_iou, negative_iou : float thresholds

    Returns
    -------
    labels : (N,) int ``POSITIVE`` (best IoU >= positive_iou, or one of a ground truth's
        highest-IoU anchors, all ties, IoU > 0), ``NEGATIVE`` (best IoU < negative_iou) or
        ``IGNORED``
    matched : (N,) int the ground truth of each positive: its highest-IoU one (lowest index on
        ties); -1 elsewhere
    """
    num_anchors, num_gt = len(anchors), len(gts)
    labels = np.full(num_anchors, IGNORED, dtype=np.int64)
    matched = np.full(num_anchors, -1, dtype=np.int64)
    if num_gt == 0:
        labels[usable & (np.float32(0) < np.float32(negative_iou))] = NEGATIVE
        return labels, matched
    iou = box_iou(anchors, gts)                                # (N, G)
    iou = np.where(np.isnan(iou), np.float32(-1), iou)         # a NaN IoU never wins
    best_gt = np.argmax(iou, axis=1)
    best_iou = iou[np.arange(num_anchors), best_gt]
    best_gt = np.where(best_iou >= 0, best_gt, -1)
    best_iou = np.maximum(best_iou, 0)
    gt_max = iou[usable].max(axis=0) if usable.any() else np.full(num_gt, -1, np.float32)
    is_best = ((iou == gt_max[None, :]) & (gt_max[None, :] > 0)).any(axis=1)
    positive = usable & (best_gt >= 0) & ((best_iou >= np.float32(positive_iou)) | is_best)
    negative = usable & ~positive & (best_iou < np.float32(negative_iou))
    labels[positive] = POSITIVE
    labels[negative] = NEGATIVE
    matched[positive] = best_gt[positive]
    return labels, matched


def rpn_match(anchor, label, im_info, positive_iou=0.7, negative_iou=0.3, allowed_border=0.0,
              stds=RPN_STDS):
    """The deterministic part of ``RPNTarget``: labels before sampling and the box targets.

    Parameters
    ----------
    anchor : (1, N, 4) pixel corners
    label : (B, M, W >= 5) rows ``[cls, x0, y0, x1, y1, ...]`` padded with class -1
    im_info : (B, 3) ``[valid_height, valid_width, scale]``, finite positive heights and widths
    positive_iou, negative_iou, allowed_border, stds : as the operator

    Returns
    -------
    labels : (B, N) int ``POSITIVE`` / ``NEGATIVE`` / ``IGNORED`` before sampling
    box_target : (B, N * 4) float32 encoded ground truth of every positive, 0 elsewhere

    Raises
    ------
    ValueError
        for an im_info row with a NaN, inf or non-positive height or width (also when
        ``allowed_border < 0`` leaves im_info unused), as the operator raises an MXNet error.
    """
    anchors = np.asarray(anchor, dtype=np.float32).reshape(-1, 4)
    label = np.asarray(label, dtype=np.float32)
    im_info = check_im_info(im_info)
    batch, num_anchors = label.shape[0], anchors.shape[0]
    labels = np.full((batch, num_anchors), IGNORED, dtype=np.int64)
    box_target = np.zeros((batch, num_anchors, 4), dtype=np.float32)
    for b in range(batch):
        gts = label[b, ground_truth_rows(label[b]), 1:5]
        usable = usable_anchors(anchors, im_info[b], allowed_border)
        labels[b], matched = rpn_match_labels(anchors, gts, usable, positive_iou, negative_iou)
        pos = labels[b] == POSITIVE
        box_target[b, pos] = encode(anchors[pos], gts[matched[pos]], stds)
    return labels, box_target.reshape(batch, -1)


def sample_labels(labels, batch_size_per_image=256, positive_fraction=0.5, rng=None):
    """Random subsampling of one image's labels.

    Parameters
    ----------
    labels : (N,) int labels from :func:`rpn_match_labels` (not modified)
    batch_size_per_image, positive_fraction : as the operator
    rng : numpy Generator (default: a fresh unseeded one)

    Returns
    -------
    (N,) int: at most ``int(batch_size_per_image * positive_fraction)`` positives kept at random,
    then negatives at random up to ``batch_size_per_image`` in total; the rest ``IGNORED``.
    """
    rng = np.random.default_rng() if rng is None else rng
    out = np.full_like(labels, IGNORED)
    pos = np.flatnonzero(labels == POSITIVE)
    neg = np.flatnonzero(labels == NEGATIVE)
    keep_pos = rng.choice(pos, min(len(pos), int(batch_size_per_image * positive_fraction)), replace=False)
    keep_neg = rng.choice(neg, min(len(neg), batch_size_per_image - len(keep_pos)), replace=False)
    out[keep_pos] = POSITIVE
    out[keep_neg] = NEGATIVE
    return out


def rpn_target(anchor, label, im_info, positive_iou=0.7, negative_iou=0.3, batch_size_per_image=256,
               positive_fraction=0.5, allowed_border=0.0, stds=RPN_STDS, rng=None):
    """Training targets of the RPN, like ``mx.nd.RPNTarget`` (up to which anchors are sampled).

    Returns
    -------
    cls_target : (B, N) float32 1 sampled positive, 0 sampled negative, -1 ignored
    box_target : (B, N * 4) float32 encoded ground truth of every positive (before sampling)
    box_weight : (B, N * 4) float32 1 on the 4 values of every sampled positive
    """
    labels, box_target = rpn_match(anchor, label, im_info, positive_iou, negative_iou, allowed_border, stds)
    cls_target = np.stack([sample_labels(row, batch_size_per_image, positive_fraction, rng)
                           for row in labels]).astype(np.float32)
    box_weight = np.repeat((cls_target == POSITIVE).astype(np.float32), 4, axis=1)
    return cls_target, box_target, box_weight
