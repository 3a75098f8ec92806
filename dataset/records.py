"""The one record format every ssdkit dataset reader produces and every iterator consumes.

Pixel boxes are continuous 0-based corners: a box covering pixel columns ``x0 .. x1`` (inclusive)
is ``xmin = x0, xmax = x1 + 1``. Pascal VOC xml (1-based inclusive) converts as
``(xmin - 1, ymin - 1, xmax, ymax)``; COCO ``[x, y, w, h]`` as ``(x, y, x + w, y + h)``.
"""
from dataclasses import dataclass, field

import numpy as np

LABEL_WIDTH = 6
"""Columns of a packed object row: ``[cls, xmin, ymin, xmax, ymax, difficult]``."""


@dataclass(frozen=True)
class Record:
    """One annotated image.

    Attributes
    ----------
    path : str, image file
    width, height : int, image size in pixels
    boxes : (K, 4) float32 pixel corners ``(xmin, ymin, xmax, ymax)`` (see module docstring)
    classes : (K,) int32 0-based class ids
    difficult : (K,) bool, VOC "difficult" flags (False where the source has none)
    image_id : str, identifier within its dataset (VOC file stem, COCO image id)
    masks : None or a mask source of the K objects (lazy, see :mod:`ssdkit.dataset.masks`;
        :func:`ssdkit.dataset.masks.decode_masks` gives the ``(K, H, W)`` uint8 masks)
    """

    path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    image_id: str = ""
    masks: object = None

    def __post_init__(self):
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        classes = np.asarray(self.classes, dtype=np.int32).reshape(-1)
        difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if not (len(boxes) == len(classes) == len(difficult)):
            raise ValueError("record %s: %d boxes, %d classes and %d difficult flags differ"
                             % (self.path, len(boxes), len(classes), len(difficult)))
        if self.masks is not None and len(self.masks) != len(classes):
            raise ValueError("record %s: %d masks for %d objects" % (self.path, len(self.masks), len(classes)))
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "difficult", difficult)

    @property
    def num_objects(self):
        return len(self.classes)

    def normalized_label(self):
        """``(K, 6)`` float32 rows ``[cls, xmin, ymin, xmax, ymax, difficult]``, corners in [0, 1]."""
        scale = np.array([self.width, self.height, self.width, self.height], np.float32)
        return np.concatenate([self.classes[:, None].astype(np.float32), self.boxes / scale,
                               self.difficult[:, None].astype(np.float32)], axis=1)


def pad_labels(labels, max_objects):
    """Stack per-image labels into a padded batch.

    Parameters
    ----------
    labels : list of (K_i, W) float32 arrays
    max_objects : int, M; images with more objects raise ValueError

    Returns
    -------
    (B, M, W) float32, rows past K_i filled with -1.
    """
    width = labels[0].shape[1] if labels else LABEL_WIDTH
    out = np.full((len(labels), max_objects, width), -1.0, dtype=np.float32)
    for i, lab in enumerate(labels):
        if len(lab) > max_objects:
            raise ValueError("image %d has %d objects but the batch holds %d; raise max_objects"
                             % (i, len(lab), max_objects))
        out[i, :len(lab)] = lab
    return out
