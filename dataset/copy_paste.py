"""Mask-based copy-paste augmentation (InstaBoost style, Fang et al. 2019) in numpy / OpenCV.

With probability ``prob`` an image gets up to ``max_instances`` of its annotated instances jittered: each
is cut out by its mask, transformed by an affine map about the centre of its box (scale ``s``, rotation
``a``, translation ``t``; ``t`` is reduced where needed so that the moved centre ``c + t`` stays in the image)::

    p' = s R(a) (p - c) + c + t        (continuous pixel coordinates, pixel i covers [i, i + 1))

and pasted on top of the image where its transformed mask is 1. Two modes say what becomes of the source:

- ``"move"`` (InstaBoost): the instance's old pixels are filled by ``cv2.inpaint`` (Telea, radius 3) over
  its mask dilated by one pixel (the dilation removes the object's anti-aliased rim; regions longer than
  ``INPAINT_SIZE`` are inpainted downscaled), and the instance's row now describes the moved instance;
- ``"copy"``: the original stays as it was and the jittered copy is appended as a new instance (same class
  and difficult flag); pixels outside the pasted masks are unchanged.

Occlusion follows the paste order: a pasted instance lies on top, so its mask is subtracted from the masks
of every other instance (including earlier pastes). Every instance whose mask changed gets the tight box of
its mask (pixel corners, :mod:`ssdkit.dataset.records`) and is dropped when its visible area is empty or
below ``min_visible`` times its reference area (an original instance: its input mask area; a pasted one: the
area of its whole transformed mask, inside or outside the image, grown by the factor earlier pastes had hidden
of it). Instances whose masks did not change keep their input boxes. A jitter whose transformed mask keeps less
than ``min_visible`` of that reference (or no pixel) inside the image is not applied, nor is an instance already
covered below ``min_visible`` by an earlier paste jittered (it is dropped). The warps run on the instance's
box region only, never the whole image.

A fixed generator state reproduces the output exactly; ``prob == 0`` returns the inputs without drawing.
The config section keys are ``augment.copy_paste_*`` (:class:`ssdkit.config.schema.AugmentConfig`,
converted by :func:`ssdkit.api.data.copy_paste_of`).
"""
import math
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from ssdkit.config.schema import copy_paste_problem

INPAINT_RADIUS = 3
INPAINT_SIZE = 48
"""Longest side (pixels) of the region inpainted; larger holes are inpainted downscaled and scaled back."""


@dataclass(frozen=True)
class CopyPaste:
    """Copy-paste settings (the ``augment.copy_paste_*`` config keys without the prefix).

    Attributes
    ----------
    prob : probability that an image is augmented, in [0, 1]; 0 switches the step off
    max_instances : most instances jittered per augmented image (>= 1); all of them when fewer
    scale : ``(low, high)``, the scale factor is drawn uniformly from it, ``0 < low <= high``
    rotation : the angle is drawn uniformly from ``[-rotation, rotation]`` degrees, in [0, 180]
    translate : the shift is drawn uniformly from ``[-translate, translate]`` times the image width (x) and
        height (y), in [0, 1]
    min_visible : an instance whose visible area falls below this fraction of its reference area is
        dropped, in [0, 1]
    mode : ``"move"`` (inpaint the source, InstaBoost) or ``"copy"`` (keep the source, add the copy)
    """

    prob: float = 0.0
    max_instances: int = 3
    scale: Tuple[float, float] = (0.8, 1.2)
    rotation: float = 5.0
    translate: float = 0.05
    min_visible: float = 0.3
    mode: str = "move"

    def __post_init__(self):
        max_instances = int(self.max_instances) if isinstance(self.max_instances, np.integer) else self.max_instances
        problem = copy_paste_problem(self.prob, max_instances, tuple(self.scale), self.rotation, self.translate,
                                     self.min_visible, self.mode)
        if problem is not None:
            name, message = problem
            raise ValueError("copy-paste setting '%s' (config key augment.copy_paste_%s): %s" % (name, name, message))
        object.__setattr__(self, "scale", (float(self.scale[0]), float(self.scale[1])))


def tight_boxes(masks):
    """Tight boxes of masks in pixel corners: columns ``x0 .. x1`` with a pixel give ``(x0, y0, x1 + 1, y1 + 1)``.

    Parameters
    ----------
    masks : (K, H, W) array, nonzero = inside

    Returns
    -------
    (K, 4) float32 ``(xmin, ymin, xmax, ymax)``; all zeros for an empty mask.
    """
    masks = np.asarray(masks)
    out = np.zeros((len(masks), 4), np.float32)
    for k, mask in enumerate(masks):
        x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask, dtype=np.uint8))
        if w > 0 and h > 0:
            out[k] = (x, y, x + w, y + h)
    return out


def _areas(masks):
    """``(K, H, W)`` -> ``(K,)`` int64 nonzero pixels per mask."""
    return np.array([cv2.countNonZero(np.ascontiguousarray(m, dtype=np.uint8)) for m in masks], np.int64)


def _check_inputs(image, boxes, classes, difficult, masks):
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("copy_paste: image must be (H, W, 3) uint8, got %s %s" % (image.shape, image.dtype))
    count = len(boxes)
    if boxes.shape != (count, 4) or len(classes) != count or len(difficult) != count:
        raise ValueError("copy_paste: boxes %s, classes (%d,) and difficult (%d,) must hold one row per instance"
                         % (boxes.shape, len(classes), len(difficult)))
    if masks.shape != (count,) + image.shape[:2]:
        raise ValueError("copy_paste: masks must be (K, H, W) = %s (one per box, at the image's size), got %s; "
                         "decode them with ssdkit.dataset.masks.decode_masks"
                         % ((count,) + image.shape[:2], masks.shape))


def _affine(box, scale, angle, shift, size):
    """The jitter as a 2x3 matrix on continuous coordinates: ``p' = s R(a) (p - c) + c + t``, ``c`` the box
    centre, ``t`` the shift reduced so that ``c + t`` stays in the image of ``size = (width, height)``."""
    centre = np.array([0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])])
    cos, sin = scale * math.cos(math.radians(angle)), scale * math.sin(math.radians(angle))
    linear = np.array([[cos, -sin], [sin, cos]])
    offset = np.clip(centre + np.asarray(shift), 0.0, size) - linear @ centre
    return np.concatenate([linear, offset[:, None]], axis=1)


def _warp_instance(image, mask, box, matrix):
    """Warp one instance's pixels and mask, working on its box region only.

    Parameters
    ----------
    image : (H, W, 3) uint8; mask : (H, W) uint8 0/1
    box : (4,) int tight box ``(x0, y0, x1, y1)`` of ``mask`` (exclusive ends)
    matrix : (2, 3) affine on continuous coordinates (see :func:`_affine`)

    Returns
    -------
    origin : (2,) int ``(x, y)`` of the warped patch's top-left pixel in image coordinates (may be outside)
    pixels : (h, w, 3) uint8 warped pixels; warped : (h, w) bool, the transformed mask (bilinear, >= 0.5)
    """
    height, width = mask.shape
    sx0, sy0 = max(box[0] - 1, 0), max(box[1] - 1, 0)
    sx1, sy1 = min(box[2] + 1, width), min(box[3] + 1, height)
    corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], np.float64)
    moved = corners @ matrix[:, :2].T + matrix[:, 2]
    dx0, dy0 = np.floor(moved.min(axis=0)).astype(int) - 1
    dx1, dy1 = np.ceil(moved.max(axis=0)).astype(int) + 1
    # pixel index u (source crop) <-> continuous u + 0.5 + s0; index v (patch) <-> continuous v + 0.5 + d0
    linear = matrix[:, :2]
    offset = linear @ (0.5 + np.array([sx0, sy0])) + matrix[:, 2] - 0.5 - np.array([dx0, dy0])
    crop_matrix = np.concatenate([linear, offset[:, None]], axis=1)
    size = (int(dx1 - dx0), int(dy1 - dy0))
    pixels = cv2.warpAffine(image[sy0:sy1, sx0:sx1], crop_matrix, size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    soft = cv2.warpAffine(mask[sy0:sy1, sx0:sx1].astype(np.float32), crop_matrix, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return np.array([dx0, dy0]), pixels, soft >= 0.5


def _inpaint(image, mask, box):
    """Fill ``mask``'s pixels (dilated by one) of ``image`` in place from their surroundings, on the box region."""
    height, width = mask.shape
    margin = INPAINT_RADIUS + 2
    x0, y0 = max(box[0] - margin, 0), max(box[1] - margin, 0)
    x1, y1 = min(box[2] + margin, width), min(box[3] + margin, height)
    hole = cv2.dilate(np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.uint8), np.ones((3, 3), np.uint8)) > 0
    region = image[y0:y1, x0:x1]
    factor = min(1.0, INPAINT_SIZE / max(region.shape[:2]))
    if factor < 1.0:        # Telea's cost grows with the hole's area; its fill is smooth, so work small
        size = (max(1, round(region.shape[1] * factor)), max(1, round(region.shape[0] * factor)))
        small = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        small_hole = cv2.resize(hole.astype(np.uint8), size, interpolation=cv2.INTER_AREA) > 0
        filled = cv2.inpaint(small, small_hole.astype(np.uint8) * np.uint8(255), INPAINT_RADIUS, cv2.INPAINT_TELEA)
        filled = cv2.resize(filled, (region.shape[1], region.shape[0]), interpolation=cv2.INTER_LINEAR)
    else:
        filled = cv2.inpaint(np.ascontiguousarray(region), hole.astype(np.uint8) * np.uint8(255), INPAINT_RADIUS,
                             cv2.INPAINT_TELEA)
    np.copyto(region, filled, where=hole[:, :, None])


def copy_paste(image, boxes, classes, difficult, masks, rng, config):
    """Jitter and re-paste up to ``config.max_instances`` instances of one image by their masks.

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB
    boxes : (K, 4) float32 pixel corners ``(x0, y0, x1, y1)``
    classes : (K,) class ids; difficult : (K,) flags
    masks : (K, H, W) uint8 0/1 instance masks, one per box
    rng : np.random.Generator, the only source of randomness (not drawn from when ``config.prob == 0``)
    config : :class:`CopyPaste`

    Returns
    -------
    image : (H, W, 3) uint8
    boxes : (K', 4) float32; classes : (K',); difficult : (K',); masks : (K', H, W) uint8
        the kept instances: inputs in input order (moved ones in place), then pasted copies in paste order.
        When nothing is applied the input arrays themselves are returned.
    """
    unchanged = (image, boxes, classes, difficult, masks)
    if config.prob <= 0.0:
        return unchanged
    image = np.asarray(image)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes, difficult, masks = np.asarray(classes), np.asarray(difficult), np.asarray(masks)
    _check_inputs(image, boxes, classes, difficult, masks)
    if rng.random() >= config.prob:
        return unchanged
    areas = _areas(masks)
    candidates = np.flatnonzero(areas > 0)
    if not len(candidates):
        return unchanged
    chosen = rng.choice(candidates, size=min(config.max_instances, len(candidates)), replace=False)
    height, width = image.shape[:2]
    copies = config.mode == "copy"
    count = len(masks)
    rows = list(range(count))                      # the input row each output row describes
    slots = count + (len(chosen) if copies else 0)
    out_image = image.copy()
    out_masks = np.empty((slots, height, width), np.uint8)
    np.not_equal(masks, 0, out=out_masks[:count].view(bool))
    out_masks[count:] = 0
    reference = np.concatenate([areas, np.zeros(slots - count, np.int64)]).astype(np.float64)
    changed = np.zeros(slots, bool)
    pasted = 0
    for source in chosen:
        scale = rng.uniform(*config.scale)
        angle = rng.uniform(-config.rotation, config.rotation)
        shift = rng.uniform(-config.translate, config.translate, size=2) * (width, height)
        current = out_masks[source]
        current_area = cv2.countNonZero(current)
        if current_area == 0 or current_area < config.min_visible * reference[source]:
            continue                # (mostly) covered by an earlier paste: left to be dropped
        box = tight_boxes(current[None])[0].astype(int)
        matrix = _affine(box, scale, angle, shift, (width, height))
        origin, pixels, warped = _warp_instance(out_image, current, box, matrix)
        # the jittered instance's reference: its whole warped mask, grown back by what earlier pastes hid of it
        full_area = int(warped.sum()) * reference[source] / current_area
        x0, y0 = max(origin[0], 0), max(origin[1], 0)
        x1, y1 = min(origin[0] + warped.shape[1], width), min(origin[1] + warped.shape[0], height)
        if x1 <= x0 or y1 <= y0:
            continue
        inside = warped[y0 - origin[1]:y1 - origin[1], x0 - origin[0]:x1 - origin[0]]
        visible = int(inside.sum())
        if visible == 0 or visible < config.min_visible * full_area:
            continue
        if copies:
            target = len(rows)
            rows.append(source)
        else:
            target = source
            _inpaint(out_image, current, box)
            out_masks[source] = 0
        patch = pixels[y0 - origin[1]:y1 - origin[1], x0 - origin[0]:x1 - origin[0]]
        np.copyto(out_image[y0:y1, x0:x1], patch, where=inside[:, :, None])
        inside = inside.view(np.uint8)
        under = out_masks[:, y0:y1, x0:x1]
        changed |= (under & inside).reshape(slots, -1).any(axis=1)      # instances now (partly) underneath
        under &= 1 - inside
        under[target] |= inside
        reference[target] = full_area
        changed[target] = True
        pasted += 1
    if not pasted:
        return unchanged
    used = len(rows)
    out_masks = out_masks[:used]
    out_boxes = np.concatenate([boxes, np.zeros((used - count, 4), np.float32)])
    changed = changed[:used]
    out_boxes[changed] = tight_boxes(out_masks[changed])
    final = _areas(out_masks)
    keep = ~changed | ((final > 0) & (final >= config.min_visible * reference[:used]))
    rows = np.asarray(rows, np.int64)
    return out_image, out_boxes[keep], classes[rows][keep], difficult[rows][keep], out_masks[keep]
