"""Numpy reference of the ``MultiLevelROIAlign`` operator (``src/operators/multilevel_roi_align/``).

Readable loops in float32 (the operator's arithmetic), vectorised over channels only; slow, for
tests on tiny inputs. The semantics are written out in ``multilevel_roi_align-inl.h``.
"""
import math

import numpy as np


def fpn_level_index(rois, num_levels, *, min_level=2, canonical_size=224.0, canonical_level=4):
    """Level index (0 .. L-1) of each RoI by the FPN rule, as the operator computes it (float32).

    Parameters
    ----------
    rois : (R, 5) rows ``[batch_index, x0, y0, x1, y1]``
    num_levels : int, L

    Returns
    -------
    (R,) int level indices (level number minus ``min_level``).
    """
    rois = np.asarray(rois, np.float32)
    w = np.maximum(rois[:, 3] - rois[:, 1], np.float32(0))
    h = np.maximum(rois[:, 4] - rois[:, 2], np.float32(0))
    size = np.maximum(np.sqrt(w * h), np.float32(1e-6))
    level = np.floor(np.log2(size / np.float32(canonical_size)) + np.float32(canonical_level))
    level = np.clip(level, min_level, min_level + num_levels - 1)
    return level.astype(np.int64) - min_level


def _row_level(roi, level_value, num_levels, batch, min_level, rule):
    """Level index of one row, or None when the row gives zeros."""
    if not np.all(np.isfinite(roi)) or roi[0] < 0:
        return None
    if roi[0] >= batch:
        raise ValueError("batch index %s >= %d images" % (roi[0], batch))
    if level_value is None:
        return rule
    if not math.isfinite(level_value):
        return None
    index = math.floor(level_value) - min_level
    return index if 0 <= index < num_levels else None


def _samples(roi, scale, pooled, sample_ratio, aligned):
    """Per bin ``(ph, pw)``: the sample positions ``[(y, x), ...]`` and the divisor ``count``."""
    f = np.float32
    offset = f(0.5) if aligned else f(0)
    start_x, start_y = f(roi[1]) * f(scale) - offset, f(roi[2]) * f(scale) - offset
    roi_w = f(roi[3]) * f(scale) - offset - start_x
    roi_h = f(roi[4]) * f(scale) - offset - start_y
    if not aligned:
        roi_w, roi_h = max(roi_w, f(1)), max(roi_h, f(1))
    bin_h, bin_w = roi_h / f(pooled[0]), roi_w / f(pooled[1])
    grid_h = sample_ratio if sample_ratio > 0 else max(int(math.ceil(roi_h / f(pooled[0]))), 0)
    grid_w = sample_ratio if sample_ratio > 0 else max(int(math.ceil(roi_w / f(pooled[1]))), 0)
    count = f(max(grid_h * grid_w, 1))
    bins = {}
    for ph in range(pooled[0]):
        for pw in range(pooled[1]):
            bins[ph, pw] = [(start_y + f(ph) * bin_h + (f(iy) + f(0.5)) * bin_h / f(grid_h),
                             start_x + f(pw) * bin_w + (f(ix) + f(0.5)) * bin_w / f(grid_w))
                            for iy in range(grid_h) for ix in range(grid_w)]
    return bins, count


def _taps(y, x, height, width):
    """``[(row, col, weight)] * 4`` of a bilinear sample, or [] when it is more than a cell outside."""
    f = np.float32
    if y < -1 or y > height or x < -1 or x > width:
        return []
    y, x = max(f(y), f(0)), max(f(x), f(0))
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = f(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = f(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - f(y_low), x - f(x_low)
    hy, hx = f(1) - ly, f(1) - lx
    return [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx), (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)]


def _plan(features, rois, levels, spatial_scales, pooled, sample_ratio, aligned, min_level, canonical_size,
          canonical_level):
    """Per RoI row: ``(level, batch, bins, count)`` or None."""
    rois = np.asarray(rois, np.float32)
    num_levels, batch = len(features), features[0].shape[0]
    rule = fpn_level_index(rois, num_levels, min_level=min_level, canonical_size=canonical_size,
                           canonical_level=canonical_level)
    plan = []
    for r, roi in enumerate(rois):
        given = None if levels is None else float(levels[r])
        if levels is not None and not math.isfinite(given):
            plan.append(None)
            continue
        level = _row_level(roi, given, num_levels, batch, min_level, int(rule[r]))
        if level is None:
            plan.append(None)
            continue
        bins, count = _samples(roi, spatial_scales[level], pooled, sample_ratio, aligned)
        plan.append((level, int(roi[0]), bins, count))
    return plan


def _bin_taps(plan, features):
    """Per bin of every pooled row: ``(row, level, image, ph, pw, [(y, x, weight), ...], count)``."""
    for r, item in enumerate(plan):
        if item is None:
            continue
        level, b, bins, count = item
        height, width = features[level].shape[2:]
        for (ph, pw), points in bins.items():
            yield r, level, b, ph, pw, [tap for y, x in points for tap in _taps(y, x, height, width)], count


def _pooled(pooled_size):
    return (int(pooled_size), int(pooled_size)) if np.isscalar(pooled_size) else tuple(int(v) for v in pooled_size)


def multilevel_roi_align(features, rois, *, spatial_scales, pooled_size=7, sample_ratio=-1, aligned=False, levels=None,
                         min_level=2, canonical_size=224.0, canonical_level=4):
    """What ``mx.nd.MultiLevelROIAlign(*features, rois[, levels], ...)`` returns.

    Parameters
    ----------
    features : list of L arrays ``(B, C, H_l, W_l)``, levels ``min_level`` .. ``min_level + L - 1``
    rois : (R, 5) rows ``[batch_index, x0, y0, x1, y1]`` in input pixels
    spatial_scales : L floats, cells per input pixel of each level (``1 / stride``)
    pooled_size : int or (P_h, P_w)
    sample_ratio : int, samples per bin side (<= 0: ``ceil`` of the bin size)
    aligned : bool, half-pixel offset
    levels : (R,) level numbers, or None for the FPN rule (:func:`fpn_level_index`)

    Returns
    -------
    (R, C, P_h, P_w) float32; rows with a negative batch index, a non-finite coordinate or a level
    outside the pyramid are zeros.
    """
    pooled = _pooled(pooled_size)
    features = [np.asarray(f, np.float32) for f in features]
    plan = _plan(features, rois, levels, spatial_scales, pooled, sample_ratio, aligned, min_level, canonical_size,
                 canonical_level)
    out = np.zeros((len(plan), features[0].shape[1]) + pooled, np.float32)
    for r, level, b, ph, pw, taps, count in _bin_taps(plan, features):
        fmap = features[level][b]
        acc = np.zeros(fmap.shape[0], np.float32)
        for row, col, weight in taps:
            acc += weight * fmap[:, row, col]
        out[r, :, ph, pw] = acc / count
    return out


def multilevel_roi_align_backward(features, rois, grad_out, *, spatial_scales, pooled_size=7, sample_ratio=-1,
                                  aligned=False, levels=None, min_level=2, canonical_size=224.0, canonical_level=4):
    """The gradient of :func:`multilevel_roi_align` with respect to each feature map.

    Parameters
    ----------
    grad_out : (R, C, P_h, P_w) gradient of the output
    (the rest as :func:`multilevel_roi_align`)

    Returns
    -------
    list of L float32 arrays shaped like ``features``.
    """
    pooled = _pooled(pooled_size)
    features = [np.asarray(f, np.float32) for f in features]
    grad_out = np.asarray(grad_out, np.float32)
    plan = _plan(features, rois, levels, spatial_scales, pooled, sample_ratio, aligned, min_level, canonical_size,
                 canonical_level)
    grads = [np.zeros_like(f) for f in features]
    for r, level, b, ph, pw, taps, count in _bin_taps(plan, features):
        g = grad_out[r, :, ph, pw] / count
        for row, col, weight in taps:
            grads[level][b][:, row, col] += weight * g
    return grads
