"""Datasets, class names, label padding, normalisation and augmentation described by a
:class:`~ssdkit.config.schema.Config` (the iterators are the families', :func:`ssdkit.api.family.make_iterator`)."""
import logging
import os

from ssdkit.dataset.augment import Augmentation, CropSampler, Normalization
from ssdkit.dataset.collection import resolve_class_names
from ssdkit.dataset.copy_paste import CopyPaste
from ssdkit.dataset.prepare import load_dataset

log = logging.getLogger("ssdkit.data")


def configured_class_names(config):
    """``model.class_names`` as a tuple (one entry naming an existing file is read), or None if empty."""
    names = config.model.class_names
    if len(names) == 1 and os.path.isfile(names[0]):
        return resolve_class_names(names[0])
    return tuple(names) or None


def class_names_of(config, dataset=None):
    """Class names: ``model.class_names`` (names, or one entry naming a file), else the dataset's."""
    names = configured_class_names(config)
    if names:
        return names
    if dataset is not None:
        return tuple(dataset.class_names)
    if config.model.num_classes:
        return tuple("class%d" % i for i in range(config.model.num_classes))
    raise ValueError("no class names: give model.class_names (--class-names) or model.num_classes "
                     "(--num-class); .rec files do not carry them")


def load_split(config, split):
    """The records of ``split`` (``"train"`` or ``"val"``) for voc/coco/list data; None for rec or no sources."""
    data = config.data
    sources = data.train if split == "train" else data.val
    if not sources or data.format == "rec":
        return None
    names = configured_class_names(config)
    return load_dataset(data.format, sources, root=data.root or None, image_dirs=data.root or None,
                        class_names=list(names) if names and data.format != "coco" else None,
                        workers=max(1, data.num_workers), strict=data.strict)


def label_rows(config, dataset):
    """Label rows M of a split's batches: ``data.max_objects``, or more when an image of ``dataset`` (all of
    it, not one worker's shard, so every worker pads alike) holds more objects, plus
    ``augment.copy_paste_max_instances`` when copy-paste in ``"copy"`` mode may add that many instances to an
    image (both splits, so training and validation batches have the same shape)."""
    most = max((r.num_objects for r in dataset.records), default=0) if dataset is not None else 0
    settings = copy_paste_of(config.augment)
    extra = settings.max_instances if settings is not None and settings.mode == "copy" else 0
    return max(config.data.max_objects, most + extra)


def augmentation_of(settings):
    """The :class:`ssdkit.dataset.augment.Augmentation` the ``[augment]`` settings
    (:class:`ssdkit.config.schema.AugmentConfig`) describe: one crop sampler per ``crop_min_ious`` value
    (< 0: unconstrained)."""
    samplers = tuple(CropSampler(min_iou=None if v < 0 else float(v), min_scale=settings.crop_min_scale,
                                 min_aspect=settings.crop_aspect_range[0], max_aspect=settings.crop_aspect_range[1])
                     for v in settings.crop_min_ious)
    return Augmentation(distort_prob=settings.distort_prob, brightness_delta=settings.brightness_delta,
                   contrast_range=tuple(settings.contrast_range), saturation_range=tuple(settings.saturation_range),
                   hue_delta=settings.hue_delta, expand_prob=settings.expand_prob,
                   max_expand_ratio=settings.max_expand_ratio, crop_samplers=samplers,
                   mirror_prob=settings.mirror_prob)


def copy_paste_of(settings):
    """The :class:`ssdkit.dataset.copy_paste.CopyPaste` the ``augment.copy_paste_*`` settings
    (:class:`ssdkit.config.schema.AugmentConfig`) describe, or None when ``copy_paste_prob`` is 0 (off: the
    iterator then needs no instance masks for it)."""
    if settings.copy_paste_prob <= 0:
        return None
    return CopyPaste(prob=settings.copy_paste_prob, max_instances=settings.copy_paste_max_instances,
                     scale=tuple(settings.copy_paste_scale), rotation=settings.copy_paste_rotation,
                     translate=settings.copy_paste_translate, min_visible=settings.copy_paste_min_visible,
                     mode=settings.copy_paste_mode)


def normalization_of(config):
    return Normalization(mean=tuple(config.data.mean), std=tuple(config.data.std))


def meta_normalization(meta):
    """The input normalisation a model's meta file records (``mean``, ``std``), as the pipeline applies it."""
    return Normalization(mean=tuple(meta["mean"]), std=tuple(meta["std"]))
