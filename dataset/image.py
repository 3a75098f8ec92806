"""Image decoding shared by the readers (load-time checks), the RecordIO packer and the iterators."""
import os
from dataclasses import dataclass

import cv2
import numpy as np

CHECK_MODES = ("decode", "header", "none")
"""How readers check images at load time: full decode (nothing can fail later), header only, or existence."""


class ImageError(ValueError):
    """An image file is missing or cannot be decoded.

    ``path`` names it and ``reason`` is ``missing``, ``corrupt`` or ``truncated`` (the file ends before
    the image does: a decoder would return a partly grey picture).
    """

    def __init__(self, path, reason, detail=""):
        self.path = path
        self.reason = reason
        what = {"missing": "not found", "truncated": "is truncated"}.get(reason, "cannot be decoded as an image")
        super().__init__("image %s %s%s" % (path, what, ": " + detail if detail else ""))


@dataclass(frozen=True)
class ImageInfo:
    """What a load-time check learned about an image file.

    ``notes`` lists conversions :func:`load_image_rgb` applies (``grayscale``, ``alpha``, ``16-bit``) and the
    container when it is not JPEG (e.g. ``png``); empty for an ordinary 8-bit RGB JPEG.
    """

    width: int
    height: int
    notes: tuple = ()


_END_MARKERS = {"jpeg": b"\xff\xd9", "png": b"IEND\xaeB`\x82"}
"""The bytes a complete file of each container ends with (JPEG EOI marker, PNG IEND chunk with its CRC)."""


def _read_bytes(path):
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ImageError(path, "missing") from None
    except OSError as err:
        raise ImageError(path, "corrupt", str(err)) from None
    if data.size == 0:
        raise ImageError(path, "corrupt", "empty file")
    return data


def _read_tail(path, size=64):
    """The first 12 and the last ``size`` bytes of a file when they show the end marker (enough for
    :func:`check_complete`), else the whole file, so that it can look further."""
    with open(path, "rb") as f:
        head = f.read(12)
        f.seek(0, os.SEEK_END)
        f.seek(max(12, f.tell() - size))
        tail = f.read()
    if has_end_marker(head, tail):
        return np.frombuffer(head + tail, np.uint8)
    return _read_bytes(path)


def container_of(data):
    """The container of encoded image bytes from their signature: ``jpeg``, ``png``, ``webp``, ``bmp`` or
    ``other``; ``data`` is a uint8 array or bytes (the first 12 bytes suffice)."""
    data = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    head = data[:12].tobytes()
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head.startswith(b"\x89PNG"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    return "other"


def has_end_marker(head, tail):
    """Whether encoded image bytes look complete from their ends alone (no decode).

    Parameters
    ----------
    head : bytes, at least the first 12 bytes of the image (the container signature)
    tail : bytes, the last bytes of the image (at least 12)

    Returns
    -------
    True for a JPEG ending with ``FF D9``, a PNG ending with its ``IEND`` chunk, or another container
    (not checked by markers); False when the marker is not last (:func:`check_complete` then decides).
    """
    marker = _END_MARKERS.get(container_of(bytes(head[:12])))
    return marker is None or bytes(tail).endswith(marker)


def check_complete(path, data):
    """Raise ImageError(reason ``truncated``) when encoded image bytes end before the image does.

    OpenCV decodes a JPEG cut half-way, or one whose end was overwritten, without an error (the missing
    rows come out grey or as noise), and so does Pillow for a damaged end; the decoders' success says
    nothing. A complete JPEG holds its EOI marker ``FF D9`` after its last scan (``FF DA``), a complete PNG
    its ``IEND`` chunk. Usually they are the last bytes; bytes appended after them (camera trailers,
    padding) are allowed. Other containers are not checked here (their decoders fail on truncation).

    Parameters
    ----------
    path : str, the file named in the error (or a record, e.g. ``train.rec record 12``)
    data : (N,) uint8 array or bytes, the encoded image

    Returns
    -------
    str, the container (see :func:`container_of`).
    """
    raw = data if isinstance(data, np.ndarray) else np.frombuffer(bytes(data), np.uint8)
    container = container_of(raw[:12])
    marker = _END_MARKERS.get(container)
    if marker is None or raw[-len(marker):].tobytes() == marker:  # the usual case: no copy of the image
        return container
    data = raw.tobytes()
    if container == "jpeg":
        last_scan = data.rfind(b"\xff\xda")
        if last_scan != -1 and data.find(marker, last_scan) != -1:
            return container
        raise ImageError(path, "truncated", "no JPEG end marker FFD9 after the image data (the file is cut "
                         "short or its end is damaged)")
    if marker in data:
        return container
    raise ImageError(path, "truncated", "no PNG IEND chunk (the file is cut short or its end is damaged)")


def _decode(path, data):
    """(H, W, C) or (H, W) array as stored, and the conversions to RGB it needs."""
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageError(path, "corrupt")
    check_complete(path, data)  # after the decode: a file that decodes only partly is "truncated"
    notes = []
    if img.ndim == 2 or img.shape[2] == 1:
        notes.append("grayscale")
    elif img.shape[2] == 4:
        notes.append("alpha")
    elif img.shape[2] != 3:
        raise ImageError(path, "corrupt", "%d channels" % img.shape[2])
    if img.dtype != np.uint8:
        notes.append("16-bit" if img.dtype == np.uint16 else str(img.dtype))
    container = container_of(data)
    if container != "jpeg":
        notes.append(container)
    return img, tuple(notes)


def load_image_rgb(path):
    """Decode an image file to RGB.

    Grayscale, RGBA (alpha dropped), 16-bit (scaled to 8 bits), PNG and other formats OpenCV reads are
    converted.

    Parameters
    ----------
    path : str

    Returns
    -------
    (H, W, 3) uint8 RGB array.

    Raises
    ------
    ImageError naming the file when it is missing or cannot be decoded.
    """
    img, _notes = _decode(path, _read_bytes(path))
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    code = cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(img, code)


def inspect_image(path, mode="decode"):
    """Check an image file at load time.

    Parameters
    ----------
    path : str
    mode : one of :data:`CHECK_MODES`. ``decode`` decodes the whole image (a record that passes cannot fail
        to decode later), ``header`` reads only the header with Pillow, ``none`` only tests that the file
        exists (size then unknown: width = height = 0).

    Returns
    -------
    ImageInfo

    Raises
    ------
    ImageError naming the file.
    """
    if mode not in CHECK_MODES:
        raise ValueError("check_images=%r; expected one of %s" % (mode, ", ".join(CHECK_MODES)))
    if mode == "none":
        if not os.path.isfile(path):
            raise ImageError(path, "missing")
        return ImageInfo(0, 0)
    if mode == "header":
        from PIL import Image, UnidentifiedImageError

        if not os.path.isfile(path):
            raise ImageError(path, "missing")
        try:
            with Image.open(path) as im:
                width, height, pil_mode, fmt = im.width, im.height, im.mode, (im.format or "other").lower()
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ImageError(path, "corrupt", str(err)) from None
        check_complete(path, _read_tail(path))
        notes = {"L": ("grayscale",), "LA": ("grayscale", "alpha"), "RGBA": ("alpha",),
                 "I;16": ("grayscale", "16-bit"), "P": ("palette",)}.get(pil_mode, ())
        return ImageInfo(width, height, notes + (() if fmt == "jpeg" else (fmt,)))
    img, notes = _decode(path, _read_bytes(path))
    return ImageInfo(int(img.shape[1]), int(img.shape[0]), notes)
