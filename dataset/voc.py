"""Pascal VOC reader: ``VOCdevkit/VOC<year>/{Annotations,JPEGImages,ImageSets/Main}``.

VOC boxes are 1-based inclusive pixel indices; records hold ``(xmin - 1, ymin - 1, xmax, ymax)``
(see :mod:`ssdkit.dataset.records`). Bad data is handled as listed in :mod:`ssdkit.dataset.validation`.
"""
import os
import xml.etree.ElementTree as ET

import numpy as np

from ssdkit.dataset.collection import DetectionDataset, concat_datasets, resolve_class_names
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
    boxes, classes, difficult = [], [], []
    for obj in root.iter("object"):
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
    return (width, height, np.array(boxes, np.float64).reshape(-1, 4), np.array(classes, np.int32),
            np.array(difficult, bool))


def _image_path(image_dir, stem):
    for ext in IMAGE_EXTENSIONS:
        path = os.path.join(image_dir, stem + ext)
        if os.path.exists(path):
            return path
    return os.path.join(image_dir, stem + ".jpg")  # reported missing by the image check


def load_voc_set(root, image_set, *, class_names=None, keep_difficult=True, check_images="decode", workers=2,
                 strict=False):
    """Load one VOC image set (see :func:`load_voc`)."""
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
    raws = []
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
            width, height, boxes, classes, difficult = parse_voc_xml(xml_path, class_index,
                                                                     keep_difficult=keep_difficult)
        except _AnnotationError as err:
            report.add("bad_annotation", xml_path, str(err))
            continue
        raws.append(RawAnnotation(path=_image_path(os.path.join(year_dir, "JPEGImages"), stem), width=width,
                                  height=height, boxes=boxes, classes=classes, difficult=difficult,
                                  image_id=stem, source=xml_path))
    records = build_records(raws, report, check_images=check_images, workers=workers)
    report.finish()
    return DetectionDataset(name="voc:%s/%s" % (year, name), records=tuple(records), class_names=names,
                            reports=(report,))


def load_voc(root, sets=("2007/trainval",), *, class_names=None, keep_difficult=True, check_images="decode",
             workers=2, strict=False):
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

    Returns
    -------
    DetectionDataset; its records' boxes are 0-based pixel corners, ``difficult`` from the xml.
    A summary of skipped/fixed data is logged per set (logger ``ssdkit.dataset``).
    """
    if isinstance(sets, str):
        sets = [sets]
    parts = [load_voc_set(root, s, class_names=class_names, keep_difficult=keep_difficult,
                          check_images=check_images, workers=workers, strict=strict) for s in sets]
    return parts[0] if len(parts) == 1 else concat_datasets(parts)
