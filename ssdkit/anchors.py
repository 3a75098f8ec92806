"""Anchor generation (numpy in, numpy out): one grid generator for SSD and for FPN/RPN.

Every detector in ssdkit places anchors with :func:`grid_anchors`: for each feature-map
location ``(r, c)`` (row-major) and each anchor shape ``a``, a corner box of half size
``half_sizes[a]`` centred at ``((c + offset_x) * step_x, (r + offset_y) * step_y)``.

* :func:`ssd_anchors` gives normalised [0, 1] anchors with the semantics of MXNet's
  ``MultiBoxPrior`` (and of ssdkit's ``mx.nd.MultiBoxPrior`` operator, which it is the
  numpy reference of).
* :func:`rpn_anchors` gives pixel anchors for one FPN level from its stride, scales and
  aspect ratios (ratio = height / width, the Faster R-CNN convention).
"""
import numpy as np


def grid_anchors(height, width, half_sizes, steps, offsets=(0.5, 0.5), clip=False):
    """Place anchor shapes on every location of a feature map.

    Parameters
    ----------
    height, width : int, feature-map size
    half_sizes : (A, 2) ``(half_width, half_height)`` of each anchor shape
    steps : (step_y, step_x), distance between neighbouring centres
    offsets : (offset_y, offset_x), centre of cell ``(0, 0)`` in steps
    clip : bool, clip coordinates to [0, 1] (normalised anchors only)

    Returns
    -------
    (height * width * A, 4) float32 corners ``(xmin, ymin, xmax, ymax)``, location-major.
    """
    half = np.asarray(half_sizes, dtype=np.float32).reshape(-1, 2)
    step_y, step_x = np.float32(steps[0]), np.float32(steps[1])
    cy = (np.arange(height, dtype=np.float32) + np.float32(offsets[0])) * step_y
    cx = (np.arange(width, dtype=np.float32) + np.float32(offsets[1])) * step_x
    cy, cx = np.meshgrid(cy, cx, indexing="ij")                          # (H, W)
    centres = np.stack([cx, cy], axis=-1).reshape(-1, 1, 2)              # (H*W, 1, 2)
    boxes = np.concatenate([centres - half[None], centres + half[None]], axis=-1)  # (H*W, A, 4)
    boxes = boxes.reshape(-1, 4).astype(np.float32)
    if clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    return boxes


def ssd_anchor_half_sizes(sizes, ratios, height, width):
    """Half sizes of the ``len(sizes) + len(ratios) - 1`` SSD anchor shapes of one layer.

    The first ``len(sizes)`` shapes use ``ratios[0]`` with each size, the rest use ``sizes[0]``
    with ``ratios[1:]``; width is scaled by ``height / width`` so anchors are square in pixels on
    non-square maps (MultiBoxPrior semantics).

    Returns
    -------
    (A, 2) float32 ``(half_width, half_height)`` in normalised units.
    """
    sizes = [float(s) for s in sizes]
    ratios = [float(r) for r in ratios]
    if not sizes or not ratios:
        raise ValueError("ssd anchors need at least one size and one ratio, got sizes=%r ratios=%r"
                         % (sizes, ratios))
    if min(sizes) <= 0 or min(ratios) <= 0:
        raise ValueError("sizes and ratios must be positive, got sizes=%r ratios=%r" % (sizes, ratios))
    shapes = [(s, ratios[0]) for s in sizes] + [(sizes[0], r) for r in ratios[1:]]
    half = []
    for size, ratio in shapes:
        sr = np.sqrt(np.float32(ratio))
        half.append((np.float32(size) * height / width * sr / 2, np.float32(size) / sr / 2))
    return np.asarray(half, dtype=np.float32)


def ssd_anchors(height, width, sizes, ratios, steps=(-1.0, -1.0), offsets=(0.5, 0.5), clip=False):
    """Normalised SSD anchors of one feature map (numpy reference of ``MultiBoxPrior``).

    Parameters
    ----------
    height, width : int, feature-map size
    sizes : sequence of float, anchor sizes relative to the image
    ratios : sequence of float, width / height aspect ratios
    steps : (step_y, step_x); a value <= 0 means ``1 / height`` (``1 / width``)
    offsets : (offset_y, offset_x)
    clip : bool

    Returns
    -------
    (height * width * A, 4) float32 normalised corners.
    """
    step_y = steps[0] if steps[0] > 0 else np.float32(1.0) / np.float32(height)
    step_x = steps[1] if steps[1] > 0 else np.float32(1.0) / np.float32(width)
    half = ssd_anchor_half_sizes(sizes, ratios, height, width)
    return grid_anchors(height, width, half, (step_y, step_x), offsets, clip)


def rpn_anchors(height, width, stride, scales=(8.0,), ratios=(0.5, 1.0, 2.0), offset=0.5):
    """Pixel anchors of one FPN/RPN level.

    Parameters
    ----------
    height, width : int, feature-map size
    stride : int, pixels between neighbouring cells
    scales : anchor side in units of ``stride`` (side = stride * scale for ratio 1)
    ratios : height / width aspect ratios; area is kept at ``(stride * scale) ** 2``
    offset : centre of cell ``(0, 0)`` in strides (0.5: the cell centre)

    Returns
    -------
    (height * width * len(ratios) * len(scales), 4) float32 pixel corners, location-major,
    then ratio, then scale.
    """
    half = []
    for ratio in ratios:
        for scale in scales:
            side = float(stride) * float(scale)
            w = side / np.sqrt(ratio)
            half.append((w / 2, w * ratio / 2))
    return grid_anchors(height, width, half, (stride, stride), (offset, offset), clip=False)


def legacy_cell_anchors(stride, scales=(8.0,), ratios=(0.5, 1.0, 2.0)):
    """Anchors of cell ``(0, 0)`` in the py-faster-rcnn convention (Detectron, GluonCV's ``RPNAnchorGenerator``).

    The reference window is the ``stride x stride`` pixel square ``(0, 0, stride - 1, stride - 1)``; per
    ratio its width becomes ``round(sqrt(stride^2 / ratio))`` and its height ``round(width * ratio)``
    (numpy rounding, halves to even), both multiplied by ``scale``; corners are
    ``centre -+ (size - 1) / 2`` around the centre ``(stride - 1) / 2`` (the "+1" convention: a box spans
    ``x1 - x0 + 1`` pixels). Cell ``(y, x)`` adds ``x * stride`` and ``y * stride``.

    Parameters
    ----------
    stride : int, pixels per cell
    scales : anchor sides in strides (GluonCV's ``base_size * scale / stride``)
    ratios : height / width aspect ratios

    Returns
    -------
    (len(ratios) * len(scales), 4) float64 corners, ratio-major then scale (the order of
    :func:`rpn_anchors`).
    """
    stride = float(stride)
    centre = (stride - 1.0) / 2.0
    rows = []
    for ratio in ratios:
        width = np.round(np.sqrt(stride * stride / float(ratio)))
        height = np.round(width * float(ratio))
        for scale in scales:
            w, h = width * float(scale), height * float(scale)
            rows.append((centre - 0.5 * (w - 1), centre - 0.5 * (h - 1), centre + 0.5 * (w - 1), centre + 0.5 * (h - 1)))
    return np.array(rows, dtype=np.float64)
