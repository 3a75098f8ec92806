"""The simple custom annotation format: a CSV table or a JSON file (chosen by the file extension).

Boxes are pixel corners in the record convention (0-based, ``xmax``/``ymax`` exclusive: a box covering pixel
columns 10..19 is ``xmin=10, xmax=20``). Image paths are relative to ``image_root`` (default: the folder of
the annotation file) unless absolute. Classes are names; the class list comes from ``class_names=``, else
(JSON) the file's ``"classes"``, else the sorted set of names found (logged).

CSV (``.csv``), a header row then one row per object::

    image,xmin,ymin,xmax,ymax,class,difficult
    a.jpg,10,20,110,140,cat,0
    a.jpg,50,60,90,100,dog,1
    empty.jpg,,,,,,

``difficult`` is optional (default 0); optional ``width`` and ``height`` columns give the image size
(otherwise it is read from the image). A row with empty box fields lists an image without objects.
Rows of one image need not be adjacent; images keep the order of their first row.

JSON (``.json``)::

    {"classes": ["cat", "dog"],
     "images": [{"file": "a.jpg", "width": 640, "height": 480,
                 "objects": [{"box": [10, 20, 110, 140], "class": "cat", "difficult": 0}]}]}

``classes``, ``width``, ``height``, ``objects`` and ``difficult`` are optional; ``class`` may also be a
0-based integer id into ``classes``.

Inconsistent entries are skipped with a count (see :mod:`ssdkit.dataset.validation`): a CSV row holding
more values than the header skips its image (``extra_columns``: the values cannot be assigned to columns),
a JSON image listed twice keeps its first entry (``duplicate_id``).
"""
import csv
import json
import logging
import os

import numpy as np

from ssdkit.dataset.collection import DetectionDataset, concat_datasets, resolve_class_names
from ssdkit.dataset.validation import LoadReport, RawAnnotation, build_records, unknown_class_error

logger = logging.getLogger("ssdkit.dataset")
CSV_COLUMNS = ("image", "xmin", "ymin", "xmax", "ymax", "class")


def _read_csv(path):
    """[(image, size or None, [(box, class name, difficult) ...])] in first-appearance order."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError("%s: missing CSV column(s) %s; the header must hold %s[,difficult][,width,height]"
                             % (path, ", ".join(missing), ",".join(CSV_COLUMNS)))
        images = {}
        for line, row in enumerate(reader, start=2):
            name = (row["image"] or "").strip()
            if not name:
                raise ValueError("%s line %d: empty image column" % (path, line))
            entry = images.setdefault(name, {"size": None, "objects": [], "error": None})
            if row.get(None):  # csv.DictReader keeps the values beyond the header under the key None
                entry["error"] = entry["error"] or (
                    "extra_columns", "line %d: %d values, the header has %d (%s); extra %s"
                    % (line, len(reader.fieldnames) + len(row[None]), len(reader.fieldnames),
                       ",".join(reader.fieldnames), row[None]))
                continue
            try:
                if (row.get("width") or "").strip() and (row.get("height") or "").strip():
                    entry["size"] = (int(float(row["width"])), int(float(row["height"])))
                fields = [(row[c] or "").strip() for c in ("xmin", "ymin", "xmax", "ymax", "class")]
                if not any(fields):
                    continue
                if not all(fields):
                    raise ValueError("incomplete object %s" % fields)
                box = [float(v) for v in fields[:4]]
                entry["objects"].append((box, fields[4], int(float((row.get("difficult") or "0").strip() or 0))))
            except ValueError as err:
                entry["error"] = entry["error"] or ("bad_annotation", "line %d: %s" % (line, err))
    return [(name, e["size"], e["objects"], e["error"]) for name, e in images.items()], None


def _read_json(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError("%s: not valid JSON (%s)" % (path, err)) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError('%s: expected an object with an "images" list (see ssdkit.dataset.lists)' % path)
    entries, seen = [], {}
    for index, item in enumerate(data["images"]):
        error, objects, size, name = None, [], None, None
        try:
            name = str(item["file"])
            if item.get("width") and item.get("height"):
                size = (int(item["width"]), int(item["height"]))
            for obj in item.get("objects") or []:
                box = [float(v) for v in obj["box"]]
                if len(box) != 4:
                    raise ValueError("box %s is not [xmin, ymin, xmax, ymax]" % obj["box"])
                objects.append((box, obj["class"], int(obj.get("difficult", 0))))
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            error = ("bad_annotation", "images[%d]: %s %r" % (index, type(err).__name__, err))
        if error is None and name in seen:
            error = ("duplicate_id", "images[%d] lists %s again (first: images[%d])" % (index, name, seen[name]))
            name = "%s (images[%d])" % (name, index)
        elif name is not None:
            seen.setdefault(name, index)
        entries.append((name or "images[%d]" % index, size, objects, error))
    return entries, data.get("classes")


def load_list_set(path, *, class_names=None, image_root=None, check_images="decode", workers=2, strict=False):
    """Load one CSV or JSON annotation file (see :func:`load_list`)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".json"):
        raise ValueError("%s: unknown annotation format %r; use .csv or .json (see ssdkit.dataset.lists)"
                         % (path, ext))
    entries, file_classes = _read_csv(path) if ext == ".csv" else _read_json(path)
    if class_names is None and file_classes is not None:
        class_names = file_classes
    if class_names is None:
        found = sorted({c for _, _, objects, _ in entries for _, c, _ in objects if isinstance(c, str)})
        if not found:
            raise ValueError("%s: no class names given and none found; pass class_names=" % path)
        logger.info("%s: no class list given, using the %d names found, sorted: %s", path, len(found), found)
        class_names = found
    names = resolve_class_names(class_names)
    class_index = {n: i for i, n in enumerate(names)}
    root = os.path.abspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(path))
    report = LoadReport("list:%s" % path, strict=strict)
    raws = []
    for name, size, objects, error in entries:
        source = "%s [%s]" % (os.path.basename(path), name)
        if error is not None:
            report.add(error[0], source, error[1])
            continue
        classes = []
        for _, cls, _ in objects:
            if isinstance(cls, int) and not isinstance(cls, bool):
                if not 0 <= cls < len(names):
                    raise ValueError("%s: class id %d out of range for %d classes %s" % (source, cls, len(names),
                                                                                        list(names)))
                classes.append(cls)
            elif str(cls) in class_index:
                classes.append(class_index[str(cls)])
            else:
                raise unknown_class_error(cls, names, source)
        raws.append(RawAnnotation(path=os.path.join(root, name), width=size[0] if size else None,
                                  height=size[1] if size else None,
                                  boxes=np.array([o[0] for o in objects], np.float64).reshape(-1, 4),
                                  classes=np.array(classes, np.int32),
                                  difficult=np.array([bool(o[2]) for o in objects], bool),
                                  image_id=os.path.splitext(name)[0], source=source))
    if check_images == "none" and any(r.width is None for r in raws):
        check_images = "header"  # the size must come from somewhere
    records = build_records(raws, report, check_images=check_images, workers=workers)
    report.finish()
    return DetectionDataset(name="list:%s" % os.path.basename(path), records=tuple(records), class_names=names,
                            reports=(report,))


def load_list(paths, *, class_names=None, image_root=None, check_images="decode", workers=2, strict=False):
    """Load CSV/JSON annotation files of the custom format (module docstring) into records.

    Parameters
    ----------
    paths : str or sequence of str, ``.csv`` / ``.json`` files, concatenated in order (same class list)
    class_names : None, a sequence of names or a names file (one per line)
    image_root : str, folder image paths are relative to (default: each file's folder)
    check_images : ``decode`` | ``header`` | ``none``, see :func:`ssdkit.dataset.image.inspect_image`
    workers : int, threads checking images
    strict : bool, raise :class:`~ssdkit.dataset.validation.DataError` naming every damaged or inconsistent
        entry instead of skipping it with a count

    Returns
    -------
    DetectionDataset
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    parts = [load_list_set(p, class_names=class_names, image_root=image_root, check_images=check_images,
                           workers=workers, strict=strict) for p in paths]
    return parts[0] if len(parts) == 1 else concat_datasets(parts)
