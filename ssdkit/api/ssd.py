"""The single-stage SSD detector family (see :mod:`ssdkit.api.family`): square resize to
``model.data_shape``, input ``data``, normalised labels, ``MultiBoxDetection``."""
import dataclasses

import numpy as np

from ssdkit.api.data import augmentation_of, configured_class_names, label_rows, normalization_of
from ssdkit.api.inference import has_op, set_detection_attrs
from ssdkit.dataset.augment import NO_AUGMENT, augment_detection, to_chw_normalized
from ssdkit.dataset.folder_iter import FolderDetIter
from ssdkit.dataset.rec_iter import RecordDetIter
from ssdkit.engine.ssd_metric import MultiBoxMetric
from ssdkit.symbol.common import multibox_initializer
from ssdkit.symbol.symbol_factory import get_config, get_symbol, get_symbol_train

NAME = "ssd"

_SSD_ATTRS = {"nms_thresh": "nms_threshold", "nms_topk": "nms_topk", "score_thresh": "threshold",
              "max_detections": "max_detections"}
"""InferenceOverrides field -> ``MultiBoxDetection`` attribute (the SSD meta keys are the field names)."""


def inference_size(meta):
    """Square input size an SSD model's inference graph runs at: ``test_shape`` or ``data_shape``."""
    return int(meta.get("test_shape") or meta["data_shape"])


def check_test_shape(network, data_shape, size):
    """Raise ValueError if an SSD trained at ``data_shape`` cannot run at ``size``: presets with fixed
    anchor ``steps`` (fractions of the training input) would misplace their anchors."""
    if size == data_shape:
        return
    if get_config(network, data_shape).get("steps"):
        raise ValueError("model.test_shape %d differs from data_shape %d, but the %s preset fixes its anchor "
                         "steps for inputs of %d px; evaluate it at %d (test_shape 0)"
                         % (size, data_shape, network, data_shape, data_shape))


class SSDFamily:
    """Single-stage SSD: square resize to ``model.data_shape``, input ``data``, normalised labels."""

    name = NAME
    data_names = ("data",)
    label_names = ("label",)
    # what the training executor computes: losses and the metric's inputs, not ``det_out``
    # (decoding + NMS of every anchor each step; checkpoints keep the whole graph)
    train_outputs = ("cls_prob_output", "loc_loss_output", "cls_label_output")

    # --- graphs and meta -------------------------------------------------------------------------
    def symbols(self, config, num_classes, *, num_devices=1):
        """``(train_symbol, inference_symbol)`` of ``config.model``."""
        model = (config.model.network, config.model.data_shape, num_classes)
        inference = dict(nms_thresh=config.model.nms_thresh, nms_topk=config.model.nms_topk,
                         force_suppress=config.model.force_suppress)
        targets = dict(overlap_threshold=config.model.overlap_threshold,
                       negative_mining_ratio=config.model.negative_mining_ratio)
        return get_symbol_train(*model, **inference, **targets), get_symbol(*model, **inference)

    def meta_fields(self, config):
        """What the graph needs besides class names and normalisation (written to ``-meta.json``)."""
        return {"network": config.model.network, "data_shape": config.model.data_shape,
                "test_shape": config.model.test_shape,
                "nms_thresh": config.model.nms_thresh, "nms_topk": config.model.nms_topk,
                "force_suppress": config.model.force_suppress}

    def inference_symbol(self, meta, *, max_detections=None):
        """The detection graph ``meta`` describes; ``max_detections`` (None: the meta's, else -1, one row
        per anchor) sets its rows per image."""
        rows = int(meta.get("max_detections", -1)) if max_detections is None else int(max_detections)
        optional = {"score_thresh": meta["score_thresh"]} if meta.get("score_thresh") is not None else {}
        return get_symbol(meta["network"], meta["data_shape"], len(meta["class_names"]),
                          nms_thresh=meta["nms_thresh"], nms_topk=meta["nms_topk"],
                          force_suppress=meta["force_suppress"], max_detections=rows, **optional)

    # --- inference settings (see ssdkit.api.inference) ------------------------------------------
    def with_inference(self, meta, overrides):
        """``meta`` with the given :class:`~ssdkit.api.inference.InferenceOverrides` (its keys
        ``nms_thresh``, ``nms_topk``, ``score_thresh``, ``max_detections``: -1 one row per anchor)."""
        return dict(meta, **overrides.given())

    def set_inference(self, symbol, overrides):
        """A saved detection graph (``MultiBoxDetection``, or contrib's in a portable model) with the
        given overrides as operator attributes; ValueError for ``max_detections`` on a portable graph
        (contrib's operator always returns one row per anchor)."""
        attrs = {_SSD_ATTRS[k]: v for k, v in overrides.given().items()}
        portable = {k: v for k, v in attrs.items() if k != "max_detections"}
        if len(portable) != len(attrs) and has_op(symbol, "_contrib_MultiBoxDetection"):
            raise ValueError("a portable model (MXNet's contrib MultiBoxDetection) returns one row per anchor: "
                             "max_detections cannot be set; filter rows with cls_id >= 0, or deploy without "
                             "--portable")
        return set_detection_attrs(symbol, {"MultiBoxDetection": attrs, "_contrib_MultiBoxDetection": portable})

    def fixed_settings(self, meta):
        """``{config key: value}`` a trained model fixes (what evaluate checks its model flags against)."""
        return {"model.network": meta["network"], "model.data_shape": int(meta["data_shape"]),
                "model.class_names": tuple(meta["class_names"]), "model.num_classes": len(meta["class_names"])}

    def apply_meta(self, config, meta):
        """``config`` with the model settings of ``meta`` (network; ``data_shape`` = the inference
        size: ``config.model.test_shape`` if set, else the meta's), for evaluation."""
        model = dataclasses.replace(config.model, network=meta["network"], data_shape=int(meta["data_shape"]),
                                    test_shape=config.model.test_shape or int(meta.get("test_shape") or 0))
        return self.inference_config(dataclasses.replace(config, model=model))

    def inference_config(self, config):
        """``config`` whose ``data_shape`` is the inference size (validation during training)."""
        size = config.model.test_shape or config.model.data_shape
        check_test_shape(config.model.network, config.model.data_shape, size)
        return dataclasses.replace(config, model=dataclasses.replace(config.model, data_shape=size, test_shape=0))

    # --- data -------------------------------------------------------------------------------------
    def make_iterator(self, config, split, dataset, *, part_index, num_parts, augment):
        return ssd_iterator(config, split, dataset, part_index=part_index, num_parts=num_parts, augment=augment)

    def input_shapes(self, config, batch_size):
        """``{name: shape}`` of every training-graph input (for shape inference)."""
        s = config.model.data_shape
        return {"data": (batch_size, 3, s, s)}

    def inference_shapes(self, meta, batch_size):
        """``[(name, shape)]`` of the inference graph inputs for ``batch_size`` images."""
        s = inference_size(meta)
        return [("data", (batch_size, 3, s, s))]

    def metric_labels(self, labels, batch):
        """Labels ``(b, M, W)`` of a batch as the VOC / COCO metrics read them (normalised corners)."""
        return labels

    # --- training ---------------------------------------------------------------------------------
    def train_metric(self):
        return MultiBoxMetric()

    def initializer(self, num_classes):
        return multibox_initializer(num_classes)

    # --- inference --------------------------------------------------------------------------------
    def preprocess(self, meta, image, normalization):
        """``(H, W, 3)`` uint8 RGB -> ``(3, S, S)`` float32 (the validation transform)."""
        s = inference_size(meta)
        resized, _, _ = augment_detection(image, np.zeros((0, 4)), np.random.default_rng(0), NO_AUGMENT, (s, s))
        return to_chw_normalized(resized, normalization)

    def batch_inputs(self, meta, inputs, batch_size):
        """Stack :meth:`preprocess` results of up to ``batch_size`` images into the graph's input arrays."""
        s = inference_size(meta)
        batch = np.zeros((batch_size, 3, s, s), np.float32)
        for i, x in enumerate(inputs):
            batch[i] = x
        return [batch]

    def check_portable(self, meta):
        """Raise ValueError if the model cannot be written with MXNet's contrib operators only."""


def ssd_iterator(config, split, dataset=None, *, part_index=0, num_parts=1, augment=None):
    """An SSD detection iterator over ``split``.

    Parameters
    ----------
    config : Config
    split : ``"train"`` (augmented, shuffled, incomplete last batch dropped) or ``"val"``
    dataset : DetectionDataset from :func:`ssdkit.api.data.load_split` (voc/coco/list); ignored for rec
    part_index, num_parts : the shard of a distributed worker
    augment : override of the training augmentation (default: ``config.augment``)

    Returns
    -------
    mx.io.DataIter with ``data (B, 3, S, S)`` and ``label (B, M, 6)``, M from :func:`ssdkit.api.data.label_rows` (for rec
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
