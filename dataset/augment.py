"""SSD training augmentation in numpy / OpenCV, driven by an explicit ``np.random.Generator``.

The pipeline follows the SSD paper (Liu et al. 2016) and its Caffe data layer:

1. zoom out ("expand"): place the image on a canvas up to ``max_expand_ratio`` times larger, filled
   with the mean colour;
2. IoU-constrained random crop of the canvas (:func:`sample_crop`), keeping the boxes whose centre
   lies inside the crop, clipped to it;
3. resize to the network input size, horizontal mirror;
4. photometric distortion (brightness, contrast, saturation, hue in random order), composed into
   one affine colour map.

Steps 1-3 are one affine map from source pixels to output pixels, so they run as a single
``cv2.warpAffine`` whose cost depends only on the output size (no expanded canvas is ever built).
The photometric step is pointwise and runs on the small output image; pixels that lie on the mean
fill are restored afterwards, so the fill stays the mean colour as if the image had been distorted
before expansion.

Instance masks, when given, go through the same zoom-out, crop, resize and mirror (one ``cv2.warpAffine``
of the masks of the kept boxes, bilinear thresholded at 0.5, :func:`warp_masks`) and draw nothing from the
generator. A box cut by the crop is clipped to it, so the tight box of its mask may then be smaller than the
box (the part of the object outside the crop is gone); otherwise the two agree within a pixel, except that
parts thinner than an output pixel can vanish when the image is shrunk.

Boxes are pixel corners ``(xmin, ymin, xmax, ymax)`` in continuous coordinates (pixel ``i`` covers
``[i, i + 1)``, see :mod:`ssdkit.dataset.records`). A fixed generator state reproduces the output
exactly.
"""
from dataclasses import dataclass, field
from typing import Optional, Tuple

import cv2
import numpy as np

from ssdkit.boxes import box_iou
from ssdkit.normalization import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Normalization:
    """Pixel normalisation ``(rgb - mean) / std`` on the 0-255 scale, RGB channel order."""

    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD

    @property
    def fill(self):
        """The mean colour as a uint8 RGB triple (the zoom-out fill)."""
        return tuple(int(round(min(max(m, 0.0), 255.0))) for m in self.mean)


@dataclass(frozen=True)
class CropSampler:
    """One SSD batch sampler: crops of relative ``scale`` and ``aspect`` (w / h) whose IoU with at
    least one ground-truth box is in ``[min_iou, max_iou]`` (None: unconstrained)."""

    min_iou: Optional[float] = None
    max_iou: Optional[float] = None
    min_scale: float = 0.3
    max_scale: float = 1.0
    min_aspect: float = 0.5
    max_aspect: float = 2.0
    max_trials: int = 50


SSD_CROP_SAMPLERS = tuple(CropSampler(min_iou=v) for v in (None, 0.1, 0.3, 0.5, 0.7, 0.9))
"""The six samplers of the SSD paper: unconstrained, then min IoU 0.1, 0.3, 0.5, 0.7, 0.9."""


@dataclass(frozen=True)
class Augmentation:
    """SSD augmentation settings, as the pipeline reads them (the ``[augment]`` config section,
    :class:`ssdkit.config.schema.AugmentConfig`, becomes one with :func:`ssdkit.api.data.augmentation_of`).
    Every probability may be 0 to switch its step off.

    Attributes
    ----------
    distort_prob : probability of each photometric step (brightness, contrast, saturation, hue)
    brightness_delta : additive brightness shift drawn from ``[-d, d]`` (0-255 scale)
    contrast_range, saturation_range : multiplicative factor ranges
    hue_delta : hue shift drawn from ``[-d, d]`` degrees
    expand_prob : probability of zooming out
    max_expand_ratio : largest canvas side / image side
    crop_samplers : tuple of :class:`CropSampler`; the whole image is always one more candidate
    mirror_prob : probability of a horizontal flip
    interpolation : OpenCV interpolation flag used for the resize
    """

    distort_prob: float = 0.5
    brightness_delta: float = 32.0
    contrast_range: Tuple[float, float] = (0.5, 1.5)
    saturation_range: Tuple[float, float] = (0.5, 1.5)
    hue_delta: float = 18.0
    expand_prob: float = 0.5
    max_expand_ratio: float = 4.0
    crop_samplers: Tuple[CropSampler, ...] = field(default=SSD_CROP_SAMPLERS)
    mirror_prob: float = 0.5
    interpolation: int = cv2.INTER_LINEAR


NO_AUGMENT = Augmentation(distort_prob=0.0, expand_prob=0.0, crop_samplers=(), mirror_prob=0.0)
"""Resize only: the validation transform."""


def sample_expand(width, height, rng, *, prob, max_ratio):
    """Draw a zoom-out canvas.

    Returns
    -------
    (4,) float64 ``(ox, oy, canvas_w, canvas_h)``: the image's offset on the canvas and the canvas
    size, in source pixels. No expansion gives ``(0, 0, width, height)``.
    """
    if max_ratio <= 1.0 or rng.random() >= prob:
        return np.array([0.0, 0.0, width, height])
    ratio = rng.uniform(1.0, max_ratio)
    canvas_w, canvas_h = width * ratio, height * ratio
    ox = rng.uniform(0.0, canvas_w - width)
    oy = rng.uniform(0.0, canvas_h - height)
    return np.array([ox, oy, canvas_w, canvas_h])


def _centres_inside(boxes, rects):
    """``(K, 4)`` boxes, ``(T, 4)`` rects -> ``(T, K)`` bool: box centre strictly inside the rect."""
    cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
    cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
    rects = np.asarray(rects).reshape(-1, 4)
    return ((cx > rects[:, 0:1]) & (cx < rects[:, 2:3]) & (cy > rects[:, 1:2]) & (cy < rects[:, 3:4]))


def sample_crop(boxes, width, height, samplers, rng):
    """SSD crop sampling: each sampler tries up to ``max_trials`` crops and contributes its first
    valid one; the result is drawn uniformly from those and the whole image.

    A crop is valid when it satisfies the sampler's IoU constraint with at least one box and keeps
    at least one box centre inside (images without boxes only accept unconstrained samplers). The
    trials of one sampler are drawn together and the first valid one is taken, which is the same
    distribution as trying them one after another.

    Parameters
    ----------
    boxes : (K, 4) pixel corners on the canvas being cropped
    width, height : canvas size in pixels
    samplers : sequence of :class:`CropSampler`
    rng : np.random.Generator

    Returns
    -------
    rect : (4,) float64 crop corners ``(x0, y0, x1, y1)`` in canvas pixels
    index : int, the sampler that produced the crop, -1 for the whole image
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    candidates = [(np.array([0.0, 0.0, width, height]), -1)]
    active = [i for i, s in enumerate(samplers)
              if len(boxes) or (samplers[i].min_iou is None and samplers[i].max_iou is None)]
    if not active:
        return candidates[0]
    # all trials of all active samplers in one vectorised draw; owner[t] is the sampler of trial t
    owner = np.concatenate([np.full(samplers[i].max_trials, i) for i in active])
    n = len(owner)
    table = np.array([[s.min_scale, s.max_scale, s.min_aspect, s.max_aspect,
                       -np.inf if s.min_iou is None else s.min_iou,
                       np.inf if s.max_iou is None else s.max_iou,
                       s.min_iou is not None or s.max_iou is not None] for s in samplers])[owner]
    scale = table[:, 0] + rng.random(n) * (table[:, 1] - table[:, 0])
    lo = np.maximum(table[:, 2], scale * scale)
    hi = np.minimum(table[:, 3], 1.0 / (scale * scale))
    aspect = lo + rng.random(n) * np.maximum(hi - lo, 0.0)
    crop_w = width * scale * np.sqrt(aspect)
    crop_h = height * scale / np.sqrt(aspect)
    x0 = rng.random(n) * (width - crop_w)
    y0 = rng.random(n) * (height - crop_h)
    rects = np.stack([x0, y0, x0 + crop_w, y0 + crop_h], axis=1)
    if len(boxes):
        valid = _centres_inside(boxes, rects).any(axis=1)
        iou = box_iou(rects, boxes)
        satisfied = ((iou >= table[:, 4:5]) & (iou <= table[:, 5:6])).any(axis=1)
        valid &= satisfied | (table[:, 6] == 0)
    else:
        valid = np.ones(n, bool)
    for i in active:
        hits = np.flatnonzero(valid & (owner == i))
        if len(hits):
            candidates.append((rects[hits[0]], i))
    return candidates[int(rng.integers(len(candidates)))]


def crop_boxes(boxes, rect):
    """Keep the boxes whose centre is strictly inside ``rect``, clip them to it and shift them to
    the crop's origin.

    Parameters
    ----------
    boxes : (K, 4) pixel corners
    rect : (4,) crop corners ``(x0, y0, x1, y1)`` in the same pixels

    Returns
    -------
    boxes : (K', 4) float64 corners relative to ``(x0, y0)``
    keep : (K',) int64 indices of the kept input boxes
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    keep = np.flatnonzero(_centres_inside(boxes, rect)[0])
    out = boxes[keep].copy()
    out[:, 0::2] = np.clip(out[:, 0::2], rect[0], rect[2]) - rect[0]
    out[:, 1::2] = np.clip(out[:, 1::2], rect[1], rect[3]) - rect[1]
    return out, keep


def warp_crop(image, rect, out_size, *, mirror=False, fill=(0, 0, 0), interpolation=cv2.INTER_LINEAR):
    """Crop ``rect`` (source pixels, may extend past the image) and resize it to ``out_size``.

    One ``cv2.warpAffine``: areas outside the image get ``fill``. Continuous coordinates map as
    ``u_out = (u_src - x0) * out_w / (x1 - x0)`` (then ``out_w - u_out`` when mirrored), the same
    pixel-centre convention as ``cv2.resize``.

    Parameters
    ----------
    image : (H, W, 3) uint8
    rect : (4,) ``(x0, y0, x1, y1)`` source pixels
    out_size : (out_w, out_h)

    Returns
    -------
    (out_h, out_w, 3) uint8
    """
    out_w, out_h = out_size
    return cv2.warpAffine(image, _crop_matrix(rect, out_size, mirror), (out_w, out_h), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in fill))


def _crop_matrix(rect, out_size, mirror):
    """(2, 3) float64 affine map of :func:`warp_crop` from source to output pixel indices."""
    out_w, out_h = out_size
    sx = out_w / (rect[2] - rect[0])
    sy = out_h / (rect[3] - rect[1])
    tx = sx * (0.5 - rect[0]) - 0.5
    ty = sy * (0.5 - rect[1]) - 0.5
    if mirror:
        return np.array([[-sx, 0.0, out_w - 1 - tx], [0.0, sy, ty]])
    return np.array([[sx, 0.0, tx], [0.0, sy, ty]])


def mask_extent(mask):
    """``(r0, r1, c0, c1)``: the rows ``[r0, r1)`` and columns ``[c0, c1)`` holding the pixels of a ``(H, W)``
    mask, or None when it is empty."""
    rows = np.flatnonzero(mask.any(1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def warp_masks(masks, rect, out_size, *, mirror=False):
    """Instance masks through the geometry of :func:`warp_crop` (crop ``rect``, resize, mirror).

    Bilinear interpolation of the 0/1 masks thresholded at 0.5, with the same pixel-centre map as the
    image; areas outside the source image are 0. Each mask is warped over the output pixels its
    interpolation footprint reaches only (the cost follows the objects' size, not the image's); the
    result is that of warping the whole mask, up to OpenCV's fixed-point rounding of the sample positions
    (a pixel whose interpolated value is within ~1/32 of 0.5 may differ).

    Parameters
    ----------
    masks : (K, H, W) uint8 0/1 (or bool)
    rect : (4,) ``(x0, y0, x1, y1)`` source pixels
    out_size : (out_w, out_h)

    Returns
    -------
    (K, out_h, out_w) uint8 0/1
    """
    out_w, out_h = out_size
    masks = np.asarray(masks)
    out = np.zeros((len(masks), out_h, out_w), np.uint8)
    matrix = _crop_matrix(rect, out_size, mirror)  # output index = matrix @ (source index, 1)
    for k, mask in enumerate(masks):
        extent = mask_extent(mask)
        if extent is None:
            continue
        r0, r1, c0, c1 = extent
        # bilinear sampling is non-zero at source positions in (c0 - 1, c1) x (r0 - 1, r1)
        us = matrix[0, 0] * np.array([c0 - 1.0, c1]) + matrix[0, 2]
        vs = matrix[1, 1] * np.array([r0 - 1.0, r1]) + matrix[1, 2]
        u0, u1 = max(int(np.floor(us.min())), 0), min(int(np.ceil(us.max())) + 1, out_w)
        v0, v1 = max(int(np.floor(vs.min())), 0), min(int(np.ceil(vs.max())) + 1, out_h)
        if u0 >= u1 or v0 >= v1:
            continue
        sub = matrix.copy()  # source index relative to (c0, r0) -> output index relative to (u0, v0)
        sub[0, 2] += matrix[0, 0] * c0 - u0
        sub[1, 2] += matrix[1, 1] * r0 - v0
        src = np.ascontiguousarray(mask[r0:r1, c0:c1], dtype=np.uint8) * np.uint8(255)
        warped = cv2.warpAffine(src, sub, (u1 - u0, v1 - v0), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out[k, v0:v1, u0:u1] = warped >= 128
    return out


_LUMA = np.array([0.299, 0.587, 0.114])
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _saturation_matrix(factor):
    """Blend with the luma grey: ``factor`` 0 gives grey, 1 the identity."""
    return factor * np.eye(3) + (1.0 - factor) * np.outer(np.ones(3), _LUMA)


def _hue_matrix(degrees):
    """Rotate the chroma plane (I, Q of YIQ) by ``degrees``; luma and greys are unchanged."""
    t = np.deg2rad(degrees)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])
    return _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ


def photometric_params(rng, config):
    """Draw the SSD photometric distortion as one affine colour map ``rgb' = A @ rgb + b``.

    Each step (brightness ``+d``, contrast ``*c``, saturation: blend with the luma grey, hue:
    rotation of the YIQ chroma plane) fires with probability ``config.distort_prob``; brightness
    comes first, then contrast, saturation, hue or saturation, hue, contrast (50/50). All steps
    are affine, so they compose exactly into one map (intermediate values are not clipped).

    Returns
    -------
    (3, 4) float64 ``[A | b]`` on the 0-255 RGB scale, or None when no step fired.
    """
    p = config.distort_prob
    if p <= 0:
        return None
    do_brightness, do_contrast, do_saturation, do_hue = rng.random(4) < p
    contrast_first = rng.random() < 0.5
    brightness = rng.uniform(-config.brightness_delta, config.brightness_delta)
    contrast = rng.uniform(*config.contrast_range)
    saturation = rng.uniform(*config.saturation_range)
    hue = rng.uniform(-config.hue_delta, config.hue_delta)
    if not (do_brightness or do_contrast or do_saturation or do_hue):
        return None
    matrix, offset = np.eye(3), np.zeros(3)
    if do_brightness:
        offset += brightness
    if do_contrast and contrast_first:
        matrix, offset = contrast * matrix, contrast * offset
    if do_saturation:
        m = _saturation_matrix(saturation)
        matrix, offset = m @ matrix, m @ offset
    if do_hue:
        m = _hue_matrix(hue)
        matrix, offset = m @ matrix, m @ offset
    if do_contrast and not contrast_first:
        matrix, offset = contrast * matrix, contrast * offset
    return np.concatenate([matrix, offset[:, None]], axis=1)


def photometric_distort(image, rng, config):
    """Apply :func:`photometric_params` to ``(H, W, 3)`` uint8 RGB (one ``cv2.transform`` pass,
    rounded and saturated to uint8). Returns the input array itself when no step fired."""
    params = photometric_params(rng, config)
    if params is None:
        return image
    return cv2.transform(image, params)


def _restore_fill(image, rect, src_w, src_h, mirror, fill):
    """Reset output pixels whose centre maps outside the source image to ``fill`` (in place)."""
    out_h, out_w = image.shape[:2]
    sx = out_w / (rect[2] - rect[0])
    sy = out_h / (rect[3] - rect[1])
    left, right = (0.0 - rect[0]) * sx, (src_w - rect[0]) * sx
    if mirror:
        left, right = out_w - right, out_w - left
    top, bottom = (0.0 - rect[1]) * sy, (src_h - rect[1]) * sy
    # pixel i is inside when its centre i + 0.5 lies in [left, right)
    c0 = int(np.clip(np.ceil(left - 0.5), 0, out_w))
    c1 = int(np.clip(np.ceil(right - 0.5), 0, out_w))
    r0 = int(np.clip(np.ceil(top - 0.5), 0, out_h))
    r1 = int(np.clip(np.ceil(bottom - 0.5), 0, out_h))
    fill = np.asarray(fill, dtype=image.dtype)
    image[:r0] = fill
    image[r1:] = fill
    image[:, :c0] = fill
    image[:, c1:] = fill


def augment_detection(image, boxes, rng, config, out_size, *, fill=(124, 116, 104), masks=None):
    """The SSD training transform for one image (and its instance masks).

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB
    boxes : (K, 4) pixel corners in ``image``
    rng : np.random.Generator, the only source of randomness
    config : :class:`Augmentation` (``NO_AUGMENT`` for a plain resize)
    out_size : (out_w, out_h) network input size
    fill : uint8 RGB zoom-out fill (the normalisation mean, :attr:`Normalization.fill`)
    masks : None or (K, H, W) uint8 0/1 instance masks of the boxes (the image's resolution); they
        follow the same zoom-out, crop, resize and mirror (:func:`warp_masks`) and draw nothing from
        ``rng``, so the image and boxes are the same with or without them

    Returns
    -------
    image : (out_h, out_w, 3) uint8 RGB
    boxes : (K', 4) float32 corners normalised to [0, 1] of the output
    keep : (K',) int64 indices of the input boxes that survived the crop (in input order)
    masks : (K', out_h, out_w) uint8 0/1, the masks of the kept boxes -- only when ``masks`` is given
        (then the result is a 4-tuple)
    """
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if masks is not None and np.shape(masks) != (len(boxes), height, width):
        raise ValueError("masks of shape %s for %d boxes of a %dx%d (HxW) image; expected (K, H, W) = %s"
                         % (np.shape(masks), len(boxes), height, width, (len(boxes), height, width)))
    ox, oy, canvas_w, canvas_h = sample_expand(width, height, rng, prob=config.expand_prob,
                                               max_ratio=config.max_expand_ratio)
    canvas_boxes = boxes + np.array([ox, oy, ox, oy])
    if config.crop_samplers:
        rect, _ = sample_crop(canvas_boxes, canvas_w, canvas_h, config.crop_samplers, rng)
    else:
        rect = np.array([0.0, 0.0, canvas_w, canvas_h])
    out_boxes, keep = crop_boxes(canvas_boxes, rect)
    mirror = config.mirror_prob > 0 and rng.random() < config.mirror_prob
    src_rect = rect - np.array([ox, oy, ox, oy])  # the crop in source-image pixels
    out = warp_crop(image, src_rect, out_size, mirror=mirror, fill=fill,
                    interpolation=config.interpolation)
    distorted = photometric_distort(out, rng, config)
    if distorted is not out:
        _restore_fill(distorted, src_rect, width, height, mirror, fill)
    crop_w, crop_h = rect[2] - rect[0], rect[3] - rect[1]
    out_boxes = out_boxes / np.array([crop_w, crop_h, crop_w, crop_h])
    if mirror:
        out_boxes[:, [0, 2]] = 1.0 - out_boxes[:, [2, 0]]
    if masks is None:
        return distorted, out_boxes.astype(np.float32), keep
    out_masks = warp_masks(np.asarray(masks)[keep], src_rect, out_size, mirror=mirror)
    return distorted, out_boxes.astype(np.float32), keep, out_masks


def to_chw_normalized(image, normalization, out=None):
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 ``(rgb - mean) / std``.

    ``out`` : optional (3, H, W) float32 array written in place (e.g. a slot of a batch).
    """
    if out is None:
        out = np.empty((3,) + image.shape[:2], np.float32)
    mean = np.asarray(normalization.mean, np.float32)
    inv_std = 1.0 / np.asarray(normalization.std, np.float32)
    for c in range(3):
        np.subtract(image[..., c], mean[c], out=out[c], dtype=np.float32)
        out[c] *= inv_std[c]
    return out
