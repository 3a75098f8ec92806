"""A validating pass over a detection RecordIO file before MXNet's C++ ``ImageDetRecordIter`` reads it.

The C++ iterator reads a ``.rec`` file front to back and cannot skip or count what it cannot use: a
damaged stretch of the file, a label whose class is 99 of 6 or a coordinate that is NaN are trained on
or stop the run. :func:`check_recordio` therefore reads the file once (memory-mapped; it touches the
record headers, the labels and the first and last bytes of each image, so a clean pass is fast even
for large files) and checks every record:

=====================================  ===========================================================
problem                                report kind (record skipped)
=====================================  ===========================================================
bytes that are not a record (zeroed    ``bad_record``, one per ``.idx`` key whose record starts in
or overwritten block, cut file)        the damaged stretch (one per stretch without an ``.idx``)
record header / label cannot be read   ``bad_record``
label layout, class outside            ``bad_label``
``[0, num_classes)``, non-finite or
out-of-image coordinate, inverted box
image bytes empty / not an image       ``corrupt_image``
image without its end marker           ``truncated_image`` (JPEG ``FFD9`` after the last scan /
                                       PNG ``IEND``: the end is cut or damaged)
=====================================  ===========================================================

Records are named ``<file> record <key>`` (the ``.idx`` key, or the position in the file when there is
no ``.idx``) with the byte offset. When something was skipped, the good records are copied verbatim to a
clean ``.rec`` / ``.idx`` pair that the iterator reads instead (the C++ iterator has no index
parameter); a clean file is used as it is. ``strict=True`` raises
:class:`~ssdkit.dataset.validation.DataError` instead of skipping (see
:meth:`~ssdkit.dataset.validation.LoadReport.finish`).

RecordIO framing (dmlc): each part is ``uint32 magic 0xced7230a, uint32 (cflag << 29 | length)``, then
``length`` bytes padded to 4. A record whose payload holds the magic at a 4-aligned position is split
there into parts (cflag 1 first, 2 middle, 3 last; 0 a whole record) and the magic is left out, so a
valid payload never holds an aligned magic. The payload starts with MXNet's ``IRHeader``
``(uint32 flag, float32 label, uint64 id, uint64 id2)``; ``flag > 0`` floats of label follow, then the
encoded image.
"""
import bisect
import math
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np

from ssdkit.dataset.image import CHECK_MODES, ImageError, check_complete, container_of, has_end_marker
from ssdkit.dataset.records import LABEL_WIDTH
from ssdkit.dataset.validation import LoadReport, image_error_kind, logger

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_HEADER = struct.Struct("<IfQQ")
COORD_TOLERANCE = 0.01
"""How far outside [0, 1] a normalised corner may lie before its label is refused (rounding slack)."""


@dataclass(frozen=True)
class RecordCheck:
    """What :func:`check_recordio` found.

    Attributes
    ----------
    path : str, the ``.rec`` to read: the checked file, or the clean copy when records were skipped
    source : str, the checked file
    num_records : int, good records
    max_objects : int, the largest object count of a good record (at least 1)
    report : LoadReport, counts and names of the skipped records
    """

    path: str
    source: str
    num_records: int
    max_objects: int
    report: LoadReport


class _Damaged(Exception):
    """The bytes at a position are not a well-framed record."""


def _next_magic(buf, start):
    """The first 4-aligned position >= ``start`` holding the magic, or ``len(buf)``."""
    start += -start % 4
    i = buf.find(MAGIC_BYTES, start)
    while i != -1 and i % 4:
        i = buf.find(MAGIC_BYTES, i + 1)
    return len(buf) if i == -1 else i


def _read_frame(buf, pos):
    """Parse the (possibly multi-part) record at ``pos``.

    Returns
    -------
    end : int, the position after the record
    payload : (source, start, stop), the payload as a range of ``source`` (``buf`` for a one-part
        record, the joined bytes of a multi-part one)

    Raises ``_Damaged`` with the reason when the framing is broken.
    """
    size = len(buf)
    parts, cur = [], pos
    while True:
        if cur + 8 > size:
            raise _Damaged("cut short by the end of the file")
        magic, lrec = struct.unpack_from("<II", buf, cur)
        if magic != MAGIC:
            raise _Damaged("part header at byte %d damaged" % cur)
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        if cflag not in ((0, 1) if not parts else (2, 3)):
            raise _Damaged("part flag %d where a %s part belongs" % (cflag, "first" if not parts else "next"))
        if cur + 8 + length > size:
            raise _Damaged("length %d runs past the end of the file" % length)
        parts.append((cur + 8, cur + 8 + length))
        cur += 8 + length + (-length % 4)
        if cflag in (0, 3):
            break
    if cur < size and buf[cur:cur + 4] != MAGIC_BYTES:
        # either this record's length is wrong or the next header is damaged: a valid payload never
        # holds an aligned magic, so one inside this record means its own length is wrong
        for start, stop in parts:
            inside = _next_magic(buf, start)
            if inside < stop:
                raise _Damaged("length field damaged (a record header at byte %d lies inside)" % inside)
    if len(parts) == 1:
        return cur, (buf, parts[0][0], parts[0][1])
    joined = MAGIC_BYTES.join(buf[a:b] for a, b in parts)
    return cur, (joined, 0, len(joined))


def scan_frames(buf):
    """Walk a RecordIO byte buffer front to back.

    Yields
    ------
    ``(start, end, payload)`` for every well-framed record (``payload`` as from :func:`_read_frame`) and
    ``(start, end, reason)`` with a ``str`` reason for every damaged stretch; together they cover the
    buffer without gaps. After a damaged stretch the scan resumes at the next aligned magic.
    """
    pos, size = 0, len(buf)
    while pos < size:
        try:
            end, payload = _read_frame(buf, pos)
        except _Damaged as err:
            end = _next_magic(buf, pos + 4)
            yield pos, end, str(err)
            pos = end
            continue
        yield pos, end, payload
        pos = end


def label_problem(label, *, num_classes=None, object_width=LABEL_WIDTH):
    """Check one packed detection label ``[header_width, width, cls, xmin, ymin, xmax, ymax, ...]``.

    Parameters
    ----------
    label : (L,) float32, the record's label
    num_classes : int or None, classes must lie in ``[0, num_classes)`` (None: only ``>= 0``)
    object_width : int, the values per object the iterator expects (6 with difficult, 5 without)

    Returns
    -------
    (num_objects, problem) : the object rows (padding rows of -1 not counted) and a message, or None
    when the label is usable.
    """
    label = np.asarray(label, np.float32).reshape(-1)
    if label.size < 2:
        return 0, "label of %d value(s), not a detection label [header_width, width, cls, xmin, ...]" % label.size
    if not np.isfinite(label[:2]).all():
        return 0, "non-finite label header %s" % label[:2].tolist()
    header_width, width = label[0], label[1]
    if header_width != int(header_width) or header_width < 2 or width != int(width) or width < 5:
        return 0, "malformed label header [%g, %g], expected [2, %d]" % (header_width, width, object_width)
    header_width, width = int(header_width), int(width)
    if width != object_width:
        return 0, "objects of %d values, the iterator expects %d" % (width, object_width)
    body = label[header_width:]
    if body.size == 0 or body.size % width:
        return 0, "%d values after the header do not make rows of %d" % (body.size, width)
    rows = body.reshape(-1, width)
    bad = ~np.isfinite(rows).all(1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        return 0, "object %d has a non-finite value %s" % (k, rows[k].tolist())
    padding = (rows == -1).all(1)
    objects = rows[~padding]
    cls = objects[:, 0]
    wrong = (cls != np.floor(cls)) | (cls < 0)
    if num_classes is not None:
        wrong |= cls >= num_classes
    if wrong.any():
        k = int(np.flatnonzero(wrong)[0])
        return 0, "object %d has class %g, outside [0, %s)" % (k, cls[k], num_classes if num_classes else "inf")
    box = objects[:, 1:5]
    outside = ((box < -COORD_TOLERANCE) | (box > 1 + COORD_TOLERANCE)).any(1)
    inverted = (box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1])
    if (outside | inverted).any():
        k = int(np.flatnonzero(outside | inverted)[0])
        return 0, "object %d has corners %s, %s" % (k, box[k].round(4).tolist(),
                                                     "outside [0, 1]" if outside[k] else "inverted or empty")
    return len(objects), None


def _count_if_valid(values, num_classes, object_width):
    """The object count of a label that :func:`label_problem` accepts, or None when it may not (then
    :func:`label_problem` gives the reason). Plain Python over the floats: for labels of a few dozen values
    it is several times faster than numpy, which matters on files of a million records."""
    if len(values) < 2 + object_width or values[0] != 2 or values[1] != object_width:
        return None
    if (len(values) - 2) % object_width:
        return None
    limit = math.inf if num_classes is None else num_classes
    low, high = -COORD_TOLERANCE, 1 + COORD_TOLERANCE
    count = 0
    for start in range(2, len(values), object_width):
        row = values[start:start + object_width]
        if not all(map(math.isfinite, row)):
            return None
        cls, x0, y0, x1, y1 = row[:5]
        if cls == -1 and all(v == -1 for v in row):
            continue
        if not (0 <= cls < limit and cls == int(cls) and low <= x0 < x1 <= high and low <= y0 < y1 <= high):
            return None
        count += 1
    return count


def _check_image(name, source, start, stop, mode):
    """Raise ImageError when the image bytes ``source[start:stop]`` are unusable (``mode``: see
    :func:`check_recordio`). JPEG and PNG ending with their end marker pass ``marker`` without a decode
    (otherwise :func:`ssdkit.dataset.image.check_complete` looks further); other containers are decoded."""
    if stop - start < 16:
        raise ImageError(name, "corrupt", "%d image bytes" % (stop - start))
    if mode == "none":
        return
    head, tail = source[start:start + 12], source[stop - 16:stop]
    container = container_of(head)
    if mode == "marker" and container in ("jpeg", "png") and has_end_marker(head, tail):
        return
    data = np.frombuffer(source[start:stop], np.uint8)
    if mode == "decode" or container not in ("jpeg", "png"):
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if image is None or image.size == 0:
            raise ImageError(name, "corrupt", "not a decodable image (starts with %s)" % bytes(head[:4]).hex())
    check_complete(name, data)


def _read_index(path_idx):
    """``[(offset, key)]`` sorted by offset from an ``.idx`` (``key \\t offset`` lines), or [] if absent."""
    if not os.path.isfile(path_idx):
        return []
    pairs = []
    with open(path_idx) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 2:
                try:
                    pairs.append((int(fields[1]), fields[0]))
                except ValueError:
                    continue
    return sorted(pairs)


def _clean_prefix(path):
    """``<path without .rec>.clean`` when its folder is writable, else one in a new temporary folder."""
    prefix = os.path.splitext(path)[0] + ".clean"
    if os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        return prefix
    return os.path.join(tempfile.mkdtemp(prefix="ssdkit-rec-"), os.path.basename(prefix))


def check_recordio(path_imgrec, *, num_classes=None, object_width=LABEL_WIDTH, check_images="marker",
                   strict=False, clean_prefix=None):
    """Check every record of a detection ``.rec`` file; skip (or, strict, refuse) the unusable ones.

    Parameters
    ----------
    path_imgrec : str, the ``.rec`` file (its ``.idx``, when present, names the records by key)
    num_classes : int or None, labels with a class outside ``[0, num_classes)`` are refused
    object_width : int, values per object (6 with difficult, 5 without)
    check_images : ``marker`` (default: JPEG / PNG images must hold their end marker, others are decoded),
        ``decode`` (decode every image) or ``none`` (image bytes present)
    strict : bool, raise DataError naming every damaged record instead of skipping it
    clean_prefix : str or None, where the clean copy goes when records are skipped (``.rec`` and ``.idx``
        are added); default ``<file>.clean`` beside the file (a temporary folder if that is read-only)

    Returns
    -------
    RecordCheck; the summary is logged (logger ``ssdkit.dataset``), WARNING when something was skipped.
    Raises DataError (a ValueError) in strict mode, or when no record is usable.
    """
    if check_images not in CHECK_MODES + ("marker",):
        raise ValueError("check_images=%r; expected marker, decode or none" % (check_images,))
    if check_images == "header":
        check_images = "marker"
    name = os.path.basename(path_imgrec)
    report = LoadReport("rec:%s" % path_imgrec, strict=strict)
    index = _read_index(os.path.splitext(path_imgrec)[0] + ".idx")
    offsets = [offset for offset, _ in index]
    keys = dict(index)
    good, max_objects, position = [], 0, 0
    with open(path_imgrec, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ValueError("%s is empty; pack it with ssdkit.dataset.recordio.pack_recordio" % path_imgrec)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            for start, end, payload in scan_frames(buf):
                if isinstance(payload, str):  # a damaged stretch: every indexed record starting in it is lost
                    lost = offsets[bisect.bisect_left(offsets, start):bisect.bisect_left(offsets, end)]
                    for offset in lost or [start]:
                        what = "record %s" % keys[offset] if offset in keys else "bytes %d-%d" % (start, end)
                        report.add("bad_record", "%s %s" % (name, what), "at byte %d: %s" % (offset, payload))
                    continue
                position += 1
                record = "%s record %s" % (name, keys.get(start, "#%d" % (position - 1)))
                kind, detail, count = _check_record(record, payload, num_classes, object_width, check_images)
                if kind is not None:
                    report.add(kind, record, "at byte %d: %s" % (start, detail))
                    continue
                good.append((start, end, keys.get(start, str(len(good)))))
                max_objects = max(max_objects, count)
            report.num_records = len(good)
            report.finish()
            path = path_imgrec
            if report.num_skipped:
                path = _write_clean(buf, good, clean_prefix or _clean_prefix(path_imgrec))
                logger.warning("%s: the %d good records were copied to %s, which the iterator reads",
                               path_imgrec, len(good), path)
    return RecordCheck(path=path, source=path_imgrec, num_records=len(good), max_objects=max(1, max_objects),
                       report=report)


def _check_record(record, payload, num_classes, object_width, check_images):
    """``(kind, detail, num_objects)`` of one framed record; kind None when it is usable."""
    source, start, stop = payload
    if stop - start < _IR_HEADER.size:
        return "bad_record", "payload of %d bytes, shorter than the record header" % (stop - start), 0
    flag, first, _id, _id2 = _IR_HEADER.unpack_from(source, start)
    label_stop = start + _IR_HEADER.size + 4 * flag
    if label_stop > stop:
        return "bad_record", "header announces %d label values, more than the record holds" % flag, 0
    if flag == 0:
        return "bad_label", "no detection label (a single label value %g)" % first, 0
    values = struct.unpack_from("<%df" % flag, source, start + _IR_HEADER.size)
    count = _count_if_valid(values, num_classes, object_width)
    if count is None:
        count, problem = label_problem(np.array(values, np.float32), num_classes=num_classes,
                                       object_width=object_width)
        if problem is not None:
            return "bad_label", problem, 0
    try:
        _check_image(record, source, label_stop, stop, check_images)
    except ImageError as err:
        return image_error_kind(err), str(err).split(": ", 1)[-1] if ": " in str(err) else err.reason, 0
    return None, "", count


def _write_clean(buf, good, prefix):
    """Copy the framed bytes of the ``good`` records ``[(start, end, key)]`` to ``prefix.rec`` and write
    ``prefix.idx``; returns the ``.rec`` path. Each file is written under a private name and renamed, so
    processes checking the same file at once (distributed workers) never read a half-written copy."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    temp = "%s.%d.tmp" % (prefix, os.getpid())
    with open(temp + ".rec", "wb") as rec, open(temp + ".idx", "w") as idx:
        for start, end, key in good:
            idx.write("%s\t%d\n" % (key, rec.tell()))
            rec.write(buf[start:end])
    os.replace(temp + ".idx", prefix + ".idx")
    os.replace(temp + ".rec", prefix + ".rec")
    return prefix + ".rec"
