"""Box formats, IoU and the one box coder (numpy), mirroring ``src/operators/common/bbox.h``.

Corner boxes are ``(xmin, ymin, xmax, ymax)``; inside graphs they are normalised to [0, 1].
The coder encodes a ground truth ``g`` against an anchor ``a`` as::

    t = ((gx - ax) / aw / vx, (gy - ay) / ah / vy, log(gw / aw) / vw, log(gh / ah) / vh)

with centres ``x``, sizes ``w, h`` and ``VARIANCES = (vx, vy, vw, vh)``. Round trip:
``decode(a, encode(a, g)) == g`` (to float rounding) for every box of positive width and height.
"""
import numpy as np

VARIANCES = (0.1, 0.1, 0.2, 0.2)
"""The box-coding variances used by every ssdkit detector unless a graph overrides them."""


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


def encode(anchors, gt, variances=VARIANCES):
    """Encode ground truths against anchors.

    Parameters
    ----------
    anchors : (..., 4) corners
    gt : (..., 4) corners, broadcastable to ``anchors``
    variances : 4 floats

    Returns
    -------
    (..., 4) float32 regression targets.
    """
    a = corner_to_center(anchors)
    g = corner_to_center(gt)
    v = np.asarray(variances, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.stack([(g[..., 0] - a[..., 0]) / a[..., 2] / v[0],
                        (g[..., 1] - a[..., 1]) / a[..., 3] / v[1],
                        np.log(g[..., 2] / a[..., 2]) / v[2],
                        np.log(g[..., 3] / a[..., 3]) / v[3]], axis=-1)
    return out.astype(np.float32)


def decode(anchors, deltas, variances=VARIANCES, clip=False):
    """Decode regressions into corner boxes.

    Parameters
    ----------
    anchors : (..., 4) corners
    deltas : (..., 4) regressions, broadcastable to ``anchors``
    variances : 4 floats
    clip : bool, clip the result to [0, 1]

    Returns
    -------
    (..., 4) float32 corners.
    """
    a = corner_to_center(anchors)
    t = np.asarray(deltas, dtype=np.float32)
    v = np.asarray(variances, dtype=np.float32)
    cx = t[..., 0] * v[0] * a[..., 2] + a[..., 0]
    cy = t[..., 1] * v[1] * a[..., 3] + a[..., 1]
    with np.errstate(over="ignore"):
        w = np.exp(t[..., 2] * v[2]) * a[..., 2]
        h = np.exp(t[..., 3] * v[3]) * a[..., 3]
    out = center_to_corner(np.stack([cx, cy, w, h], axis=-1))
    if clip:
        out = np.clip(out, 0.0, 1.0)
    return out.astype(np.float32)
