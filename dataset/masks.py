"""Instance masks of records: small lazy mask sources and their decoding.

A :class:`~ssdkit.dataset.records.Record` may carry ``masks``: a *mask source* that says where the mask of
each of its objects comes from (same order as ``record.boxes``) without holding pixels. Two kinds exist:

- :class:`CocoSegmentations`: one COCO ``segmentation`` per object (polygons, compressed RLE, uncompressed
  RLE), or None for an object without one;
- :class:`InstancePng`: a VOC-style ``SegmentationObject`` PNG (palette or 8-bit grey) and the value of each
  object in it (``i + 1`` for the i-th ``<object>`` of the xml; 0 is background, 255 void).

:func:`decode_masks` turns a record's source into ``(K, H, W) uint8`` 0/1 masks at the image's own
resolution. An object whose source has no pixels (a None segmentation, a value absent from the PNG) gets its
box filled instead, so every kept box has a non-empty mask; the readers count such objects at load time
(``box_mask`` in :mod:`ssdkit.dataset.validation`).

Every mask source has ``len()`` (its object count), ``select(indices)`` (the sources of those objects, as
the readers use when they drop boxes) and ``decode(height, width) -> (K, H, W) uint8`` (empty where the
source has nothing). Decoding errors are :class:`MaskError` (a ValueError) naming the file / record.
"""
from dataclasses import dataclass

import numpy as np

MASK_MODES = ("auto", "require", "none")
"""Reader ``masks=`` settings: read masks where the source has them, require them, or ignore them."""


class MaskError(ValueError):
    """A mask source cannot be decoded (message names the file / record and the fix)."""


def compact_segmentation(seg, height=None, width=None):
    """Check one COCO ``segmentation`` and return it in the compact form records hold.

    Accepted: a list of polygons ``[[x0, y0, x1, y1, ...], ...]`` in pixel coordinates (polygons with fewer
    than 3 points are dropped: they have no area), a compressed RLE ``{"size": [H, W], "counts": str}`` or an
    uncompressed RLE ``{"size": [H, W], "counts": [int, ...]}`` (the COCO ``iscrowd`` form).

    Parameters
    ----------
    seg : the ``segmentation`` value of an annotation
    height, width : int or None, the image size (an RLE of another size is refused; None: not checked)

    Returns
    -------
    tuple of (2N,) float64 arrays (polygons), a dict ``{"size": (H, W), "counts": str | (n,) int64 array}``
    (RLE), or None when no polygon with an area is left. Raises MaskError saying what is wrong.
    """
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(v, int) and v > 0 for v in size)):
            raise MaskError("RLE segmentation with size %r, expected [height, width]" % (size,))
        if height and width and (size[0], size[1]) != (int(height), int(width)):
            raise MaskError("RLE segmentation of size %dx%d (HxW) but the image is %dx%d"
                            % (size[0], size[1], height, width))
        if isinstance(counts, (str, bytes)):
            return {"size": (size[0], size[1]), "counts": counts.decode("ascii") if isinstance(counts, bytes)
                    else counts}
        try:
            runs = np.asarray(counts, np.float64)
        except (TypeError, ValueError):
            runs = None
        if runs is None or runs.ndim != 1 or not (np.isfinite(runs).all() and (runs >= 0).all()
                                                  and (runs == np.round(runs)).all()):
            raise MaskError("RLE segmentation counts must be a string or a list of non-negative ints")
        if runs.sum() != size[0] * size[1]:
            raise MaskError("uncompressed RLE counts sum to %d, not height x width = %d"
                            % (runs.sum(), size[0] * size[1]))
        return {"size": (size[0], size[1]), "counts": runs.astype(np.int64)}
    if isinstance(seg, (list, tuple)) and len(seg) > 0:
        polygons = []
        for polygon in seg:
            try:
                coords = np.asarray(polygon, np.float64)
            except (TypeError, ValueError):
                coords = None
            if coords is None or coords.ndim != 1 or not np.isfinite(coords).all():
                raise MaskError("polygon %s is not a flat list of numbers [x0, y0, x1, y1, ...]"
                                % (repr(polygon)[:60],))
            if len(coords) >= 6 and len(coords) % 2 == 0:
                polygons.append(coords)
        return tuple(polygons) or None
    raise MaskError("segmentation %s is neither a list of polygons nor an RLE dict" % (repr(seg)[:60],))


def _rle_of(seg, height, width):
    """One compact segmentation -> one compressed RLE (pycocotools), the logic of ``COCO.annToRLE``."""
    import pycocotools.mask as mask_util

    if isinstance(seg, dict):
        if not isinstance(seg["counts"], str):
            return mask_util.frPyObjects({"size": list(seg["size"]), "counts": seg["counts"]}, *seg["size"])
        return {"size": list(seg["size"]), "counts": seg["counts"].encode("ascii")}
    return mask_util.merge(mask_util.frPyObjects(list(seg), height, width))


@dataclass(frozen=True)
class CocoSegmentations:
    """COCO segmentations of a record's objects.

    Attributes
    ----------
    items : tuple, one per object: a segmentation (COCO polygons or RLE, preferably as returned by
        :func:`compact_segmentation`, which the readers store), or None (no mask in the source)
    source : str, the annotation file and image id (named in errors)
    """

    items: tuple
    source: str = ""

    def __len__(self):
        return len(self.items)

    def select(self, indices):
        """The segmentations of objects ``indices`` (a sequence of ints), in that order."""
        return CocoSegmentations(tuple(self.items[int(i)] for i in indices), self.source)

    def decode(self, height, width):
        """``(K, height, width)`` uint8 0/1 masks; all-zero for objects without a segmentation."""
        import pycocotools.mask as mask_util

        out = np.zeros((len(self.items), height, width), np.uint8)
        for k, seg in enumerate(self.items):
            if seg is None:
                continue
            try:
                seg = compact_segmentation(seg, height, width)
            except MaskError as err:
                raise MaskError("%s object %d: %s; fix the annotation or load with masks='none'"
                                % (self.source, k, err)) from None
            if seg is not None:
                out[k] = mask_util.decode(_rle_of(seg, height, width))
        return out


def read_instance_png(path):
    """``(H, W)`` uint8 instance values of a VOC-style ``SegmentationObject`` PNG (palette indices or grey).

    Raises MaskError naming the file when it is missing, unreadable or not an index / 8-bit grey image.
    """
    from PIL import Image

    try:
        with Image.open(path) as png:
            mode = png.mode
            if mode not in ("P", "L"):
                raise MaskError("%s: instance PNG of mode %s; expected a palette (P) or 8-bit grey (L) PNG holding "
                                "the value i + 1 on the pixels of object i" % (path, mode))
            return np.array(png, dtype=np.uint8)
    except FileNotFoundError:
        raise MaskError("%s: instance mask PNG not found; write it, or load with masks='none'" % path) from None
    except OSError as err:
        raise MaskError("%s: instance mask PNG cannot be read (%s); re-create it or load with masks='none'"
                        % (path, err)) from None


@dataclass(frozen=True)
class InstancePng:
    """A VOC-style instance PNG and the value of each of a record's objects in it.

    Attributes
    ----------
    path : str, the ``SegmentationObject/<stem>.png`` file
    values : tuple of int, the pixel value of each object (``i + 1`` for the i-th xml ``<object>``)
    """

    path: str
    values: tuple

    def __len__(self):
        return len(self.values)

    def select(self, indices):
        """The values of objects ``indices`` (a sequence of ints), in that order."""
        return InstancePng(self.path, tuple(self.values[int(i)] for i in indices))

    def decode(self, height, width):
        """``(K, height, width)`` uint8 0/1 masks; all-zero for values absent from the PNG."""
        values = read_instance_png(self.path)
        if values.shape != (height, width):
            raise MaskError("%s: instance PNG is %dx%d but its image is %dx%d (WxH); the PNG must have the image's "
                            "size" % (self.path, values.shape[1], values.shape[0], width, height))
        wanted = np.asarray(self.values, np.int64).reshape(-1, 1, 1)
        return (values[None] == wanted).astype(np.uint8)


def box_masks(boxes, height, width):
    """``(K, 4)`` pixel corners -> ``(K, height, width)`` uint8 masks filling each box.

    Pixel ``(r, c)`` is inside when ``floor(xmin) <= c < ceil(xmax)`` and likewise for rows, so the tight box
    of the mask is the box rounded outwards (clipped to the image).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), height, width), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
        out[k, r0:r1, c0:c1] = 1
    return out


def decode_masks(record):
    """The instance masks of ``record``: ``(K, H, W)`` uint8 0/1 at ``(record.height, record.width)``.

    Objects whose source has no pixels get their box filled (:func:`box_masks`). Raises MaskError naming
    the record when it has no mask source (``record.masks is None``) or the source cannot be decoded.
    """
    if record.masks is None:
        raise MaskError("record %s has no instance masks; load a dataset with masks (COCO 'segmentation', VOC "
                        "SegmentationObject PNGs; readers' masks='auto' or 'require') or train without masks"
                        % record.path)
    masks = record.masks.decode(int(record.height), int(record.width))
    if masks.shape[0] != record.num_objects:
        raise MaskError("record %s: %d masks for %d objects" % (record.path, masks.shape[0], record.num_objects))
    empty = ~masks.any(axis=(1, 2))
    if empty.any():
        masks[empty] = box_masks(record.boxes[empty], int(record.height), int(record.width))
    return masks
