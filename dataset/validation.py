"""Bad-data handling shared by every reader: box sanitising, image checks and the load report.

Readers parse their files into :class:`RawAnnotation` objects and hand them to :func:`build_records`, which
checks every image, fixes what can be fixed and skips what cannot, counting each case in a
:class:`LoadReport` that is logged (logger ``ssdkit.dataset``) when loading ends. Readers give records
absolute image paths.

==============================  ====================================================================
case                            action (report kind)
==============================  ====================================================================
missing / corrupt image         image skipped (``missing_image`` / ``corrupt_image``)
truncated image                 image skipped (``truncated_image``): a JPEG without its end marker
                                ``FFD9`` after its data / a PNG without ``IEND``
unparsable annotation           image skipped (``bad_annotation``; a whole unparsable file raises)
image id used twice             skipped (``duplicate_id``): COCO every image with the id (their
                                annotations cannot be told apart); VOC / JSON list the repeats
annotation of an unknown image  annotation skipped (``orphan_annotation``, COCO)
CSV row with extra values       image skipped (``extra_columns``)
RecordIO record damaged         record skipped (``bad_record``: framing or header cannot be read;
                                ``corrupt_image`` / ``truncated_image`` for its image bytes)
RecordIO label unusable         record skipped (``bad_label``: class outside ``[0, num_classes)``,
                                non-finite or out-of-image coordinates, malformed layout)
annotated size != image size    the decoded image's size is used (``size_mismatch``)
object without instance mask    its box is filled at decode (``box_mask``; readers' ``masks="auto"``)
                                / image skipped (``bad_annotation`` / ``missing_annotation``,
                                ``masks="require"``); a malformed mask skips its image
                                (``bad_annotation``)
box partly outside the image    box clipped to the image (``clipped_box``)
zero-area / inverted box        box dropped (``dropped_box``; also a box entirely outside the image,
                                or non-finite)
image without objects           kept (``no_objects``)
gray / RGBA / 16-bit / PNG      kept; :func:`ssdkit.dataset.image.load_image_rgb` converts at decode
unknown class name              ValueError naming the file and listing the known classes
==============================  ====================================================================

Nothing is dropped silently: every skip is counted per kind and the summary names the files / records.
With ``strict=True`` (config key ``data.strict``, flag ``--strict``) every case of :data:`STRICT_KINDS`
(all the skips above, orphan annotations and dropped boxes) is an error instead: :meth:`LoadReport.finish`
raises :class:`DataError` naming each file / record. A dataset left without any record is an error in
either mode.
"""
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ssdkit.dataset.image import ImageError, inspect_image
from ssdkit.errors import InputError
from ssdkit.dataset.records import Record

logger = logging.getLogger("ssdkit.dataset")

ISSUES = OrderedDict([
    ("missing_image", "skipped, image file not found"),
    ("corrupt_image", "skipped, image cannot be decoded"),
    ("truncated_image", "skipped, image file ends early (no JPEG FFD9 / PNG IEND end marker)"),
    ("missing_annotation", "skipped, annotation file not found"),
    ("bad_annotation", "skipped, annotation cannot be parsed"),
    ("duplicate_id", "skipped, image id given to more than one image"),
    ("extra_columns", "skipped, CSV row with more values than the header"),
    ("bad_record", "skipped, RecordIO record cannot be unpacked"),
    ("bad_label", "skipped, label with an out-of-range class, a non-finite or outside coordinate or a "
                  "malformed layout"),
    ("orphan_annotation", "skipped, annotation of an image id that is not in the image list"),
    ("size_mismatch", "fixed, annotated size differs from the image (image size used)"),
    ("clipped_box", "fixed, box clipped to the image"),
    ("dropped_box", "fixed, zero-area, inverted or outside box dropped"),
    ("crowd", "crowd object skipped or flagged difficult"),
    ("box_mask", "fixed, object without an instance mask in a dataset with masks (its box is filled)"),
    ("converted_image", "noted, gray/alpha/16-bit/non-JPEG image, converted to RGB at decode"),
    ("no_objects", "kept, image without objects"),
])
"""Every counted case: kind -> what was done."""
SKIP_KINDS = ("missing_image", "corrupt_image", "truncated_image", "missing_annotation", "bad_annotation",
              "duplicate_id", "extra_columns", "bad_record", "bad_label")
"""Kinds whose every case is one image / record left out (counted in ``num_skipped``)."""
STRICT_KINDS = SKIP_KINDS + ("orphan_annotation", "dropped_box")
"""Kinds that are errors with ``strict=True``: everything damaged or inconsistent that is left out."""


class DataError(InputError):
    """A dataset holds damaged or inconsistent records and ``strict`` mode is on, or none is usable.

    An :class:`ssdkit.errors.InputError` (so a ``ValueError``): the scripts print it as one ``error:``
    line, also when it is raised in the middle of training."""


class LoadReport:
    """Counts and file names of everything skipped, fixed or noted while loading one dataset.

    Parameters
    ----------
    source : str, what was loaded (shown in the summary)
    strict : bool, make :meth:`finish` raise :class:`DataError` when any case of :data:`STRICT_KINDS`
        was counted
    """

    def __init__(self, source, *, strict=False):
        self.source = source
        self.strict = bool(strict)
        self.num_records = 0
        self._items = OrderedDict((kind, []) for kind in ISSUES)

    def add(self, kind, file, detail=""):
        """Count one case ``kind`` (a key of :data:`ISSUES`) for ``file``, with an optional detail."""
        if kind not in self._items:
            raise KeyError("unknown load issue %r; expected one of %s" % (kind, ", ".join(ISSUES)))
        self._items[kind].append((str(file), detail))

    def count(self, kind):
        return len(self._items[kind])

    def files(self, kind):
        """File names counted under ``kind``, in order (a file appears once per case)."""
        return [f for f, _ in self._items[kind]]

    def entries(self, kind):
        """``(file, detail)`` pairs counted under ``kind``, in order."""
        return list(self._items[kind])

    @property
    def num_skipped(self):
        return sum(self.count(k) for k in SKIP_KINDS)

    def summary(self, max_files=5):
        """Multi-line text: records kept, then one line per non-zero case with up to ``max_files`` names."""
        lines = ["%s: %d images loaded, %d skipped" % (self.source, self.num_records, self.num_skipped)]
        for kind, items in self._items.items():
            if not items:
                continue
            names = ["%s (%s)" % (f, d) if d else f for f, d in items[:max_files]]
            more = ", ... %d more" % (len(items) - max_files) if len(items) > max_files else ""
            lines.append("  %s: %d [%s]: %s%s" % (kind, len(items), ISSUES[kind], ", ".join(names), more))
        return "\n".join(lines)

    @property
    def num_strict(self):
        """Cases of :data:`STRICT_KINDS` counted (what ``strict`` mode refuses)."""
        return sum(self.count(k) for k in STRICT_KINDS)

    def log(self):
        """Log the summary: WARNING when something was skipped or fixed, INFO otherwise."""
        fixed = self.num_strict + sum(self.count(k) for k in ("size_mismatch", "clipped_box", "box_mask"))
        logger.log(logging.WARNING if fixed else logging.INFO, "%s", self.summary())

    def finish(self, *, max_files=5):
        """End loading: log the summary, then raise :class:`DataError` in ``strict`` mode when anything
        damaged or inconsistent was counted (every such file / record named), or in either mode when no
        record is left but some were skipped."""
        self.log()
        if self.strict and self.num_strict:
            lines = ["%s: strict mode refuses %d damaged or inconsistent entries:"
                     % (self.source, self.num_strict)]
            for kind in STRICT_KINDS:
                for file, detail in self._items[kind]:
                    lines.append("  %s: %s%s" % (kind, file, " (%s)" % detail if detail else ""))
            lines.append("Fix or remove them, or drop --strict (data.strict = false) to skip them with a count.")
            raise DataError("\n".join(lines))
        if self.num_records == 0 and self.num_skipped:
            raise DataError("%s: no usable record, all %d were skipped:\n%s"
                            % (self.source, self.num_skipped, self.summary(max_files=max_files)))


@dataclass
class RawAnnotation:
    """One image as parsed from its annotation file, before checks.

    Attributes
    ----------
    path : str, image file
    width, height : int or None, annotated image size (None when the format has none)
    boxes : (K, 4) float pixel corners (xmin, ymin, xmax, ymax), see :mod:`ssdkit.dataset.records`
    classes : (K,) int 0-based class ids
    difficult : (K,) bool
    image_id : str
    source : str, the annotation file named in messages
    masks : None or a mask source of the K objects (see :mod:`ssdkit.dataset.masks`)
    """

    path: str
    width: object
    height: object
    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray
    image_id: str
    source: str
    masks: object = None


def sanitize_boxes(boxes, width, height):
    """Clip boxes to the image and find the ones to drop.

    Parameters
    ----------
    boxes : (K, 4) float pixel corners (xmin, ymin, xmax, ymax)
    width, height : image size in pixels

    Returns
    -------
    clipped : (K, 4) float32, boxes clipped to ``[0, width] x [0, height]``
    keep : (K,) bool, False for non-finite, inverted, zero-area or (after clipping) empty boxes
    changed : (K,) bool, kept boxes that clipping changed
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(1)
    safe = np.where(finite[:, None], boxes, 0.0)
    valid = finite & (safe[:, 2] > safe[:, 0]) & (safe[:, 3] > safe[:, 1])
    clipped = np.clip(safe, 0, [width, height, width, height])
    keep = valid & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = keep & (clipped != safe).any(1)
    return clipped.astype(np.float32), keep, changed


def image_error_kind(error):
    """The report kind of an :class:`~ssdkit.dataset.image.ImageError` (from its ``reason``)."""
    return {"missing": "missing_image", "truncated": "truncated_image"}.get(error.reason, "corrupt_image")


def _check(path, mode):
    try:
        return inspect_image(path, mode)
    except ImageError as err:
        return err


def build_records(raws, report, *, check_images="decode", workers=2):
    """Check images and boxes of parsed annotations and turn them into records.

    Parameters
    ----------
    raws : list of RawAnnotation
    report : LoadReport, receives every skip/fix/note (its ``num_records`` is increased)
    check_images : ``decode`` | ``header`` | ``none``, see :func:`ssdkit.dataset.image.inspect_image`
    workers : int, threads decoding images

    Returns
    -------
    list of Record, in the order of ``raws``, without the skipped images.
    """
    paths = [raw.path for raw in raws]
    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(workers) as pool:
            infos = list(pool.map(lambda p: _check(p, check_images), paths, chunksize=16))
    else:
        infos = [_check(p, check_images) for p in paths]
    records = []
    for raw, info in zip(raws, infos):
        if isinstance(info, ImageError):
            report.add(image_error_kind(info), raw.path, str(info).split(": ", 1)[1] if ": " in str(info) else "")
            continue
        width, height = raw.width, raw.height
        if info.width and info.height:
            if width and height and (width, height) != (info.width, info.height):
                report.add("size_mismatch", raw.source, "annotated %dx%d, image %dx%d"
                           % (width, height, info.width, info.height))
            width, height = info.width, info.height
        if not (width and height):
            report.add("bad_annotation", raw.source, "no image size and check_images='none'")
            continue
        if info.notes:
            report.add("converted_image", raw.path, ", ".join(info.notes))
        boxes, keep, changed = sanitize_boxes(raw.boxes, width, height)
        for i in np.flatnonzero(changed):
            report.add("clipped_box", raw.source, "object %d" % i)
        for i in np.flatnonzero(~keep):
            report.add("dropped_box", raw.source, "object %d %s" % (i, np.round(raw.boxes[i], 1).tolist()))
        if not keep.any():
            report.add("no_objects", raw.source)
        records.append(Record(path=raw.path, width=int(width), height=int(height), boxes=boxes[keep],
                              classes=np.asarray(raw.classes)[keep], difficult=np.asarray(raw.difficult)[keep],
                              image_id=raw.image_id,
                              masks=None if raw.masks is None else raw.masks.select(np.flatnonzero(keep))))
    report.num_records += len(records)
    return records


def unknown_class_error(name, known, source):
    """The ValueError raised for a class name that is not in the class list."""
    return ValueError("%s: unknown class name %r. Known classes (%d): %s. Pass class_names= (a list, or a file "
                      "with one name per line) that includes it." % (source, name, len(known), ", ".join(known)))
