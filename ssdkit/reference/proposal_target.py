"""Numpy reference of the ``ProposalTarget`` operator (``src/operators/proposal_target/``).

Written for reading: it spells out the steps documented in ``proposal_target-inl.h`` with the
shared :func:`ssdkit.boxes.box_iou` and :func:`ssdkit.boxes.encode`. Which candidates are
foreground / background and their labels and box targets are deterministic and equal the
operator's; the random subsampling draws from a numpy Generator, so the reference keeps other
RoIs than the operator (whose randomness comes from MXNet's random states).
"""
import numpy as np

from ssdkit.boxes import VARIANCES, box_iou, encode
from ssdkit.reference.two_stage import ground_truth_rows, roi_images

NOT_SAMPLED, FOREGROUND, BACKGROUND = 0, 1, 2
"""Kinds of candidate RoIs."""


def image_candidates(rois, label, b, num_classes, add_gt_as_proposals=True, fg_thresh=0.5,
                     bg_thresh_hi=0.5, bg_thresh_lo=0.0, stds=VARIANCES):
    """Candidates of image ``b`` and what each becomes if it is sampled.

    Parameters
    ----------
    rois : (R, 5) rows ``[batch_index, x0, y0, x1, y1]``
    label : (B, M, W >= 5) rows ``[cls, x0, y0, x1, y1, ...]`` padded with class -1
    b : int, the image
    num_classes, add_gt_as_proposals, fg_thresh, bg_thresh_hi, bg_thresh_lo, stds : as the operator

    Returns
    -------
    boxes : (n, 4) float32 candidates: the image's rois (:func:`ssdkit.reference.two_stage.roi_images`),
        then (if added) its ground truths
    kinds : (n,) int ``FOREGROUND`` (best IoU >= fg_thresh), ``BACKGROUND`` (otherwise, IoU in
        ``[bg_thresh_lo, bg_thresh_hi)``) or ``NOT_SAMPLED``
    labels : (n,) float32 class + 1 for foreground, 0 for the rest
    box_target : (n, 4 * (C + 1)) float32 encoded best ground truth in the slots of the label
        (foreground only), 0 elsewhere
    """
    rois = np.asarray(rois, dtype=np.float32)
    image_label = np.asarray(label, dtype=np.float32)[b]
    rows = ground_truth_rows(image_label, num_classes)
    gts = image_label[rows, 1:5]
    classes = image_label[rows, 0].astype(np.int64)          # truncated, as the operator does
    batch = np.asarray(label).shape[0]
    boxes = rois[np.flatnonzero(roi_images(rois, batch) == b), 1:5]
    if add_gt_as_proposals:
        boxes = np.concatenate([boxes, gts])
    n = len(boxes)
    if len(gts):
        iou = box_iou(boxes, gts)
        iou = np.where(np.isnan(iou), np.float32(-1), iou)
        best_gt = np.argmax(iou, axis=1)
        best_iou = np.maximum(iou[np.arange(n), best_gt], 0)
    else:
        best_gt = np.full(n, -1)
        best_iou = np.zeros(n, np.float32)
    kinds = np.full(n, NOT_SAMPLED, dtype=np.int64)
    bg = (best_iou >= np.float32(bg_thresh_lo)) & (best_iou < np.float32(bg_thresh_hi))
    fg = (best_gt >= 0) & (best_iou >= np.float32(fg_thresh))
    kinds[bg] = BACKGROUND
    kinds[fg] = FOREGROUND
    labels = np.zeros(n, np.float32)
    box_target = np.zeros((n, num_classes + 1, 4), np.float32)
    for j in np.flatnonzero(fg):
        cls = classes[best_gt[j]] + 1
        labels[j] = cls
        box_target[j, cls] = encode(boxes[j], gts[best_gt[j]], stds)
    return boxes, kinds, labels, box_target.reshape(n, 4 * (num_classes + 1))


def proposal_target(rois, label, num_classes, batch_rois=512, fg_fraction=0.25, fg_thresh=0.5,
                    bg_thresh_hi=0.5, bg_thresh_lo=0.0, stds=VARIANCES, add_gt_as_proposals=True,
                    rng=None):
    """R-CNN training targets, like ``mx.nd.ProposalTarget`` (up to which RoIs are sampled).

    Parameters
    ----------
    rois : (R, 5), label : (B, M, W >= 5), the rest as the operator
    rng : numpy Generator for the sampling (default: a fresh unseeded one)

    Returns
    -------
    rois_out : (B * S, 5) float32 ``[b, x0, y0, x1, y1]``; padding rows ``[b, 0, 0, 0, 0]``
    labels : (B * S,) float32 class + 1, 0 background, -1 padding
    box_target, box_weight : (B * S, 4 * (C + 1)) float32
    Per image: at most ``int(S * fg_fraction)`` foregrounds, then backgrounds up to S, each in
    candidate order, then padding.
    """
    rng = np.random.default_rng() if rng is None else rng
    batch = np.asarray(label).shape[0]
    width = 4 * (num_classes + 1)
    rois_out = np.zeros((batch, batch_rois, 5), np.float32)
    labels_out = np.full((batch, batch_rois), -1, np.float32)
    box_target = np.zeros((batch, batch_rois, width), np.float32)
    box_weight = np.zeros((batch, batch_rois, width), np.float32)
    for b in range(batch):
        boxes, kinds, labels, targets = image_candidates(
            rois, label, b, num_classes, add_gt_as_proposals, fg_thresh, bg_thresh_hi, bg_thresh_lo, stds)
        fg = np.flatnonzero(kinds == FOREGROUND)
        bg = np.flatnonzero(kinds == BACKGROUND)
        fg = np.sort(rng.choice(fg, min(len(fg), int(batch_rois * fg_fraction)), replace=False))
        bg = np.sort(rng.choice(bg, min(len(bg), batch_rois - len(fg)), replace=False))
        keep = np.concatenate([fg, bg]).astype(np.int64)
        k = len(keep)
        rois_out[b, :, 0] = b
        rois_out[b, :k, 1:5] = boxes[keep]
        labels_out[b, :k] = labels[keep]
        box_target[b, :k] = targets[keep]
        box_weight[b, :len(fg)] = slot_mask(labels[fg], num_classes)
    return (rois_out.reshape(-1, 5), labels_out.reshape(-1), box_target.reshape(-1, width),
            box_weight.reshape(-1, width))


def slot_mask(labels, num_classes):
    """(n, 4 * (C + 1)) float32: 1 in the 4 box-target slots of each label (0 = background)."""
    mask = np.zeros((len(labels), num_classes + 1, 4), bool)
    mask[np.arange(len(labels)), labels.astype(np.int64)] = True
    return mask.reshape(len(labels), 4 * (num_classes + 1)).astype(np.float32)
