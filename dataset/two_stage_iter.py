"""Batches for the two-stage (FPN / Mask R-CNN) detector: ``data``, ``im_info``, pixel ``label`` and optionally
instance masks ``gt_masks``.

:class:`TwoStageIter` is :class:`~ssdkit.dataset.folder_iter.FolderDetIter` (thread pool, per-sample
generators seeded by ``(seed, epoch, position)``, bad images skipped with a counted warning, ``pad``
/ ``discard`` last batch) with the transform of :mod:`ssdkit.dataset.two_stage` instead of the SSD one.
"""
import mxnet as mx
import numpy as np

from ssdkit.dataset.augment import Normalization
from ssdkit.dataset.folder_iter import FolderDetIter
from ssdkit.dataset.image import load_image_rgb
from ssdkit.dataset.masks import MaskError, decode_masks
from ssdkit.dataset.two_stage import (batch_shape, make_sample, mask_grid, pad_batch, pad_masks, resize_scale,
                                      two_stage_augment)


class TwoStageIter(FolderDetIter):
    """FPN batches from image files.

    Parameters
    ----------
    records : sequence of Record
    batch_size : int, B
    short, long : int, resize: short side ``short``, long side at most ``long``
        (see :func:`ssdkit.dataset.two_stage.resize_scale`)
    data_shape : (3, H, W) or None, the padded batch shape; default ``(3,) + batch_shape(short, long)``
        (a smaller one, e.g. landscape-only data, is checked against the records' sizes)
    max_objects : int or None, the least label rows M; M grows to the largest object count in ``records``
    augment : Augmentation or None; mirror and photometric settings only (zoom-out and crops raise,
        see :func:`ssdkit.dataset.two_stage.two_stage_augment`); None is the validation transform
    normalization, shuffle, seed, num_workers, last_batch, loader, strict : as for FolderDetIter
    data_name, im_info_name, label_name : names in ``provide_data`` / ``provide_label``
    masks : bool, also batch the records' instance masks (every record needs a mask source,
        see :func:`ssdkit.dataset.masks.decode_masks`; a mask that fails to decode skips its image like a bad
        image file)
    mask_stride : int, s: ``gt_masks`` is at ``1 / s`` of the padded batch resolution
    copy_paste : None or a :class:`ssdkit.dataset.copy_paste.CopyPaste` config (needs ``masks=True``): mask-based
        copy-paste on each decoded image before the resize (a training augmentation); in ``"copy"`` mode M
        grows by its ``max_instances`` (the copies are new label rows)
    gt_masks_name : name of the mask label in ``provide_label``

    Batches hold ``data (B, 3, H, W)`` float32 (images top-left, zero padding), ``im_info (B, 3)``
    float32 ``[h, w, scale]`` and ``label (B, M, 6)`` float32 rows ``[cls, x0, y0, x1, y1, difficult]``
    in pixels of the resized image, padded with -1 rows; with ``masks`` also
    ``gt_masks (B, M, ceil(H / s), ceil(W / s))`` float32 0/1 (mask ``m`` of image ``b`` belongs to label row
    ``m``; padded image coordinates divided by ``s``; rows past an image's objects all 0), and the label names
    are ``(label_name, gt_masks_name)``. Padding samples of a last batch (``pad``) repeat the batch's first
    samples.
    """

    def __init__(self, records, *, batch_size, short, long, data_shape=None, max_objects=None,
                 augment=None, normalization=Normalization(), shuffle=False, seed=0, num_workers=2,
                 last_batch="pad", loader=load_image_rgb, data_name="data", im_info_name="im_info",
                 label_name="label", strict=False, masks=False, mask_stride=1, copy_paste=None,
                 gt_masks_name="gt_masks"):
        needed = batch_shape(short, long)
        self.masks = bool(masks)
        self.mask_stride = int(mask_stride)
        mask_grid(1, 1, self.mask_stride)  # checks the stride
        if copy_paste is not None and not self.masks:
            raise ValueError("copy_paste needs masks=True (the augmentation cuts instances out by their masks)")
        self.copy_paste = copy_paste
        self.gt_masks_name = gt_masks_name
        if self.masks:
            missing = [r.path for r in records if r.masks is None]
            if missing:
                raise ValueError("masks=True but %d of %d records have no instance masks (first: %s); load the "
                                 "data with masks (COCO 'segmentation', VOC SegmentationObject PNGs, readers' "
                                 "masks='require') or train without masks" % (len(missing), len(records), missing[0]))
        if data_shape is None:
            data_shape = (3,) + needed
        if len(data_shape) != 3 or data_shape[0] != 3:
            raise ValueError("data_shape must be (3, H, W), got %s" % (data_shape,))
        for record in records:  # sizes known from the readers (0 when unchecked): fail now, not mid-epoch
            if record.width > 0 and record.height > 0:
                _, w, h = resize_scale(record.width, record.height, short, long)
                if h > data_shape[1] or w > data_shape[2]:
                    raise ValueError("record %s resizes to %dx%d, larger than data_shape %s; use (3,) + "
                                     "batch_shape(short, long) = %s" % (record.path, w, h, tuple(data_shape),
                                                                        (3,) + needed))
        self.short, self.long = int(short), int(long)
        self.im_info_name = im_info_name
        augment = two_stage_augment(augment)
        super().__init__(records, batch_size=batch_size, data_shape=data_shape, max_objects=max_objects,
                         augment=augment, normalization=normalization, shuffle=shuffle, seed=seed,
                         num_workers=num_workers, last_batch=last_batch, loader=loader,
                         data_name=data_name, label_name=label_name, strict=strict)
        if copy_paste is not None and getattr(copy_paste, "mode", None) == "copy":  # copies add label rows
            most = max(r.num_objects for r in self.records)
            self.max_objects = max(self.max_objects, most + int(copy_paste.max_instances))

    @property
    def provide_data(self):
        return [mx.io.DataDesc(self.data_name, (self.batch_size,) + self.data_shape, np.float32),
                mx.io.DataDesc(self.im_info_name, (self.batch_size, 3), np.float32)]

    @property
    def provide_label(self):
        labels = super().provide_label
        if not self.masks:
            return labels
        grid = mask_grid(self.data_shape[1], self.data_shape[2], self.mask_stride)
        return labels + [mx.io.DataDesc(self.gt_masks_name, (self.batch_size, self.max_objects) + grid,
                                        np.float32)]

    def _read(self, record):
        """The image, or ``(image, masks (K, H, W) uint8)`` with ``masks``."""
        image = self.loader(record.path)
        if not self.masks:
            return image
        masks = decode_masks(record)
        if masks.shape[1:] != image.shape[:2]:
            raise MaskError("record %s: masks of %dx%d but the image is %dx%d (WxH); the masks must have the "
                            "image's size" % (record.path, masks.shape[2], masks.shape[1], image.shape[1],
                                              image.shape[0]))
        return image, masks

    def _transform(self, record, image, rng):
        """One :class:`~ssdkit.dataset.two_stage.TwoStageSample` of a decoded image (``(image, masks)``
        with ``masks``)."""
        masks = None
        if self.masks:
            image, masks = image
        return make_sample(image, record.boxes, record.classes, record.difficult, rng, short=self.short,
                           long=self.long, normalization=self.normalization, augment=self.augment,
                           masks=masks, mask_stride=self.mask_stride, copy_paste=self.copy_paste)

    def next(self):
        samples = []
        while len(samples) < self.batch_size:
            sample = self._next_sample()
            if sample is None:
                break
            samples.append(sample)
        count = len(samples)
        if count == 0 or (count < self.batch_size and self.last_batch == "discard"):
            raise StopIteration
        pad = self.batch_size - count
        samples += [samples[i % count] for i in range(pad)]  # repeat the batch's first samples
        data, im_info, label = pad_batch(samples, self.data_shape, self.max_objects)
        labels = [mx.nd.array(label)]
        if self.masks:
            labels.append(mx.nd.array(pad_masks(samples, self.data_shape, self.max_objects, self.mask_stride)))
        return mx.io.DataBatch(data=[mx.nd.array(data), mx.nd.array(im_info)], label=labels,
                               pad=pad, provide_data=self.provide_data, provide_label=self.provide_label)
