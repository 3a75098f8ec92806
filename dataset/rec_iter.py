"""Training / validation batches from a ``.rec`` file through MXNet's C++ ``ImageDetRecordIter``.

``ImageDetRecordIter`` silently ignores keyword arguments it does not know (``rand_crop=1`` switches
nothing on and raises nothing), so every keyword built here is checked against the parameter list the
C++ iterator itself documents (:func:`accepted_keywords`) before the iterator is created.

Labels come out of the C++ iterator as ``[n_extra, H, W, raw_len, header_width, object_width,
cls, xmin, ymin, xmax, ymax, difficult, ...]`` padded with -1; :class:`RecordDetIter` strips the
leading values and returns ``(B, M, 6)`` rows like :class:`~ssdkit.dataset.folder_iter.FolderDetIter`.

The C++ iterator cannot skip or count a damaged record, so :class:`RecordDetIter` first checks the file
with :func:`ssdkit.dataset.rec_check.check_recordio` (framing, header, label, image end marker) and
reads a clean copy when records had to be skipped; the same pass finds the largest object count, which
sets the label padding ``M``.
"""
import functools
import re

import mxnet as mx
import numpy as np

from ssdkit.dataset.augment import NO_AUGMENT, Normalization
from ssdkit.dataset.det_iter import DetectionIter
from ssdkit.dataset.rec_check import check_recordio
from ssdkit.dataset.records import LABEL_WIDTH
from ssdkit.dataset.validation import DataError


@functools.lru_cache(maxsize=1)
def accepted_keywords():
    """The keyword names ``mx.io.ImageDetRecordIter`` accepts, read from its generated docstring.

    Returns
    -------
    frozenset of str
    """
    doc = mx.io.ImageDetRecordIter.__doc__
    if isinstance(doc, bytes):
        doc = doc.decode()
    names = frozenset(re.findall(r"^(\w+) : ", doc or "", flags=re.MULTILINE))
    if "rand_crop_prob" not in names or "data_shape" not in names:
        raise RuntimeError("cannot read ImageDetRecordIter's parameter list from its docstring; "
                           "this MXNet build is not supported")
    return names


def check_keywords(kwargs):
    """Raise ``ValueError`` naming every key of ``kwargs`` that ImageDetRecordIter would ignore."""
    unknown = sorted(set(kwargs) - accepted_keywords())
    if unknown:
        raise ValueError("ImageDetRecordIter does not accept %s (it would ignore them silently); "
                         "see help(mx.io.ImageDetRecordIter) for the valid names" % unknown)


def det_record_iter_kwargs(augment, normalization):
    """Translate an :class:`~ssdkit.dataset.augment.Augmentation` into ImageDetRecordIter keywords.

    Geometry maps one to one: each :class:`CropSampler` becomes one C++ crop sampler (IoU range,
    scale range, aspect range, trials), ``rand_crop_prob = n / (n + 1)`` for ``n`` samplers (the
    numpy pipeline picks uniformly among the samplers and the whole image), zoom-out becomes random
    padding, mirror maps directly. Photometric distortion is approximate: the C++ iterator works in
    8-bit HLS (hue units of 2 degrees, additive saturation and lightness) and fills padding with
    one grey level, the rounded mean of the normalisation means.

    Returns
    -------
    dict of keyword -> value, all in :func:`accepted_keywords`.
    """
    a = augment
    kw = {"mean_r": normalization.mean[0], "mean_g": normalization.mean[1],
          "mean_b": normalization.mean[2], "std_r": normalization.std[0],
          "std_g": normalization.std[1], "std_b": normalization.std[2],
          "inter_method": 1, "resize_mode": "force"}
    samplers = a.crop_samplers
    if samplers:
        n = len(samplers)
        kw.update(
            rand_crop_prob=n / (n + 1.0), num_crop_sampler=n,
            min_crop_scales=tuple(s.min_scale for s in samplers),
            max_crop_scales=tuple(s.max_scale for s in samplers),
            min_crop_aspect_ratios=tuple(s.min_aspect for s in samplers),
            max_crop_aspect_ratios=tuple(s.max_aspect for s in samplers),
            min_crop_overlaps=tuple(0.0 if s.min_iou is None else s.min_iou for s in samplers),
            max_crop_overlaps=tuple(1.0 if s.max_iou is None else s.max_iou for s in samplers),
            max_crop_trials=tuple(s.max_trials for s in samplers),
            crop_emit_mode="center")
    if a.expand_prob > 0 and a.max_expand_ratio > 1:
        kw.update(rand_pad_prob=a.expand_prob, max_pad_scale=a.max_expand_ratio,
                  fill_value=int(round(float(np.mean(normalization.mean)))))
    if a.mirror_prob > 0:
        kw["rand_mirror_prob"] = a.mirror_prob
    if a.distort_prob > 0:
        kw.update(random_illumination_prob=a.distort_prob,
                  max_random_illumination=int(round(a.brightness_delta)),
                  random_contrast_prob=a.distort_prob,
                  max_random_contrast=float(a.contrast_range[1] - 1.0),
                  random_saturation_prob=a.distort_prob,
                  max_random_saturation=int(round(64 * (a.saturation_range[1] - 1.0))),
                  random_hue_prob=a.distort_prob,
                  max_random_hue=int(round(a.hue_delta / 2.0)))
    check_keywords(kw)
    return kw


def strip_det_labels(raw, max_objects, object_width=LABEL_WIDTH):
    """ImageDetRecordIter batch labels -> ``(B, M, 6)`` rows
    ``[cls, xmin, ymin, xmax, ymax, difficult]``.

    Parameters
    ----------
    raw : (B, L) float32 C++ iterator labels ``[n_extra, extras..., header_width, object_width,
        objects..., -1...]``
    max_objects : int, M
    object_width : int, values per object in the record (5 or 6; a 5-wide record gets difficult 0)

    Returns
    -------
    (B, M, 6) float32 padded with -1 rows.
    """
    raw = np.asarray(raw, dtype=np.float32)
    out = np.full((raw.shape[0], max_objects, LABEL_WIDTH), -1.0, np.float32)
    for i, row in enumerate(raw):
        start = 1 + int(row[0])  # after the C++ extras
        header_width, width = int(row[start]), int(row[start + 1])
        if width != object_width:
            raise ValueError("record object width %d, expected %d; pack .rec labels as "
                             "[2, %d, cls, xmin, ymin, xmax, ymax, ...]"
                             % (width, object_width, object_width))
        objects = row[start + header_width:start + header_width + max_objects * width]
        objects = objects.reshape(-1, width)
        objects = objects[objects[:, 0] >= 0]
        n = min(len(objects), max_objects)
        out[i, :n, :min(width, LABEL_WIDTH)] = objects[:n, :LABEL_WIDTH]
        if width < LABEL_WIDTH:
            out[i, :n, width:] = 0.0
    return out


class RecordDetIter(DetectionIter):
    """Detection batches from a ``.rec`` file via ``mx.io.ImageDetRecordIter``.

    Parameters
    ----------
    path_imgrec : str, the ``.rec`` file (labels ``[2, object_width, cls, x1, y1, x2, y2, ...]``
        normalised to [0, 1])
    batch_size : int, B
    data_shape : (3, H, W)
    max_objects : int or None, the least label rows M; M grows to the largest object count in the file
        (found by the load-time check), so no record is refused for holding many objects
    augment : Augmentation or None; None (or ``NO_AUGMENT``) is the validation transform
    normalization : Normalization, the same ``(rgb - mean) / std`` as FolderDetIter
    shuffle : bool
    seed : int, the C++ iterator's seed
    num_threads : int, C++ decode / augment threads
    object_width : int, values per object in the records (6 with difficult, 5 without)
    num_parts, part_index : shard the file (distributed training)
    data_name, label_name : names in ``provide_data`` / ``provide_label``
    extra : dict or None, further ImageDetRecordIter keywords (e.g. ``{"inter_method": 2}``),
        checked against :func:`accepted_keywords` like every other keyword
    num_classes : int or None, records with a class outside ``[0, num_classes)`` are skipped
    strict : bool, a damaged or inconsistent record raises
        :class:`~ssdkit.dataset.validation.DataError` naming it instead of being skipped
    check_images, clean_prefix : see :func:`ssdkit.dataset.rec_check.check_recordio`

    Damaged records (unreadable framing or header, unusable label, truncated or undecodable image
    bytes) are found before the C++ iterator starts and skipped with a counted warning naming each
    (``check.report``); the iterator then reads a clean copy of the file (``check.path``). Should the
    C++ iterator still fail (an image that passes the end-marker check but does not decode: use
    ``check_images="decode"``), ``next`` raises a ``DataError`` naming the file and the fix.

    Batches hold ``data (B, 3, H, W)`` float32 and ``label (B, M, 6)`` float32 rows
    ``[cls, xmin, ymin, xmax, ymax, difficult]`` padded with -1 rows. Every epoch starts at the
    beginning of the file; an incomplete last batch is filled with repeated samples and ``pad``
    says how many.
    """

    def __init__(self, path_imgrec, *, batch_size, data_shape, max_objects=None, augment=None,
                 normalization=Normalization(), shuffle=False, seed=0, num_threads=2,
                 object_width=LABEL_WIDTH, num_parts=1, part_index=0,
                 data_name="data", label_name="label", extra=None, num_classes=None, strict=False,
                 check_images="marker", clean_prefix=None):
        super().__init__(batch_size)
        augment = NO_AUGMENT if augment is None else augment
        check_keywords(extra or {})  # a typo is reported before the file is read
        self.check = check_recordio(path_imgrec, num_classes=num_classes, object_width=object_width,
                                    check_images=check_images, strict=strict, clean_prefix=clean_prefix)
        self.max_objects = max(int(max_objects or 1), self.check.max_objects)
        self.object_width = int(object_width)
        self.data_shape = tuple(int(v) for v in data_shape)
        self.data_name, self.label_name = data_name, label_name
        kwargs = det_record_iter_kwargs(augment, normalization)
        kwargs.update(path_imgrec=self.check.path, batch_size=batch_size, data_shape=self.data_shape,
                      label_width=-1, label_pad_width=2 + self.object_width * self.max_objects,
                      label_pad_value=-1.0, shuffle=bool(shuffle), seed=int(seed),
                      preprocess_threads=int(num_threads), num_parts=int(num_parts),
                      part_index=int(part_index), round_batch=False, verbose=False)
        kwargs.update(extra or {})
        check_keywords(kwargs)
        self.kwargs = kwargs
        self._iter = self._call(lambda: mx.io.ImageDetRecordIter(**kwargs))

    def _call(self, method):
        try:
            return method()
        except mx.base.MXNetError as err:
            detail = str(err).strip().splitlines()[-1]
            if "label_pad_width" in detail:
                fix = ("A record holds more than max_objects=%d objects; raise max_objects."
                       % self.max_objects)
            else:
                fix = ("The C++ iterator cannot skip a record whose image does not decode. Check the file "
                       "with check_images='decode' (ssdkit.dataset.rec_check.check_recordio: records whose "
                       "image does not decode are then skipped with a count), re-pack it with "
                       "ssdkit.dataset.recordio.pack_recordio (it decodes every image first) or train from "
                       "the image files with FolderDetIter.")
            raise DataError("ImageDetRecordIter failed reading %s: %s\n%s"
                            % (self.kwargs["path_imgrec"], detail, fix)) from err

    def reset(self):
        self._call(self._iter.reset)

    def next(self):
        batch = self._call(self._iter.next)
        label = strip_det_labels(batch.label[0].asnumpy(), self.max_objects, self.object_width)
        return mx.io.DataBatch(data=batch.data, label=[mx.nd.array(label)], pad=batch.pad,
                               provide_data=self.provide_data, provide_label=self.provide_label)
