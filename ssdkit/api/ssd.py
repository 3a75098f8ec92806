"""The single-stage SSD detector family (see :mod:`ssdkit.api.family`): square resize to
``model.data_shape``, input ``data``, normalised labels, ``MultiBoxDetection``.

Sizes: ``model.data_shape`` is always the training input; validation, evaluation and inference run at
:func:`input_size` (``model.test_shape``, 0: ``data_shape``). Graphs come from the model spec
(:class:`~ssdkit.api.model_spec.SSDSpec`) through one function, :func:`ssd_graph`.
"""
import dataclasses

import numpy as np

from ssdkit.api.data import augmentation_of, configured_class_names, label_rows, normalization_of
from ssdkit.api.inference import has_op, set_detection_attrs
from ssdkit.api.model_spec import SSDSpec, spec_from_meta, spec_to_meta
from ssdkit.config.ssd_layout import ssd_layout
from ssdkit.dataset.augment import NO_AUGMENT, augment_detection, to_chw_normalized
from ssdkit.dataset.folder_iter import FolderDetIter
from ssdkit.dataset.rec_iter import RecordDetIter
from ssdkit.engine.ssd_metric import MultiBoxMetric
from ssdkit.symbol import symbol_builder
from ssdkit.symbol.common import multibox_initializer

NAME = "ssd"

_SSD_ATTRS = {"nms_thresh": "nms_threshold", "nms_topk": "nms_topk", "score_thresh": "threshold",
              "max_detections": "max_detections"}
"""InferenceOverrides field -> ``MultiBoxDetection`` attribute (the SSD meta keys are the field names)."""


def inference_size(meta):
    """Square input size an SSD model's inference graph runs at: ``test_shape`` or ``data_shape``."""
    return int(meta.get("test_shape") or meta["data_shape"])


def input_size(model, split):
    """Square input of an SSD iterator over ``split`` for a ModelConfig: ``data_shape`` for
    ``"train"``, else the inference size ``test_shape`` (0: ``data_shape``)."""
    return model.data_shape if split == "train" else (model.test_shape or model.data_shape)


def check_test_shape(network, data_shape, size, layout=None):
    """Raise ValueError if an SSD trained at ``data_shape`` cannot run at ``size``: layouts with fixed
    anchor ``steps`` (fractions of the training input) would misplace their anchors. ``layout``: the
    model's (None: the preset of ``network`` at ``data_shape``)."""
    if size == data_shape:
        return
    if (layout or ssd_layout(network, data_shape)).steps:
        raise ValueError("model.test_shape %d differs from data_shape %d, but the %s layout fixes its anchor "
                         "steps for inputs of %d px; evaluate it at %d (test_shape 0)"
                         % (size, data_shape, network, data_shape, data_shape))


def model_spec(config, class_names=()):
    """The :class:`~ssdkit.api.model_spec.SSDSpec` of ``config.model`` (layout: the network preset at
    ``data_shape``); ``class_names`` as the model's (graphs take the class count separately)."""
    m = config.model
    return SSDSpec(network=m.network, data_shape=m.data_shape, class_names=tuple(class_names),
                   mean=tuple(config.data.mean), std=tuple(config.data.std), test_shape=m.test_shape,
                   nms_thresh=m.nms_thresh, nms_topk=m.nms_topk, force_suppress=m.force_suppress,
                   overlap_threshold=m.overlap_threshold, negative_mining_ratio=m.negative_mining_ratio)


def ssd_graph(spec, num_classes, *, train=False, max_detections=None):
    """The graph of ``spec`` for ``num_classes`` classes: the one path from a spec to a graph.

    Parameters
    ----------
    spec : SSDSpec
    num_classes : int
    train : bool, the training graph (targets and losses, :func:`ssdkit.symbol.symbol_builder.get_symbol_train`;
        it decodes with the spec's NMS settings and every anchor's row) instead of the detection graph
    max_detections : int or None, detection rows (None: the spec's; -1: one per anchor)

    Returns
    -------
    mx.sym.Symbol
    """
    kwargs = dict(spec.layout.builder_kwargs(), num_classes=num_classes, nms_thresh=spec.nms_thresh,
                  nms_topk=spec.nms_topk, force_suppress=spec.force_suppress)
    if train:
        return symbol_builder.get_symbol_train(overlap_threshold=spec.overlap_threshold,
                                               negative_mining_ratio=spec.negative_mining_ratio, **kwargs)
    optional = {} if spec.score_thresh is None else {"score_thresh": spec.score_thresh}
    rows = spec.max_detections if max_detections is None else int(max_detections)
    return symbol_builder.get_symbol(max_detections=rows, **optional, **kwargs)


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
        """``(train_symbol, inference_symbol)`` of ``config.model`` (:func:`model_spec`, :func:`ssd_graph`)."""
        spec = model_spec(config)
        return ssd_graph(spec, num_classes, train=True), ssd_graph(spec, num_classes)

    def meta_fields(self, config):
        """What the graph needs besides class names and normalisation (written to ``-meta.json``): the
        spec's other fields, the layout included."""
        meta = spec_to_meta(model_spec(config))
        return {k: v for k, v in meta.items() if k not in ("class_names", "mean", "std")}

    def inference_symbol(self, meta, *, max_detections=None):
        """The detection graph ``meta`` describes; ``max_detections`` (None: the meta's, else -1, one row
        per anchor) sets its rows per image."""
        return ssd_graph(spec_from_meta(meta), len(meta["class_names"]), max_detections=max_detections)

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
        """``config`` with the model settings of ``meta``, for evaluation: its network and trained
        ``data_shape``; ``test_shape`` (the evaluation size, :func:`input_size`) is
        ``config.model.test_shape`` if set, else the meta's. ValueError if the model cannot run at it."""
        model = dataclasses.replace(config.model, network=meta["network"], data_shape=int(meta["data_shape"]),
                                    test_shape=config.model.test_shape or int(meta.get("test_shape") or 0))
        check_test_shape(model.network, model.data_shape, input_size(model, "val"),
                         layout=spec_from_meta(meta).layout)
        return dataclasses.replace(config, model=model)

    def inference_config(self, config):
        """``config`` checked for validation during training (unchanged: the ``val`` iterator runs at
        :func:`input_size`); ValueError if the preset cannot run at ``test_shape``."""
        check_test_shape(config.model.network, config.model.data_shape, input_size(config.model, "val"))
        return config

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
    mx.io.DataIter with ``data (B, 3, S, S)`` (S: :func:`input_size`) and ``label (B, M, 6)``, M from
    :func:`ssdkit.api.data.label_rows` (for rec files the largest object count the load-time check finds);
    damaged records skipped with a count, or refused when ``data.strict``. ValueError for
    ``augment.copy_paste_prob > 0`` in training (SSD has no instance masks to paste).
    """
    data = config.data
    train = split == "train"
    if train and config.augment.copy_paste_prob > 0:
        raise ValueError("augment.copy_paste_prob = %g pastes instances by their masks, which only Mask R-CNN "
                         "models read (an fpn_* network with fpn.mask = true); SSD network %s would ignore it: "
                         "set augment.copy_paste_prob = 0" % (config.augment.copy_paste_prob, config.model.network))
    size = input_size(config.model, split)
    shape = (3, size, size)
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
