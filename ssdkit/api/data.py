"""Datasets and iterators described by a :class:`~ssdkit.config.schema.Config`."""
import logging
import os

from ssdkit.dataset.augment import AugmentConfig as Augment, CropSampler, Normalization
from ssdkit.dataset.collection import resolve_class_names
from ssdkit.dataset.folder_iter import FolderDetIter
from ssdkit.dataset.prepare import load_dataset
from ssdkit.dataset.rec_iter import RecordDetIter

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
    it, not one worker's shard, so every worker pads alike) holds more objects."""
    most = max((r.num_objects for r in dataset.records), default=0) if dataset is not None else 0
    return max(config.data.max_objects, most)


def augmentation_of(settings):
    """The :class:`ssdkit.dataset.augment.AugmentConfig` the ``[augment]`` settings
    (:class:`ssdkit.config.schema.AugmentConfig`) describe: one crop sampler per ``crop_min_ious`` value
    (< 0: unconstrained)."""
    samplers = tuple(CropSampler(min_iou=None if v < 0 else float(v), min_scale=settings.crop_min_scale,
                                 min_aspect=settings.crop_aspect_range[0], max_aspect=settings.crop_aspect_range[1])
                     for v in settings.crop_min_ious)
    return Augment(distort_prob=settings.distort_prob, brightness_delta=settings.brightness_delta,
                   contrast_range=tuple(settings.contrast_range), saturation_range=tuple(settings.saturation_range),
                   hue_delta=settings.hue_delta, expand_prob=settings.expand_prob,
                   max_expand_ratio=settings.max_expand_ratio, crop_samplers=samplers,
                   mirror_prob=settings.mirror_prob)


def normalization_of(config):
    return Normalization(mean=tuple(config.data.mean), std=tuple(config.data.std))


def make_iterator(config, split, dataset=None, *, part_index=0, num_parts=1, augment=None):
    """A detection iterator over ``split`` for the network family of ``config.model.network``.

    Parameters are those of :func:`ssd_iterator`; FPN networks get :func:`two_stage_iterator`.
    """
    from ssdkit.api.family import family_of

    return family_of(config).make_iterator(config, split, dataset, part_index=part_index, num_parts=num_parts,
                                           augment=augment)


def ssd_iterator(config, split, dataset=None, *, part_index=0, num_parts=1, augment=None):
    """An SSD detection iterator over ``split``.

    Parameters
    ----------
    config : Config
    split : ``"train"`` (augmented, shuffled, incomplete last batch dropped) or ``"val"``
    dataset : DetectionDataset from :func:`load_split` (voc/coco/list); ignored for rec
    part_index, num_parts : the shard of a distributed worker
    augment : override of the training augmentation (default: ``config.augment``)

    Returns
    -------
    mx.io.DataIter with ``data (B, 3, S, S)`` and ``label (B, M, 6)``, M from :func:`label_rows` (for rec
    files the largest object count the load-time check finds); damaged records skipped with a count, or
    refused when ``data.strict``.
    """
    data = config.data
    train = split == "train"
    shape = (3, config.model.data_shape, config.model.data_shape)
    aug = (augment if augment is not None else augmentation_of(config.augment)) if train else None
    seed = config.runtime.seed + 1000 * part_index
    if data.format == "rec":
        sources = data.train if train else data.val
        if len(sources) != 1:
            raise ValueError("data.format = rec takes exactly one .rec file per split, got %r" % (sources,))
        names = configured_class_names(config)
        return RecordDetIter(sources[0], batch_size=data.batch_size, data_shape=shape,
                             max_objects=data.max_objects, augment=aug, normalization=normalization_of(config),
                             shuffle=train, seed=seed, num_threads=max(1, data.num_workers),
                             num_parts=num_parts, part_index=part_index, strict=data.strict,
                             num_classes=len(names) if names else (config.model.num_classes or None))
    if dataset is None:
        raise ValueError("no %s data given (data.%s is empty)" % (split, "train" if train else "val"))
    records = list(dataset.records)[part_index::num_parts]
    return FolderDetIter(records, batch_size=data.batch_size, data_shape=shape,
                         max_objects=label_rows(config, dataset), augment=aug, normalization=normalization_of(config),
                         shuffle=train, seed=seed, num_workers=max(1, data.num_workers),
                         last_batch="discard" if train else "pad", strict=data.strict)


def two_stage_iterator(config, split, dataset=None, *, part_index=0, num_parts=1, augment=None):
    """A two-stage (FPN) iterator over ``split``: aspect-preserving resize to ``model.resize_short`` /
    ``resize_long``, padded to :func:`ssdkit.dataset.two_stage.batch_shape`.

    Parameters are those of :func:`ssd_iterator`; image files only (voc, coco, list).

    Returns
    -------
    TwoStageIter with ``data (B, 3, H, W)``, ``im_info (B, 3)`` and pixel ``label (B, M, 6)``.
    """
    from ssdkit.dataset.two_stage_iter import TwoStageIter

    data = config.data
    train = split == "train"
    if data.format == "rec":
        raise ValueError("FPN networks (%s) read image files (data.format voc, coco or list), not .rec files"
                         % config.model.network)
    if dataset is None:
        raise ValueError("no %s data given (data.%s is empty)" % (split, "train" if train else "val"))
    aug = (augment if augment is not None else augmentation_of(config.augment)) if train else None
    records = list(dataset.records)[part_index::num_parts]
    return TwoStageIter(records, batch_size=data.batch_size, short=config.model.resize_short,
                        long=config.model.resize_long, max_objects=label_rows(config, dataset), augment=aug,
                        normalization=normalization_of(config), shuffle=train,
                        seed=config.runtime.seed + 1000 * part_index, num_workers=max(1, data.num_workers),
                        last_batch="discard" if train else "pad", strict=data.strict)
