"""Pascal VOC reader: ``VOCdevkit/VOC<year>/{Annotations,JPEGImages,ImageSets/Main}``.

VOC boxes are 1-based inclusive pixel indices; records hold ``(xmin - 1, ymin - 1, xmax, ymax)``
(see :mod:`ssdkit.dataset.records`). Bad data is handled as listed in :mod:`ssdkit.dataset.validation`.

Instance masks (``masks=``, see :mod:`ssdkit.dataset.masks`): VOC keeps them in
``VOC<year>/SegmentationObject/<stem>.png``, a palette PNG whose value ``i + 1`` marks the i-th ``<object>``
of the xml (counted before ``keep_difficult`` drops any; 0 background, 255 void). With ``"auto"`` (default) a
record gets an :class:`~ssdkit.dataset.masks.InstancePng` source when its PNG exists (None otherwise);
``"require"`` skips an image without one (``missing_annotation``); ``"none"`` reads no masks. With
``check_images="decode"`` the PNG is read at load too: an unreadable one or one of another size than the
image's annotated size skips the image (``bad_annotation``), an object whose value is absent from it gets
its box filled (``box_mask``).
"""
import os
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ssdkit.dataset.collection import DetectionDataset, concat_datasets, resolve_class_names
from ssdkit.dataset.masks import MASK_MODES, InstancePng, MaskError, read_instance_png
from ssdkit.dataset.validation import LoadReport, RawAnnotation, build_records, unknown_class_error

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
"""The 20 Pascal VOC classes; class id ``i`` is ``VOC_CLASSES[i]``."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def parse_image_set(spec):
    """``"2007/trainval"``, ``"VOC2007/trainval"`` or ``("2007", "trainval")`` -> ``("2007", "trainval")``."""
    if isinstance(spec, str):
        parts = spec.replace("\\", "/").split("/")
        if len(parts) != 2 or not all(parts):
            raise ValueError("image set %r: expected 'YEAR/SET' such as '2007/trainval'" % spec)
    else:
        parts = list(spec)
    year, name = str(parts[0]), str(parts[1])
    if year.upper().startswith("VOC"):
        year = year[3:]
    return year, name


class _AnnotationError(ValueError):
    pass


def _text(node, tag):
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise _AnnotationError("missing <%s>" % tag)
    return child.text.strip()


def parse_voc_xml(path, class_index, *, keep_difficult=True):
    """Parse one VOC annotation file.

    Parameters
    ----------
    path : str, the xml file
    class_index : dict name -> 0-based class id
    keep_difficult : bool, False drops objects marked difficult

    Returns
    -------
    (width or None, height or None, boxes (K, 4) float64 0-based pixel corners, classes (K,) int32,
    difficult (K,) bool). Raises ValueError naming the file for a class not in ``class_index`` and
    ``_AnnotationError`` for an unparsable file.
    """
    return _parse_voc_objects(path, class_index, keep_difficult=keep_difficult)[:5]


def _parse_voc_objects(path, class_index, *, keep_difficult=True):
    """:func:`parse_voc_xml` plus ``(K,)`` int64 positions of the kept objects among the xml's ``<object>``s."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise _AnnotationError("xml parse error: %s" % err) from None
    size = root.find("size")
    width = height = None
    if size is not None:
        try:
            width, height = int(float(_text(size, "width"))), int(float(_text(size, "height")))
        except (_AnnotationError, ValueError):
            width = height = None
    boxes, classes, difficult, positions = [], [], [], []
    for position, obj in enumerate(root.iter("object")):
        name = _text(obj, "name")
        if name not in class_index:
            raise unknown_class_error(name, list(class_index), path)
        diff = obj.find("difficult")
        try:
            is_difficult = diff is not None and int(float((diff.text or "0").strip() or 0)) != 0
        except ValueError:
            raise _AnnotationError("object %r has <difficult>%s</difficult>, expected 0 or 1" % (name, diff.text))
        if is_difficult and not keep_difficult:
            continue
        bnd = obj.find("bndbox")
        if bnd is None:
            raise _AnnotationError("object %r without <bndbox>" % name)
        try:
            x0, y0, x1, y1 = (float(_text(bnd, k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as err:
            raise _AnnotationError("bad box of %r: %s" % (name, err)) from None
        boxes.append((x0 - 1.0, y0 - 1.0, x1, y1))
        classes.append(class_index[name])
        difficult.append(is_difficult)
        positions.append(position)
    return (width, height, np.array(boxes, np.float64).reshape(-1, 4), np.array(classes, np.int32),
            np.array(difficult, bool), np.array(positions, np.int64))


def _instance_masks(year_dir, stem, width, height, positions, mode, check_images):
    """The mask source of one VOC image: ``(InstancePng or None, problem or None, values absent from it)``.

    ``problem`` is ``(report kind, detail)`` when the image is to be skipped.
    """
    path = os.path.join(year_dir, "SegmentationObject", stem + ".png")
    if mode == "none":
        return None, None, []
    if not os.path.isfile(path):
        if mode == "require":
            return None, ("missing_annotation", "instance mask %s not found (masks='require')" % path), []
        return None, None, []
    source = InstancePng(path, tuple(int(p) + 1 for p in positions))
    if check_images != "decode":
        return source, None, []
    try:
        values = read_instance_png(path)
    except MaskError as err:
        return None, ("bad_annotation", str(err)), []
    if width and height and values.shape != (height, width):
        return None, ("bad_annotation", "instance mask %s is %dx%d, the annotated image %dx%d (WxH)"
                      % (path, values.shape[1], values.shape[0], width, height)), []
    present = np.bincount(values.ravel(), minlength=256) > 0
    return source, None, [v for v in source.values if v > 255 or not present[v]]


def _image_path(image_dir, stem):
    for ext in IMAGE_EXTENSIONS:
        path = os.path.join(image_dir, stem + ext)
        if os.path.exists(path):
            return path
    return os.path.join(image_dir, stem + ".jpg")  # reported missing by the image check


def load_voc_set(root, image_set, *, class_names=None, keep_difficult=True, check_images="decode", workers=2,
                 strict=False, masks="auto"):
    """Load one VOC image set (see :func:`load_voc`)."""
    if masks not in MASK_MODES:
        raise ValueError("masks=%r; expected one of %s" % (masks, ", ".join(MASK_MODES)))
    year, name = parse_image_set(image_set)
    root = os.path.abspath(root)
    names = resolve_class_names(class_names, VOC_CLASSES)
    class_index = {n: i for i, n in enumerate(names)}
    year_dir = os.path.join(root, "VOC" + year)
    list_file = os.path.join(year_dir, "ImageSets", "Main", name + ".txt")
    if not os.path.isfile(list_file):
        raise FileNotFoundError("VOC image set file %s not found (root=%s, set=%s/%s); root must be the "
                                "VOCdevkit folder holding VOC%s/" % (list_file, root, year, name, year))
    with open(list_file) as f:
        stems = [(number, line.split()[0]) for number, line in enumerate(f, start=1) if line.strip()]
    report = LoadReport("voc:%s/%s (%s)" % (year, name, year_dir), strict=strict)
    parsed = []
    seen = set()
    for line, stem in stems:
        if stem in seen:
            report.add("duplicate_id", "%s line %d" % (list_file, line), "%s listed again" % stem)
            continue
        seen.add(stem)
        xml_path = os.path.join(year_dir, "Annotations", stem + ".xml")
        if not os.path.isfile(xml_path):
            report.add("missing_annotation", xml_path)
            continue
        try:
            parsed.append((stem, xml_path) + _parse_voc_objects(xml_path, class_index, keep_difficult=keep_difficult))
        except _AnnotationError as err:
            report.add("bad_annotation", xml_path, str(err))

    def instance_masks(item):
        stem, _, width, height, _, _, _, positions = item
        return _instance_masks(year_dir, stem, width, height, positions, masks, check_images)

    if masks != "none" and check_images == "decode" and workers > 1 and len(parsed) > 1:
        with ThreadPoolExecutor(workers) as pool:  # PNG decoding releases the GIL
            mask_results = list(pool.map(instance_masks, parsed, chunksize=16))
    else:
        mask_results = [instance_masks(item) for item in parsed]
    raws = []
    for (stem, xml_path, width, height, boxes, classes, difficult, _), (mask_source, problem, absent) in zip(
            parsed, mask_results):
        if problem is not None:
            report.add(problem[0], xml_path, problem[1])
            continue
        for value in absent:
            report.add("box_mask", xml_path, "object %d has no pixels in %s" % (value - 1, mask_source.path))
        raws.append(RawAnnotation(path=_image_path(os.path.join(year_dir, "JPEGImages"), stem), width=width,
                                  height=height, boxes=boxes, classes=classes, difficult=difficult,
                                  image_id=stem, source=xml_path, masks=mask_source))
    records = build_records(raws, report, check_images=check_images, workers=workers)
    report.finish()
    return DetectionDataset(name="voc:%s/%s" % (year, name), records=tuple(records), class_names=names,
                            reports=(report,))


def load_voc(root, sets=("2007/trainval",), *, class_names=None, keep_difficult=True, check_images="decode",
             workers=2, strict=False, masks="auto"):
    """Load Pascal VOC image sets into records.

    Parameters
    ----------
    root : str, the ``VOCdevkit`` folder (holding ``VOC2007/``, ``VOC2012/``, ...)
    sets : str or sequence of image sets, each ``"YEAR/SET"`` (``"2007/trainval"``, ``"VOC2012/train"``)
        or a ``(year, set)`` pair inside the sequence; several sets are concatenated in order
    class_names : None (the 20 :data:`VOC_CLASSES`), a sequence of names, or a file with one name per line
    keep_difficult : bool, False drops objects marked ``difficult`` (kept by default, flagged)
    check_images : ``decode`` | ``header`` | ``none``, see :func:`ssdkit.dataset.image.inspect_image`
    workers : int, threads checking images
    strict : bool, raise :class:`~ssdkit.dataset.validation.DataError` naming every damaged or inconsistent
        entry instead of skipping it with a count
    masks : ``auto`` | ``require`` | ``none``, instance masks from ``SegmentationObject`` PNGs into each
        record's lazy ``masks`` (see the module docstring)

    Returns
    -------
    DetectionDataset; its records' boxes are 0-based pixel corners, ``difficult`` from the xml.
    A summary of skipped/fixed data is logged per set (logger ``ssdkit.dataset``).
    """
    if isinstance(sets, str):
        sets = [sets]
    parts = [load_voc_set(root, s, class_names=class_names, keep_difficult=keep_difficult,
                          check_images=check_images, workers=workers, strict=strict, masks=masks) for s in sets]
    return parts[0] if len(parts) == 1 else concat_datasets(parts)
