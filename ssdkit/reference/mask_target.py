"""Numpy reference of the ``MaskTarget`` operator (``src/operators/mask_target/``).

It spells out the steps of ``mask_target-inl.h``: which rows are foreground, the matched ground truth
(ProposalTarget's rule, with :func:`ssdkit.boxes.box_iou` and the input conventions of
:mod:`ssdkit.reference.two_stage`), then RoIAlign of its mask in the RoI and the threshold. The
sampling is written in float32 with the operator's order of operations (positions, bilinear weights,
the sum over samples), so the averages equal the operator's bit for bit; :func:`mask_soft_target`
returns them before the threshold, for tests that look at values near it.
"""
import math

import numpy as np

from ssdkit.boxes import box_iou
from ssdkit.reference.two_stage import ground_truth_rows, roi_images

MAX_ADAPTIVE_GRID = 64
"""Most samples per bin side when ``sample_ratio <= 0`` (``kMaxAdaptiveGrid``)."""


def matched_rows(rois, labels, gt, num_classes=0):
    """The gt row whose mask is each row's target (steps 1 and 2 of ``mask_target-inl.h``).

    Parameters
    ----------
    rois : (R, 5) rows ``[batch_index, x0, y0, x1, y1]`` in pixels
    labels : (R,) ProposalTarget's labels (k + 1 foreground of class k, 0 background, -1 padding)
    gt : (B, M, W >= 5) pixel label rows ``[cls, x0, y0, x1, y1, ...]`` padded with class -1
    num_classes : ground-truth classes are ``[0, num_classes)``; 0: any class id >= 0

    Returns
    -------
    images : (R,) int64 image of each row, -1 for rows without a target
    rows : (R,) int64 gt row (the mask plane ``gt_masks[images[r], rows[r]]``), -1 for rows without a
        target: label NaN or < 1, not a RoI of an image, no ground truth in the image, or the best
        ground truth (highest IoU, lowest index on ties) not of class ``floor(label) - 1``.
    """
    rois = np.asarray(rois, np.float32).reshape(-1, 5)
    labels = np.asarray(labels, np.float32).reshape(-1)
    gt = np.asarray(gt, np.float32)
    class_limit = num_classes if num_classes > 0 else np.inf
    images = roi_images(rois, gt.shape[0])
    out_images = np.full(len(rois), -1, np.int64)
    out_rows = np.full(len(rois), -1, np.int64)
    for r in range(len(rois)):
        label, b = labels[r], images[r]
        if not 1 <= label < 2.0 ** 31 or b < 0:
            continue
        usable = ground_truth_rows(gt[b], class_limit)
        if not len(usable):
            continue
        iou = box_iou(rois[r, 1:5], gt[b, usable, 1:5])[0]
        iou = np.where(np.isnan(iou), np.float32(-2), iou)
        best = int(np.argmax(iou))                 # first of the highest: lowest index on ties
        if iou[best] < -1:                         # every IoU NaN: nothing matched
            continue
        row = int(usable[best])
        if int(gt[b, row, 0]) != int(label) - 1:
            continue
        out_images[r], out_rows[r] = b, row
    return out_images, out_rows


def _grid(bin_size, sample_ratio):
    if sample_ratio > 0:
        return sample_ratio
    if not bin_size > 0:
        return 0
    return MAX_ADAPTIVE_GRID if bin_size >= MAX_ADAPTIVE_GRID else int(math.ceil(bin_size))


def _positions(start, bin_size, grid, size):
    """(size, grid) float32 sample coordinates: ``start + p * bin + (i + 0.5) * bin / grid``."""
    f = np.float32
    p = np.arange(size, dtype=np.float32)[:, None]
    i = np.arange(grid, dtype=np.float32)[None, :]
    return (f(start) + p * f(bin_size)) + ((i + f(0.5)) * f(bin_size)) / f(max(grid, 1))


def _axis_taps(pos, length):
    """Per coordinate of one axis: (valid, low, high, weight of low, weight of high) as BilinearTaps."""
    f = np.float32
    valid = (pos >= -1) & (pos <= length)
    pos = np.where(pos <= 0, f(0), pos).astype(np.float32)
    low = np.floor(np.minimum(pos, f(length))).astype(np.int64)   # int() truncation of pos in [0, length]
    edge = low >= length - 1
    low = np.where(edge, length - 1, low)
    high = np.where(edge, low, low + 1)
    pos = np.where(edge, low.astype(np.float32), pos)
    frac = (pos - low.astype(np.float32)).astype(np.float32)
    return valid, low, high, (f(1) - frac).astype(np.float32), frac


def mask_soft_target(mask, roi, mask_size=28, spatial_scale=1.0, sample_ratio=2, aligned=True):
    """RoIAlign of one mask plane in one RoI: the bin averages before the threshold.

    Parameters
    ----------
    mask : (Hm, Wm) mask plane, pixel (y, x) at image pixels ``[x, x + 1) / spatial_scale``
    roi : (4,) ``[x0, y0, x1, y1]`` in image pixels
    mask_size, spatial_scale, sample_ratio, aligned : as the operator

    Returns
    -------
    (S, S) float32: per bin the mean of its grid x grid bilinear samples (MultiLevelROIAlign's rule:
    a sample more than one cell outside the mask counts 0).
    """
    f = np.float32
    mask = np.asarray(mask, np.float32)
    height, width = mask.shape
    x0, y0, x1, y1 = (f(v) for v in roi)
    scale = f(spatial_scale)
    offset = f(0.5) if aligned else f(0)
    start_x, start_y = x0 * scale - offset, y0 * scale - offset
    roi_w, roi_h = x1 * scale - offset - start_x, y1 * scale - offset - start_y
    if not aligned:
        roi_w, roi_h = max(roi_w, f(1)), max(roi_h, f(1))
    bin_w, bin_h = roi_w / f(mask_size), roi_h / f(mask_size)
    grid_h, grid_w = _grid(bin_h, sample_ratio), _grid(bin_w, sample_ratio)
    ys = _axis_taps(_positions(start_y, bin_h, grid_h, mask_size), height)    # each (S, grid_h)
    xs = _axis_taps(_positions(start_x, bin_w, grid_w, mask_size), width)     # each (S, grid_w)
    total = np.zeros((mask_size, mask_size), np.float32)
    for iy in range(grid_h):
        vy, ylo, yhi, hy, ly = (a[:, iy, None] for a in ys)                    # (S, 1): bin row ph
        for ix in range(grid_w):
            vx, xlo, xhi, hx, lx = (a[None, :, ix] for a in xs)                # (1, S): bin column pw
            value = (hy * hx) * mask[ylo, xlo] + (hy * lx) * mask[ylo, xhi]
            value = value + (ly * hx) * mask[yhi, xlo]
            value = value + (ly * lx) * mask[yhi, xhi]
            total = total + np.where(vy & vx, value, f(0)).astype(np.float32)
    return (total / f(max(grid_h * grid_w, 1))).astype(np.float32)


def mask_target(rois, labels, gt, gt_masks, mask_size=28, spatial_scale=1.0, sample_ratio=2, aligned=True,
                threshold=0.5, num_classes=0):
    """What ``mx.nd.MaskTarget(rois, labels, gt, gt_masks, ...)`` returns.

    Parameters
    ----------
    rois : (R, 5), labels : (R,), gt : (B, M, W >= 5), num_classes: as :func:`matched_rows`
    gt_masks : (B, M, Hm, Wm) masks in [0, 1], one per gt row
    mask_size, spatial_scale, sample_ratio, aligned : as :func:`mask_soft_target`
    threshold : a bin is 1 where its average is >= threshold

    Returns
    -------
    (R, S, S) float32: 0/1 targets of the rows with a matched ground truth, -1 in every other row.
    """
    rois = np.asarray(rois, np.float32).reshape(-1, 5)
    gt_masks = np.asarray(gt_masks, np.float32)
    images, rows = matched_rows(rois, labels, gt, num_classes)
    out = np.full((len(rois), mask_size, mask_size), -1, np.float32)
    for r in np.flatnonzero(rows >= 0):
        soft = mask_soft_target(gt_masks[images[r], rows[r]], rois[r, 1:5], mask_size, spatial_scale, sample_ratio,
                                aligned)
        with np.errstate(invalid="ignore"):
            out[r] = (soft >= np.float32(threshold)).astype(np.float32)
    return out
