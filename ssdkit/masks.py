"""Instance masks after the network: paste the mask head's ``S x S`` maps into image pixels, COCO RLE.

Pixel convention (the one of :mod:`ssdkit.dataset.records`): boxes are continuous corners
``(x0, y0, x1, y1)`` in pixels; pixel column ``i`` covers ``[i, i + 1)`` and its centre is ``i + 0.5``.
A mask map of ``S x S`` cells covers its box exactly: cell ``j`` covers ``[x0 + j w / S, x0 + (j + 1) w / S)``
with ``w = x1 - x0`` (the same cells as the aligned RoIAlign that samples mask targets).

:func:`paste_masks` gives pixel ``(r, c)`` of detection ``k`` the value of ``probs[k]`` bilinearly sampled at
the pixel centre, clamped at the map's border (edge cells extend to the box edge), and
``probs >= threshold`` decides. Pixels whose centre lies outside the box (``c + 0.5 < x0`` or
``c + 0.5 >= x1``, likewise rows) are 0, so a map of ones pastes to exactly the pixels whose centres the
box holds.
"""
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as coco_mask


MASK_THRESHOLD = 0.5
"""Probability at and above which a pasted mask pixel belongs to the instance (evaluation, Detector, demo)."""


def has_masks(meta):
    """Whether the model a meta file describes outputs instance masks (an FPN model with ``fpn.mask``):
    its inference graph is then the group ``[detection (B, K, 6), masks (B, K, S, S)]``."""
    return bool(meta.get("fpn", {}).get("mask", False))


def paste_detections(rows, probs, width, height, threshold=MASK_THRESHOLD):
    """The masks of one image's detections, pasted at their boxes in the image's pixels.

    Parameters
    ----------
    rows : (K, 6) ``[cls_id, score, xmin, ymin, xmax, ymax]`` with corners normalised to the image
        (as the graphs output them; the caller has dropped the rows it does not want)
    probs : (K, S, S) the mask output of those rows
    width, height : int, the image size in pixels (e.g. the original image, not the network input)
    threshold : float, see :func:`paste_masks`

    Returns
    -------
    (K, height, width) bool
    """
    boxes = np.asarray(rows, np.float64).reshape(-1, 6)[:, 2:6] * np.array([width, height, width, height], np.float64)
    return paste_masks(probs, boxes, height, width, threshold)


def _pixel_span(lo, hi, size):
    """First and one-past-last pixel index whose centre ``i + 0.5`` lies in ``[lo, hi)``, clipped to
    ``[0, size]``."""
    start = int(np.clip(np.ceil(lo - 0.5), 0, size))
    stop = int(np.clip(np.ceil(hi - 0.5), 0, size))
    return start, max(start, stop)


def _interp_matrix(lo, hi, start, stop, cells):
    """``(stop - start, cells)`` float32 bilinear weights of the pixel centres ``start + 0.5 ..`` in the
    ``cells`` cells spanning ``[lo, hi)`` (border-clamped); each row sums to 1."""
    centres = np.arange(start, stop, dtype=np.float64) + 0.5
    u = (centres - lo) / (hi - lo) * cells - 0.5
    u = np.clip(u, 0.0, cells - 1)
    j0 = np.floor(u).astype(np.int64)
    j1 = np.minimum(j0 + 1, cells - 1)
    frac = u - j0
    out = np.zeros((len(centres), cells), np.float32)
    rows = np.arange(len(centres))
    out[rows, j0] += (1.0 - frac).astype(np.float32)
    out[rows, j1] += frac.astype(np.float32)
    return out


def paste_masks(probs, boxes, height, width, threshold=0.5):
    """Paste per-detection mask maps into an image (see the module docstring for the pixel convention).

    Parameters
    ----------
    probs : (K, S, S) float, mask probabilities of each detection (e.g. the mask head's sigmoid output)
    boxes : (K, 4) float, ``(x0, y0, x1, y1)`` continuous pixel corners in the target image (may reach
        outside it; the part outside is cut off)
    height, width : int, the target image size
    threshold : float, a pixel is in the mask where the sampled probability ``>= threshold``

    Returns
    -------
    (K, height, width) bool masks; all False for a box holding no pixel centre (e.g. empty or outside).

    Notes
    -----
    Sampling is separable: for each detection the ``(h, w)`` crop of its box is ``Wy @ probs[k] @ Wx.T``
    with ``(h, S)`` and ``(w, S)`` bilinear weight matrices, so the cost is that of the boxes' pixels,
    not of the whole image per detection.
    """
    probs = np.asarray(probs, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if probs.ndim != 3 or probs.shape[1] != probs.shape[2] or len(probs) != len(boxes):
        raise ValueError("paste_masks: probs must be (K, S, S) with one map per box; got %s for %d boxes"
                         % (probs.shape, len(boxes)))
    height, width = int(height), int(width)
    cells = probs.shape[1]
    out = np.zeros((len(boxes), height, width), dtype=bool)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0):
            continue
        c0, c1 = _pixel_span(x0, x1, width)
        r0, r1 = _pixel_span(y0, y1, height)
        if c1 == c0 or r1 == r0:
            continue
        wy = _interp_matrix(y0, y1, r0, r1, cells)
        wx = _interp_matrix(x0, x1, c0, c1, cells)
        out[k, r0:r1, c0:c1] = (wy @ probs[k]) @ wx.T >= threshold
    return out


def encode_rle(masks):
    """COCO run-length encoding of binary masks (pycocotools.mask.encode).

    Parameters
    ----------
    masks : (K, H, W) bool or 0/1 integers

    Returns
    -------
    list of K dicts ``{"size": [H, W], "counts": str}`` (compressed RLE, json-ready)
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError("encode_rle: masks must be (K, H, W); got shape %s" % (masks.shape,))
    masks = masks.view(np.uint8) if masks.dtype == bool else (masks != 0).view(np.uint8)
    out = []
    for mask in masks:  # one (H, W, 1) Fortran copy at a time: 4x faster than transposing the stack
        rle = coco_mask.encode(np.asfortranarray(mask)[:, :, None])[0]
        out.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return out


def decode_rle(rles):
    """``(K, H, W)`` bool masks of COCO RLE dicts (counts as str or bytes); the inverse of
    :func:`encode_rle`. An empty list gives ``(0, 0, 0)``."""
    if not rles:
        return np.zeros((0, 0, 0), bool)
    fixed = [dict(r, counts=r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"])
             for r in rles]
    return coco_mask.decode(fixed).transpose(2, 0, 1).astype(bool)


@dataclass(frozen=True)
class Instances:
    """Detections of a mask model in one image, as :class:`ssdkit.Detector` returns them.

    Attributes
    ----------
    rows : (K, 6) float32 ``[cls_id, score, xmin, ymin, xmax, ymax]`` in pixels, by decreasing score
    masks : (K, H, W) bool, the mask of each row in the image's pixels (:func:`paste_masks`)
    """

    rows: np.ndarray
    masks: np.ndarray

    def __post_init__(self):
        if len(self.rows) != len(self.masks):
            raise ValueError("Instances: %d rows but %d masks" % (len(self.rows), len(self.masks)))

    def __len__(self):
        return len(self.rows)
