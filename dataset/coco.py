"""COCO instances-json reader (through pycocotools).

Category ids are mapped, in increasing id order, to contiguous 0-based class ids; the names come from the
json. COCO ``bbox = [x, y, w, h]`` becomes the corners ``(x, y, x + w, y + h)``. Crowd objects
(``iscrowd = 1``) are skipped by default (``crowd="skip"``) or kept flagged difficult (``crowd="difficult"``);
either way they are counted in the load report. A non-standard per-annotation key ``"difficult"`` (0/1), when
present, sets the difficult flag (the synthetic dataset writes it so that its VOC and COCO forms agree).
Images without annotations are kept. An image id given to several images skips all of them (their
annotations cannot be told apart; counted as ``duplicate_id``), an annotation whose ``image_id`` is not an
image is counted as ``orphan_annotation``. Other bad data is handled as in :mod:`ssdkit.dataset.validation`.
"""
import collections
import contextlib
import io
import json
import os

import numpy as np

from ssdkit.dataset.collection import DetectionDataset, concat_datasets
from ssdkit.dataset.masks import MASK_MODES, CocoSegmentations, MaskError, compact_segmentation
from ssdkit.dataset.validation import LoadReport, RawAnnotation, build_records

CROWD_MODES = ("skip", "difficult")


def read_coco_json(path):
    """Load and index a COCO instances file; raises ValueError naming the file when it cannot be parsed."""
    from pycocotools.coco import COCO

    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError("%s: not valid JSON (%s)" % (path, err)) from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError("%s: not a COCO instances file, missing key(s) %s" % (path, ", ".join(missing)))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            coco.createIndex()
        except (KeyError, TypeError) as err:
            raise ValueError("%s: malformed COCO entry (%r)" % (path, err)) from None
    return coco


def check_image_ids(data, report, name):
    """Count COCO image ids used twice and annotations of unknown image ids.

    pycocotools indexes images by id, so a second image with the same id replaces the first and the
    annotations of both land on the survivor; annotations of an id that is not an image are never looked
    at. This finds both in the raw json.

    Parameters
    ----------
    data : dict, the parsed instances json (``images``, ``annotations``)
    report : LoadReport, receives ``duplicate_id`` (one per image sharing an id) and ``orphan_annotation``
    name : str, the file name used in messages

    Returns
    -------
    set of the duplicated image ids (their images are to be skipped).
    """
    images = [img for img in data["images"] if isinstance(img, dict)]
    counts = collections.Counter(img.get("id") for img in images)
    duplicated = {i for i, n in counts.items() if n > 1}
    for img in images:
        if img.get("id") in duplicated:
            report.add("duplicate_id", "%s image id %s" % (name, img.get("id")),
                       "file_name %s; %d images share the id, their annotations cannot be told apart"
                       % (img.get("file_name"), counts[img.get("id")]))
    for ann in data["annotations"]:
        if isinstance(ann, dict) and ann.get("image_id") not in counts:
            report.add("orphan_annotation", "%s annotation %s" % (name, ann.get("id")),
                       "image_id %r is not among the images" % (ann.get("image_id"),))
    return duplicated


def load_coco_set(annotation_file, image_dir, *, crowd="skip", check_images="decode", workers=2, strict=False,
                  masks="auto"):
    """Load one COCO instances file (see :func:`load_coco`)."""
    if crowd not in CROWD_MODES:
        raise ValueError("crowd=%r; expected one of %s" % (crowd, ", ".join(CROWD_MODES)))
    if masks not in MASK_MODES:
        raise ValueError("masks=%r; expected one of %s" % (masks, ", ".join(MASK_MODES)))
    coco = read_coco_json(annotation_file)
    read_masks = masks == "require" or (masks == "auto" and any(
        isinstance(ann, dict) and ann.get("segmentation") for ann in coco.dataset["annotations"]))
    cat_ids = sorted(coco.getCatIds())
    cat_index = {cid: i for i, cid in enumerate(cat_ids)}
    names = tuple(coco.cats[cid]["name"] for cid in cat_ids)
    report = LoadReport("coco:%s" % annotation_file, strict=strict)
    duplicated = check_image_ids(coco.dataset, report, os.path.basename(annotation_file))
    raws = []
    for image_id in sorted(coco.getImgIds()):
        if image_id in duplicated:
            continue
        info = coco.imgs[image_id]
        source = "%s image id %s" % (os.path.basename(annotation_file), image_id)
        if "file_name" not in info:
            report.add("bad_annotation", source, "image without file_name")
            continue
        boxes, classes, difficult, segmentations = [], [], [], []
        no_mask = []
        bad = None
        for ann in coco.imgToAnns.get(image_id, []):
            bbox, cid = ann.get("bbox"), ann.get("category_id")
            if cid not in cat_index:
                bad = "annotation %s has unknown category_id %r (known: %s)" % (ann.get("id"), cid, cat_ids)
                break
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
                bad = "annotation %s has bbox %r, expected [x, y, w, h]" % (ann.get("id"), bbox)
                break
            is_crowd = bool(ann.get("iscrowd", 0))
            if is_crowd:
                report.add("crowd", source, "annotation %s %s" % (ann.get("id"), crowd))
                if crowd == "skip":
                    continue
            try:
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError):
                bad = "annotation %s has non-numeric bbox %r" % (ann.get("id"), bbox)
                break
            if read_masks:
                try:
                    seg = compact_segmentation(ann["segmentation"], info.get("height"), info.get("width")) \
                        if ann.get("segmentation") else None
                except MaskError as err:
                    bad = "annotation %s: %s" % (ann.get("id"), err)
                    break
                if seg is None:
                    if masks == "require":
                        bad = "annotation %s has no segmentation with an area (masks='require')" % ann.get("id")
                        break
                    no_mask.append(ann.get("id"))
                segmentations.append(seg)
            boxes.append((x, y, x + w, y + h))
            classes.append(cat_index[cid])
            difficult.append(is_crowd or bool(ann.get("difficult", 0)))
        if bad is not None:
            report.add("bad_annotation", source, bad)
            continue
        for ann_id in no_mask:
            report.add("box_mask", source, "annotation %s has no segmentation" % ann_id)
        raws.append(RawAnnotation(path=os.path.join(os.path.abspath(image_dir), info["file_name"]), width=info.get("width"),
                                  height=info.get("height"), boxes=np.array(boxes, np.float64).reshape(-1, 4),
                                  classes=np.array(classes, np.int32), difficult=np.array(difficult, bool),
                                  image_id=str(image_id), source=source,
                                  masks=CocoSegmentations(tuple(segmentations), source) if read_masks else None))
    records = build_records(raws, report, check_images=check_images, workers=workers)
    report.finish()
    return DetectionDataset(name="coco:%s" % os.path.basename(annotation_file), records=tuple(records),
                            class_names=names, reports=(report,))


def load_coco(annotation_files, image_dirs, *, crowd="skip", check_images="decode", workers=2, strict=False,
              masks="auto"):
    """Load COCO instances files into records.

    Parameters
    ----------
    annotation_files : str or sequence of str, ``instances_*.json`` files (concatenated in order; their
        category lists must agree)
    image_dirs : str or sequence of str (one per file), folders that ``file_name`` is relative to
    crowd : ``skip`` (default) drops ``iscrowd`` objects, ``difficult`` keeps them flagged difficult
    check_images : ``decode`` | ``header`` | ``none``, see :func:`ssdkit.dataset.image.inspect_image`
    workers : int, threads checking images
    strict : bool, raise :class:`~ssdkit.dataset.validation.DataError` naming every damaged or inconsistent
        entry instead of skipping it with a count
    masks : ``auto`` | ``require`` | ``none``, read the ``segmentation`` of the annotations into each record's
        lazy ``masks`` (see the module docstring)

    Returns
    -------
    DetectionDataset, records in increasing image id, ``image_id`` the COCO id as a string.
    """
    if isinstance(annotation_files, (str, os.PathLike)):
        annotation_files = [annotation_files]
    if isinstance(image_dirs, (str, os.PathLike)):
        image_dirs = [image_dirs] * len(annotation_files)
    if len(image_dirs) != len(annotation_files):
        raise ValueError("%d annotation files but %d image folders" % (len(annotation_files), len(image_dirs)))
    parts = [load_coco_set(a, d, crowd=crowd, check_images=check_images, workers=workers, strict=strict, masks=masks)
             for a, d in zip(annotation_files, image_dirs)]
    return parts[0] if len(parts) == 1 else concat_datasets(parts)
