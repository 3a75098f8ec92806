"""Two-stage (FPN / Faster R-CNN) input transform: aspect-preserving resize, flip, normalise, pad.

An image of ``W x H`` pixels is resized by one factor ``scale = min(short / min(W, H), long / max(W, H))``
to ``w x h = round(W * scale) x round(H * scale)`` (the short side becomes ``short`` unless the long
side would exceed ``long``), optionally mirrored and photometrically distorted, normalised, and placed
at the top-left of a zero batch slot of the fixed size :func:`batch_shape` (zero is the mean colour
after normalisation). The geometry and the box handling (clip to the image, drop boxes whose centre
is outside, mirror) are those of :func:`ssdkit.dataset.augment.augment_detection` with expansion and
cropping off, so a box follows its object exactly: pixel corners map as ``x' = x * w / W`` and
``y' = y * h / H`` (then ``x' -> w - x'`` when mirrored).

Instance masks ``(K, H, W)`` uint8 follow the same resize and mirror (bilinear, thresholded at 0.5; see
:func:`ssdkit.dataset.augment.warp_masks`) and are kept for the kept boxes. With ``mask_stride = s`` a sample's
masks are reduced to ``ceil(h / s) x ceil(w / s)``: mask pixel ``(i, j)`` covers image pixels
``[s*i, s*i + s) x [s*j, s*j + s)`` and is 1 when at least half of them are (padded image coordinates
divided by ``s``, the ``gt_masks`` convention of the Mask R-CNN graph). An optional mask-based copy-paste
(:mod:`ssdkit.dataset.copy_paste`) runs on the decoded image before the resize.

Per image the graph also gets ``im_info = [h, w, scale]``: the valid (unpadded) height and width in the
batch tensor and the resize factor. Labels are rows ``[cls, x0, y0, x1, y1, difficult]`` in pixels of
the resized image, padded with -1 rows (the FPN label convention of ``notes/fpn_spec.md``).
"""
import dataclasses
import importlib
from typing import Optional

import numpy as np

from ssdkit.dataset.augment import NO_AUGMENT, augment_detection, mask_extent, to_chw_normalized
from ssdkit.dataset.records import LABEL_WIDTH
from ssdkit.symbol.fpn_config import SIZE_DIVISOR, batch_shape  # noqa: F401  (the FPN graph's input size)


def resize_scale(width, height, short, long):
    """The aspect-preserving resize of an image.

    Parameters
    ----------
    width, height : int, source image size in pixels
    short : int, target length of the shorter side
    long : int, upper bound on the longer side (``long >= short``)

    Returns
    -------
    scale : float, ``min(short / min(W, H), long / max(W, H))``
    out_w, out_h : int, ``round(W * scale)``, ``round(H * scale)`` (at least 1), ``max <= long``
    """
    if width < 1 or height < 1:
        raise ValueError("image size must be positive, got %dx%d" % (width, height))
    if not 0 < short <= long:
        raise ValueError("need 0 < short <= long, got short=%r long=%r" % (short, long))
    scale = min(float(short) / min(width, height), float(long) / max(width, height))
    out_w = max(1, min(int(round(width * scale)), int(long)))
    out_h = max(1, min(int(round(height * scale)), int(long)))
    return scale, out_w, out_h


def two_stage_augment(config):
    """Check that an :class:`~ssdkit.dataset.augment.Augmentation` suits the two-stage transform.

    The two-stage transform keeps the aspect ratio and the whole image: only mirroring and the
    photometric distortion apply. Zoom-out and crops raise ValueError instead of being ignored.

    Returns
    -------
    Augmentation, ``NO_AUGMENT`` for None.
    """
    if config is None:
        return NO_AUGMENT
    if config.expand_prob > 0 or config.crop_samplers:
        raise ValueError("the two-stage (FPN) transform resizes whole images keeping their aspect; it has "
                         "no zoom-out or crops: set expand_prob = 0 and crop samplers to () "
                         "(augment.expand_prob = 0.0, augment.crop_min_ious = [] in a config), got "
                         "expand_prob=%r and %d crop samplers" % (config.expand_prob, len(config.crop_samplers)))
    return config


def transform_two_stage(image, boxes, rng, *, short, long, augment=NO_AUGMENT, masks=None):
    """Resize (keeping aspect), mirror and distort one image, its boxes (and instance masks).

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB
    boxes : (K, 4) pixel corners ``(x0, y0, x1, y1)`` in ``image``
    rng : np.random.Generator, the only source of randomness
    short, long : see :func:`resize_scale`
    augment : Augmentation without zoom-out and crops (see :func:`two_stage_augment`);
        ``NO_AUGMENT`` is the validation / inference transform
    masks : None or (K, H, W) uint8 0/1 instance masks of ``boxes`` (draw nothing from ``rng``)

    Returns
    -------
    image : (h, w, 3) uint8 RGB, the resized image
    boxes : (K', 4) float32 pixel corners in the resized image, clipped to it
    keep : (K',) int64 indices of the input boxes kept (centre inside the image), in input order
    scale : float, the resize factor (``im_info[2]``)
    masks : (K', h, w) uint8 0/1 masks of the kept boxes -- only when ``masks`` is given (a 5-tuple then)
    """
    augment = two_stage_augment(augment)
    height, width = image.shape[:2]
    scale, out_w, out_h = resize_scale(width, height, short, long)
    result = augment_detection(image, boxes, rng, augment, (out_w, out_h), masks=masks)
    out, unit_boxes, keep = result[:3]
    pixel_boxes = (unit_boxes * np.array([out_w, out_h, out_w, out_h], np.float32)).astype(np.float32)
    if masks is None:
        return out, pixel_boxes, keep, scale
    return out, pixel_boxes, keep, scale, result[3]


def mask_grid(height, width, stride):
    """``(ceil(height / stride), ceil(width / stride))``: the mask size of an image at ``stride``."""
    stride = int(stride)
    if stride < 1:
        raise ValueError("mask_stride must be a positive integer, got %r" % (stride,))
    return -(-int(height) // stride), -(-int(width) // stride)


def reduce_masks(masks, stride):
    """``(K, h, w)`` 0/1 masks -> ``(K, ceil(h/s), ceil(w/s))`` uint8: 1 where at least half of the
    ``s x s`` block of image pixels is 1 (the blocks past the image count as 0)."""
    masks = np.asarray(masks, np.uint8)
    stride = int(stride)
    if stride == 1:
        return masks
    k, h, w = masks.shape
    gh, gw = mask_grid(h, w, stride)
    out = np.zeros((k, gh, gw), np.uint8)
    for i, mask in enumerate(masks):  # only the blocks over each mask's extent
        extent = mask_extent(mask)
        if extent is None:
            continue
        b0, b1 = extent[0] // stride, -(-extent[1] // stride)
        a0, a1 = extent[2] // stride, -(-extent[3] // stride)
        region = np.zeros(((b1 - b0) * stride, (a1 - a0) * stride), np.uint16)
        part = mask[b0 * stride:b1 * stride, a0 * stride:a1 * stride]
        region[:part.shape[0], :part.shape[1]] = part
        counts = region.reshape(b1 - b0, stride, a1 - a0, stride).sum(axis=(1, 3))
        out[i, b0:b1, a0:a1] = 2 * counts >= stride * stride
    return out


def _copy_paste_module():
    """``ssdkit.dataset.copy_paste`` (imported on first use), or a clear error when it is not there."""
    try:
        return importlib.import_module("ssdkit.dataset.copy_paste")
    except ModuleNotFoundError as err:
        if err.name not in ("ssdkit.dataset.copy_paste",):
            raise
        raise ImportError("copy-paste augmentation was requested but ssdkit.dataset.copy_paste is not "
                           "installed in this version of ssdkit; drop the copy-paste setting") from None


@dataclasses.dataclass(frozen=True)
class TwoStageSample:
    """One transformed image, ready to be placed in a batch.

    Attributes
    ----------
    data : (3, h, w) float32 normalised image (unpadded)
    im_info : (3,) float32 ``[h, w, scale]``
    label : (K, 6) float32 rows ``[cls, x0, y0, x1, y1, difficult]`` in pixels of the resized image
    masks : None or (K, ceil(h / s), ceil(w / s)) uint8 0/1 instance masks of the label rows at the
        mask stride ``s`` (see :func:`reduce_masks`)
    """

    data: np.ndarray
    im_info: np.ndarray
    label: np.ndarray
    masks: Optional[np.ndarray] = None


def make_sample(image, boxes, classes, difficult, rng, *, short, long, normalization, augment=NO_AUGMENT,
                masks=None, mask_stride=1, copy_paste=None):
    """:func:`transform_two_stage` plus normalisation, ``im_info`` and the label rows (and masks).

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB
    boxes : (K, 4) pixel corners; classes : (K,) int 0-based; difficult : (K,) bool
    rng, short, long, augment : see :func:`transform_two_stage`
    normalization : :class:`ssdkit.dataset.augment.Normalization`
    masks : None or (K, H, W) uint8 0/1 instance masks of ``boxes``
    mask_stride : int, the sample's masks are reduced by it (:func:`reduce_masks`)
    copy_paste : None or a :class:`ssdkit.dataset.copy_paste.CopyPaste` config (needs ``masks``): the
        mask-based copy-paste runs on the decoded image first, drawing from ``rng`` before the transform

    Returns
    -------
    TwoStageSample, ``masks`` set when ``masks`` is given.
    """
    if copy_paste is not None:
        if masks is None:
            raise ValueError("copy-paste augmentation needs the instance masks of the image (masks=None given)")
        module = _copy_paste_module()
        image, boxes, classes, difficult, masks = module.copy_paste(image, boxes, classes, difficult, masks, rng,
                                                                    copy_paste)
    result = transform_two_stage(image, boxes, rng, short=short, long=long, augment=augment, masks=masks)
    out, out_boxes, keep, scale = result[:4]
    label = np.empty((len(keep), LABEL_WIDTH), np.float32)
    label[:, 0] = np.asarray(classes)[keep]
    label[:, 1:5] = out_boxes
    label[:, 5] = np.asarray(difficult)[keep]
    h, w = out.shape[:2]
    out_masks = None if masks is None else reduce_masks(result[4], mask_stride)
    return TwoStageSample(to_chw_normalized(out, normalization),
                          np.array([h, w, scale], np.float32), label, out_masks)


def pad_batch(samples, data_shape, max_objects):
    """Stack samples into fixed-shape batch arrays.

    Parameters
    ----------
    samples : list of TwoStageSample (at most the batch size; the caller repeats samples for padding)
    data_shape : (3, H, W) padded image shape; every sample's ``(h, w)`` must fit
    max_objects : int, M

    Returns
    -------
    data : (B, 3, H, W) float32, images at the top-left, zeros (the mean colour) elsewhere
    im_info : (B, 3) float32 ``[h, w, scale]``
    label : (B, M, 6) float32, rows past each image's objects filled with -1
    """
    _, height, width = data_shape
    data = np.zeros((len(samples),) + tuple(data_shape), np.float32)
    im_info = np.zeros((len(samples), 3), np.float32)
    label = np.full((len(samples), max_objects, LABEL_WIDTH), -1.0, np.float32)
    for i, sample in enumerate(samples):
        _, h, w = sample.data.shape
        if h > height or w > width:
            raise ValueError("resized image %d is %dx%d but the batch holds %dx%d; use batch_shape(short, long)"
                             % (i, w, h, width, height))
        if len(sample.label) > max_objects:
            raise ValueError("image %d has %d objects but the batch holds %d; raise max_objects"
                             % (i, len(sample.label), max_objects))
        data[i, :, :h, :w] = sample.data
        im_info[i] = sample.im_info
        label[i, :len(sample.label)] = sample.label
    return data, im_info, label


def pad_masks(samples, data_shape, max_objects, mask_stride=1):
    """Stack the samples' masks into the ``gt_masks`` batch array.

    Parameters
    ----------
    samples : list of TwoStageSample with ``masks`` (made with the same ``mask_stride``)
    data_shape : (3, H, W) padded image shape
    max_objects : int, M
    mask_stride : int, s

    Returns
    -------
    (B, M, ceil(H / s), ceil(W / s)) float32 0/1, each image's masks at the top-left (padded image
    coordinates divided by ``s``), rows past its objects all 0.
    """
    gh, gw = mask_grid(data_shape[1], data_shape[2], mask_stride)
    out = np.zeros((len(samples), max_objects, gh, gw), np.float32)
    for i, sample in enumerate(samples):
        if sample.masks is None:
            raise ValueError("sample %d has no masks; make samples with masks= to batch gt_masks" % i)
        k, h, w = sample.masks.shape
        if k != len(sample.label) or k > max_objects or h > gh or w > gw:
            raise ValueError("sample %d: masks %s for %d label rows do not fit gt_masks (M=%d, %dx%d)"
                             % (i, sample.masks.shape, len(sample.label), max_objects, gh, gw))
        out[i, :k, :h, :w] = sample.masks
    return out


def normalized_labels(label, im_info):
    """Pixel labels of the resized images -> corners normalised to [0, 1] of each image.

    This is the label format of the SSD iterators, which the VOC / COCO metrics read; FPN detections
    (``RCNNDetection`` with ``normalize=1``) are normalised the same way.

    Parameters
    ----------
    label : (B, M, W) rows ``[cls, x0, y0, x1, y1, ...]`` in pixels, padding rows -1
    im_info : (B, 3) ``[h, w, scale]``

    Returns
    -------
    (B, M, W) float32, a new array; padding rows stay -1.
    """
    label = np.array(label, dtype=np.float32, copy=True)
    im_info = np.asarray(im_info, dtype=np.float32)
    size = np.stack([im_info[:, 1], im_info[:, 0], im_info[:, 1], im_info[:, 0]], axis=1)  # (B, 4) w h w h
    valid = label[:, :, 0] >= 0
    label[:, :, 1:5] = np.where(valid[:, :, None], label[:, :, 1:5] / size[:, None, :], label[:, :, 1:5])
    return label
