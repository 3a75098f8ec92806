"""Pack a dataset into MXNet RecordIO for ``mx.io.ImageDetRecordIter`` (``.lst`` + indexed ``.rec``/``.idx``).

Each record's label is the detection layout MXNet's detection iterators read::

    [header_width=2, label_width, cls, xmin, ymin, xmax, ymax, (difficult), cls, ...]

with corners normalised to [0, 1] by the image size and ``label_width`` 6 (with ``difficult``) or 5.
An image without objects gets one all ``-1`` row (the padding convention): ``ImageDetRecordIter`` fails
mid-epoch on a label without object rows (``label_width >= 7`` check), and padding rows are ignored
downstream. :func:`parse_detection_label` drops such rows again.
Images are decoded with :func:`ssdkit.dataset.image.load_image_rgb` (so gray, RGBA and PNG become RGB) and
re-encoded as JPEG. The ``.lst`` file (im2rec's ``index \\t label ... \\t path``) lists the same labels.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from ssdkit.dataset.image import ImageError, load_image_rgb
from ssdkit.dataset.records import Record
from ssdkit.dataset.validation import logger

HEADER_WIDTH = 2


@dataclass(frozen=True)
class PackResult:
    """Files written by :func:`pack_recordio` and what went in."""

    lst: str
    rec: str
    idx: str
    num_images: int
    num_objects: int
    skipped: tuple = ()   # image paths that failed to decode while packing


def detection_label(record, *, with_difficult=True):
    """The packed label of one record.

    Returns
    -------
    (2 + K * W,) float32 ``[2, W, cls, xmin, ymin, xmax, ymax, (difficult), ...]`` with W = 6 or 5,
    corners normalised by the record's width and height; K = 0 is written as one row of -1.
    """
    rows = record.normalized_label()
    if not with_difficult:
        rows = rows[:, :5]
    if len(rows) == 0:
        rows = np.full((1, rows.shape[1]), -1.0, np.float32)
    header = np.array([HEADER_WIDTH, rows.shape[1]], np.float32)
    return np.concatenate([header, rows.reshape(-1)]).astype(np.float32)


def parse_detection_label(label):
    """Inverse of :func:`detection_label`: (K, W) float32 object rows (K may be 0; -1 padding rows dropped)."""
    label = np.asarray(label, np.float32).reshape(-1)
    header_width, width = int(label[0]), int(label[1])
    body = label[header_width:]
    if width < 5 or body.size % width:
        raise ValueError("malformed detection label: header %s, %d values after it" % (label[:2], body.size))
    rows = body.reshape(-1, width)
    return rows[rows[:, 0] >= 0]


def write_lst(records, path, *, with_difficult=True):
    """Write an im2rec ``.lst``: ``index \\t label values ... \\t image path`` per record (index = position)."""
    with open(path, "w") as f:
        for index, rec in enumerate(records):
            label = detection_label(rec, with_difficult=with_difficult)
            f.write("%d\t%s\t%s\n" % (index, "\t".join("%.6g" % v for v in label), rec.path))


def _encode_jpeg(record, quality, max_side):
    """JPEG bytes of a record's image (RGB -> BGR for OpenCV), or the reason it cannot be packed."""
    try:
        image = load_image_rgb(record.path)
    except ImageError as err:
        return None, str(err)
    if (image.shape[1], image.shape[0]) != (record.width, record.height):
        return None, "%s is %dx%d but its record says %dx%d (changed since loading?)" % (
            record.path, image.shape[1], image.shape[0], record.width, record.height)
    if max_side and max(image.shape[:2]) > max_side:
        scale = max_side / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return (jpeg.tobytes(), "") if ok else (None, "JPEG encoding failed for %s" % record.path)


def pack_recordio(records, prefix, *, with_difficult=True, quality=95, max_side=None, workers=2):
    """Write ``prefix.lst``, ``prefix.rec`` and ``prefix.idx`` for a dataset.

    Parameters
    ----------
    records : iterable of Record (e.g. a DetectionDataset)
    prefix : str, output path without extension (folders are created)
    with_difficult : bool, pack the difficult flag as a 6th label column
    quality : int, JPEG quality of the re-encoded images
    max_side : int or None, downscale images whose longer side exceeds it (normalised labels are unchanged)
    workers : int, threads decoding and encoding images (records are written in order)

    Returns
    -------
    PackResult. An image that cannot be packed (it passed loading, so it changed on disk since) is skipped
    with a warning and listed in ``skipped``; record ids stay contiguous.
    """
    import mxnet as mx

    records = list(records)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    paths = {ext: prefix + ext for ext in (".lst", ".rec", ".idx")}
    written, skipped, num_objects = [], [], 0
    writer = mx.recordio.MXIndexedRecordIO(paths[".idx"], paths[".rec"], "w")
    chunk = 64 * max(1, workers)  # bounds the encoded images held in memory
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for start in range(0, len(records), chunk):
                part = records[start:start + chunk]
                for rec, (jpeg, error) in zip(part, pool.map(lambda r: _encode_jpeg(r, quality, max_side), part)):
                    if jpeg is None:
                        logger.warning("pack_recordio: skipping %s", error)
                        skipped.append(rec.path)
                        continue
                    index = len(written)
                    label = detection_label(rec, with_difficult=with_difficult)
                    header = mx.recordio.IRHeader(flag=len(label), label=label, id=index, id2=0)
                    writer.write_idx(index, mx.recordio.pack(header, jpeg))
                    written.append(rec)
                    num_objects += rec.num_objects
    finally:
        writer.close()
    write_lst(written, paths[".lst"], with_difficult=with_difficult)
    logger.info("pack_recordio: %d images, %d objects -> %s.rec%s", len(written), num_objects, prefix,
                " (%d skipped)" % len(skipped) if skipped else "")
    return PackResult(lst=paths[".lst"], rec=paths[".rec"], idx=paths[".idx"], num_images=len(written),
                      num_objects=num_objects, skipped=tuple(skipped))


def read_recordio(prefix):
    """Read a packed detection RecordIO back as records (for checks; images are not decoded).

    Returns
    -------
    list of Record with ``path`` = ``prefix.rec#<index>``, width/height from the stored JPEG header and
    pixel boxes from the normalised label (difficult from column 6 when present).
    """
    import mxnet as mx

    reader = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "r")
    out = []
    try:
        for key in sorted(reader.keys):
            header, payload = mx.recordio.unpack(reader.read_idx(key))
            image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
            height, width = image.shape[:2]
            rows = parse_detection_label(header.label)
            scale = np.array([width, height, width, height], np.float32)
            difficult = rows[:, 5] > 0.5 if rows.shape[1] > 5 else np.zeros(len(rows), bool)
            out.append(Record(path="%s.rec#%d" % (prefix, key), width=width, height=height,
                              boxes=rows[:, 1:5] * scale, classes=rows[:, 0].astype(np.int32),
                              difficult=difficult, image_id=str(int(header.id))))
    finally:
        reader.close()
    return out
