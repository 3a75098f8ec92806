"""Box formats, IoU and the one box coder (numpy), mirroring ``src/operators/common/bbox.h``.

Corner boxes are ``(xmin, ymin, xmax, ymax)``; inside graphs they are normalised to [0, 1], in the
FPN operators they are pixels. The coder encodes a ground truth ``g`` against an anchor ``a`` as::

    t = ((gx - ax) / aw / vx, (gy - ay) / ah / vy, log(gw / aw) / vw, log(gh / ah) / vh)

with centres ``x``, sizes ``w, h`` and ``VARIANCES = (vx, vy, vw, vh)`` (the FPN operators call
them ``stds``). Round trip: ``decode(a, encode(a, g)) == g`` (to float rounding) for every box of
positive width and height.

:func:`encode` and :func:`decode` follow ``BoxEncode`` / ``BoxDecode`` / ``BoxDecodeLogClamped``
operation for operation in float32 (centre ``(x0 + x1) * 0.5``, half size ``exp(.) * w * 0.5``, exp
and log rounded from float64 as glibc's expf / logf), so that the numpy references reproduce the
operators' boxes and targets to the last bit or two.
"""
import numpy as np

VARIANCES = (0.1, 0.1, 0.2, 0.2)
"""The box-coding variances used by every ssdkit detector unless a graph overrides them."""
LOG_SIZE_CLAMP = np.float32(np.log(1000.0 / 16.0))
"""Detectron's upper clamp of decoded log-size deltas ``t_w * v_w``, ``t_h * v_h`` (``max_log_size`` of
:func:`decode`; ``kDetectronLogSizeClamp`` in bbox.h), used by the FPN operators."""


def corner_to_center(boxes):
    """``(..., 4)`` corners -> ``(..., 4)`` ``(cx, cy, w, h)``."""
    boxes = np.asarray(boxes, dtype=np.float32)
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return np.stack([boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h], axis=-1)


def center_to_corner(boxes):
    """``(..., 4)`` ``(cx, cy, w, h)`` -> ``(..., 4)`` corners."""
    boxes = np.asarray(boxes, dtype=np.float32)
    half_w, half_h = 0.5 * boxes[..., 2], 0.5 * boxes[..., 3]
    return np.stack([boxes[..., 0] - half_w, boxes[..., 1] - half_h,
                     boxes[..., 0] + half_w, boxes[..., 1] + half_h], axis=-1)


def box_area(boxes):
    """``(..., 4)`` corners -> ``(...)`` areas; 0 for empty or inverted boxes."""
    boxes = np.asarray(boxes, dtype=np.float32)
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return np.where((w > 0) & (h > 0), w * h, np.float32(0))


def box_iou(a, b):
    """Pairwise IoU.

    Parameters
    ----------
    a : (N, 4) corners
    b : (M, 4) corners

    Returns
    -------
    (N, M) float32 IoU; 0 where the boxes do not overlap or the union is empty.
    """
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    with np.errstate(invalid="ignore"):
        inter = np.where((iw > 0) & (ih > 0), iw * ih, np.float32(0))
        area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
        area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        union = area_a[:, None] + area_b[None, :] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), np.float32(0))
    return iou.astype(np.float32)


def _exp(x):
    # exp in float64 rounded to float32: glibc's expf (correctly rounded but in rare cases)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(np.asarray(x, dtype=np.float32).astype(np.float64)).astype(np.float32)


def _log(x):
    # log in float64 rounded to float32: glibc's logf (likewise)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(x, dtype=np.float32).astype(np.float64)).astype(np.float32)


def _centre_size(boxes):
    """``(..., 4)`` float32 corners -> centre x, centre y, width, height, as bbox.h computes them."""
    half = np.float32(0.5)
    return ((boxes[..., 0] + boxes[..., 2]) * half, (boxes[..., 1] + boxes[..., 3]) * half,
            boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])


def encode(anchors, gt, variances=VARIANCES):
    """Encode ground truths against anchors (``BoxEncode``).

    Parameters
    ----------
    anchors : (..., 4) corners
    gt : (..., 4) corners, broadcastable to ``anchors``
    variances : 4 floats

    Returns
    -------
    (..., 4) float32 regression targets.
    """
    a = np.asarray(anchors, dtype=np.float32)
    g = np.asarray(gt, dtype=np.float32)
    v = np.asarray(variances, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ax, ay, aw, ah = _centre_size(a)
        gx, gy, gw, gh = _centre_size(g)
        out = np.stack([(gx - ax) / aw / v[0], (gy - ay) / ah / v[1],
                        _log(gw / aw) / v[2], _log(gh / ah) / v[3]], axis=-1)
    return out.astype(np.float32)


def decode(anchors, deltas, variances=VARIANCES, clip=False, max_log_size=None):
    """Decode regressions into corner boxes (``BoxDecode``; ``BoxDecodeLogClamped`` with ``max_log_size``).

    Parameters
    ----------
    anchors : (..., 4) corners
    deltas : (..., 4) regressions, broadcastable to ``anchors``
    variances : 4 floats
    clip : bool, clip the result to [0, 1] (NaN stays NaN)
    max_log_size : float or None, replace log-size deltas ``t_w * v_w`` and ``t_h * v_h`` above it by it
        (:data:`LOG_SIZE_CLAMP` in the FPN operators; NaN stays NaN); None: no clamp (SSD)

    Returns
    -------
    (..., 4) float32 corners.
    """
    a = np.asarray(anchors, dtype=np.float32)
    t = np.asarray(deltas, dtype=np.float32)
    v = np.asarray(variances, dtype=np.float32)
    half = np.float32(0.5)
    with np.errstate(invalid="ignore", over="ignore"):
        ax, ay, aw, ah = _centre_size(a)
        ox = t[..., 0] * v[0] * aw + ax
        oy = t[..., 1] * v[1] * ah + ay
        lw, lh = t[..., 2] * v[2], t[..., 3] * v[3]
        if max_log_size is not None:
            limit = np.float32(max_log_size)
            lw = np.where(lw > limit, limit, lw)
            lh = np.where(lh > limit, limit, lh)
        ow = _exp(lw) * aw * half
        oh = _exp(lh) * ah * half
        out = np.stack([ox - ow, oy - oh, ox + ow, oy + oh], axis=-1)
    if clip:
        out = np.clip(out, 0.0, 1.0)
    return out.astype(np.float32)


def clip_to_image(boxes, height, width):
    """Clip pixel corner boxes ``(..., 4)`` to ``[0, width] x [0, height]`` (``ClipBoxToImage``); NaN stays NaN.

    Returns
    -------
    (..., 4) float32 corners.
    """
    b = np.asarray(boxes, dtype=np.float32)
    hi = np.array([width, height, width, height], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        out = np.where(b < 0, np.float32(0), np.where(b > hi, hi, b))
    return out.astype(np.float32)
