"""Detector families: what differs between SSD and the two-stage FPN detector for train / evaluate /
deploy / Detector, in one place. The api functions dispatch on :func:`family_of`; nothing else
branches on the network kind.

A family says how to

* build the training and inference graphs from a Config (:meth:`symbols`) and the inference graph
  from a model's meta file (:meth:`inference_symbol`), and what the meta file records (:meth:`meta_fields`,
  :meth:`apply_meta`);
* make the iterator of a split (:meth:`make_iterator`) and name the graph inputs
  (:attr:`data_names`, :attr:`label_names`, :meth:`input_shapes`);
* train: the metric over the training outputs and the initializer;
* evaluate: turn a batch's labels into the normalised ``(B, M, 6)`` rows the VOC / COCO metrics read
  (:meth:`metric_labels`);
* preprocess one image for the :class:`~ssdkit.detector.Detector` (:meth:`preprocess`). Both families
  output detections ``(B, K, 6)`` normalised to each image's valid area, so postprocessing is shared;
* whether ``deploy --portable`` (MXNet contrib operators only) exists (:meth:`check_portable`).
"""
import dataclasses

import numpy as np

SSD, FPN = "ssd", "fpn"

_SSD_ATTRS = {"nms_thresh": "nms_threshold", "nms_topk": "nms_topk", "score_thresh": "threshold",
              "max_detections": "max_detections"}
"""InferenceOverrides field -> ``MultiBoxDetection`` attribute (the SSD meta keys are the field names)."""
_FPN_KEYS = {"nms_thresh": "test_nms_threshold", "score_thresh": "test_score_threshold",
             "max_detections": "test_max_detections"}
"""InferenceOverrides field -> key of the FPN meta's ``fpn`` section."""
_FPN_ATTRS = {"nms_thresh": "nms_threshold", "score_thresh": "score_threshold", "max_detections": "max_detections"}
"""InferenceOverrides field -> ``RCNNDetection`` attribute."""


def _fpn_given(overrides):
    """The overrides an FPN graph honours (``max_detections`` -1: as trained, dropped); ValueError for
    ``nms_topk``."""
    given = overrides.given()
    if "nms_topk" in given:
        raise ValueError("FPN models have no NMS top-k (RCNNDetection suppresses every candidate above the "
                         "score threshold); set the rows per image with max_detections instead")
    if given.get("max_detections") == -1:
        del given["max_detections"]
    return given


def _has_op(symbol, op):
    import json

    return any(n.get("op") == op for n in json.loads(symbol.tojson())["nodes"])


def _fpn_networks():
    from ssdkit.symbol.fpn_config import FPN_NETWORKS

    return FPN_NETWORKS


def inference_size(meta):
    """Square input size an SSD model's inference graph runs at: ``test_shape`` or ``data_shape``."""
    return int(meta.get("test_shape") or meta["data_shape"])


def check_test_shape(network, data_shape, size):
    """Raise ValueError if an SSD trained at ``data_shape`` cannot run at ``size``: presets with fixed
    anchor ``steps`` (fractions of the training input) would misplace their anchors."""
    if size == data_shape:
        return
    from ssdkit.symbol.symbol_factory import get_config

    if get_config(network, data_shape).get("steps"):
        raise ValueError("model.test_shape %d differs from data_shape %d, but the %s preset fixes its anchor "
                         "steps for inputs of %d px; evaluate it at %d (test_shape 0)"
                         % (size, data_shape, network, data_shape, data_shape))


class SSDFamily:
    """Single-stage SSD: square resize to ``model.data_shape``, input ``data``, normalised labels."""

    name = SSD
    data_names = ("data",)
    label_names = ("label",)
    # what the training executor computes: losses and the metric's inputs, not ``det_out``
    # (decoding + NMS of every anchor each step; checkpoints keep the whole graph)
    train_outputs = ("cls_prob_output", "loc_loss_output", "cls_label_output")

    # --- graphs and meta -------------------------------------------------------------------------
    def symbols(self, config, num_classes, *, num_devices=1):
        """``(train_symbol, inference_symbol)`` of ``config.model``."""
        from ssdkit.symbol.symbol_factory import get_symbol, get_symbol_train

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
        from ssdkit.symbol.symbol_factory import get_symbol

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
        from ssdkit.api.inference import set_detection_attrs

        attrs = {_SSD_ATTRS[k]: v for k, v in overrides.given().items()}
        portable = {k: v for k, v in attrs.items() if k != "max_detections"}
        if len(portable) != len(attrs) and _has_op(symbol, "_contrib_MultiBoxDetection"):
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
        from ssdkit.api.data import ssd_iterator

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
        from ssdkit.engine.ssd_metric import MultiBoxMetric

        return MultiBoxMetric()

    def initializer(self, num_classes):
        from ssdkit.symbol.common import multibox_initializer

        return multibox_initializer(num_classes)

    # --- inference --------------------------------------------------------------------------------
    def preprocess(self, meta, image, normalization):
        """``(H, W, 3)`` uint8 RGB -> ``(3, S, S)`` float32 (the validation transform)."""
        from ssdkit.dataset.augment import NO_AUGMENT, augment_detection, to_chw_normalized

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


class FPNFamily(SSDFamily):
    """Two-stage FPN: aspect-preserving resize (``model.resize_short`` / ``resize_long``) padded to a
    fixed ``image_shape``; inputs ``data`` and ``im_info``; pixel labels (normalised for metrics)."""

    name = FPN
    data_names = ("data", "im_info")
    train_outputs = None

    def _settings(self, config):
        return dataclasses.asdict(config.fpn)

    def image_shape(self, config):
        from ssdkit.symbol.fpn_config import batch_shape

        return batch_shape(config.model.resize_short, config.model.resize_long)

    def symbols(self, config, num_classes, *, num_devices=1):
        from ssdkit.symbol.fpn import get_symbol, get_symbol_train

        batch = config.data.batch_size
        if batch % num_devices:
            raise ValueError("data.batch_size = %d must be a multiple of the %d devices for FPN networks (the "
                             "graph samples RoIs per device batch)" % (batch, num_devices))
        kwargs = dict(image_shape=self.image_shape(config), **self._settings(config))
        return (get_symbol_train(config.model.network, num_classes, batch_size=batch // num_devices, **kwargs),
                get_symbol(config.model.network, num_classes, **kwargs))

    def meta_fields(self, config):
        return {"network": config.model.network, "family": FPN, "resize_short": config.model.resize_short,
                "resize_long": config.model.resize_long, "image_shape": list(self.image_shape(config)),
                "fpn": {k: list(v) if isinstance(v, tuple) else v for k, v in self._settings(config).items()}}

    def inference_symbol(self, meta, *, max_detections=None):
        """The detection graph ``meta`` describes; ``max_detections`` > 0 replaces the meta's
        ``fpn.test_max_detections`` (None or -1 keep it)."""
        from ssdkit.symbol.fpn import get_symbol

        settings = dict(meta["fpn"])
        if max_detections is not None and max_detections > 0:
            settings["test_max_detections"] = int(max_detections)
        return get_symbol(meta["network"], len(meta["class_names"]), image_shape=tuple(meta["image_shape"]),
                          **settings)

    def with_inference(self, meta, overrides):
        """``meta`` with the given :class:`~ssdkit.api.inference.InferenceOverrides` in its ``fpn``
        section (``test_nms_threshold``, ``test_score_threshold``, ``test_max_detections``; a
        ``max_detections`` of -1 keeps the trained value). ValueError for ``nms_topk``: ``RCNNDetection``
        has no top-k."""
        given = _fpn_given(overrides)
        return dict(meta, fpn=dict(meta["fpn"], **{_FPN_KEYS[k]: v for k, v in given.items()}))

    def set_inference(self, symbol, overrides):
        """A saved FPN detection graph with the given overrides as ``RCNNDetection`` attributes."""
        from ssdkit.api.inference import set_detection_attrs

        attrs = {_FPN_ATTRS[k]: v for k, v in _fpn_given(overrides).items()}
        return set_detection_attrs(symbol, {"RCNNDetection": attrs})

    def fixed_settings(self, meta):
        return {"model.network": meta["network"], "model.resize_short": int(meta["resize_short"]),
                "model.resize_long": int(meta["resize_long"]),
                "model.class_names": tuple(meta["class_names"]), "model.num_classes": len(meta["class_names"])}

    def inference_config(self, config):
        """FPN validates at its training resize (no separate test size)."""
        return config

    def apply_meta(self, config, meta):
        from ssdkit.symbol.fpn_config import fpn_settings

        return dataclasses.replace(
            config, model=dataclasses.replace(config.model, network=meta["network"],
                                              resize_short=int(meta["resize_short"]),
                                              resize_long=int(meta["resize_long"])),
            fpn=fpn_settings(**meta["fpn"]))

    def make_iterator(self, config, split, dataset, *, part_index, num_parts, augment):
        from ssdkit.api.data import two_stage_iterator

        return two_stage_iterator(config, split, dataset, part_index=part_index, num_parts=num_parts,
                                  augment=augment)

    def input_shapes(self, config, batch_size):
        h, w = self.image_shape(config)
        return {"data": (batch_size, 3, h, w), "im_info": (batch_size, 3),
                "label": (batch_size, config.data.max_objects, 6)}

    def inference_shapes(self, meta, batch_size):
        h, w = meta["image_shape"]
        return [("data", (batch_size, 3, h, w)), ("im_info", (batch_size, 3))]

    def metric_labels(self, labels, batch):
        from ssdkit.dataset.two_stage import normalized_labels

        return normalized_labels(labels, batch.data[1].asnumpy()[:len(labels)])

    def train_metric(self):
        from ssdkit.engine.fpn_metric import FPNLossMetric

        return FPNLossMetric()

    def initializer(self, num_classes):
        # He initialisation; the FPN heads carry their own (Detectron) init attributes, which win
        from ssdkit.symbol.common import he_initializer

        return he_initializer()

    def preprocess(self, meta, image, normalization):
        """``(H, W, 3)`` uint8 RGB -> ``(data (3, h, w) float32, im_info (3,) [h, w, scale])``, unpadded."""
        from ssdkit.dataset.two_stage import make_sample

        sample = make_sample(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool),
                             np.random.default_rng(0), short=int(meta["resize_short"]),
                             long=int(meta["resize_long"]), normalization=normalization)
        return sample.data, sample.im_info

    def batch_inputs(self, meta, inputs, batch_size):
        h, w = meta["image_shape"]
        data = np.zeros((batch_size, 3, h, w), np.float32)
        im_info = np.tile(np.array([h, w, 1.0], np.float32), (batch_size, 1))   # unused slots: a valid size
        for i, (x, info) in enumerate(inputs):
            data[i, :, :x.shape[1], :x.shape[2]] = x
            im_info[i] = info
        return [data, im_info]

    def check_portable(self, meta):
        raise ValueError("network %s cannot be deployed with --portable: MXNet has no contrib equivalents of the "
                         "FPN operators (RPNAnchors, FPNProposal, RCNNDetection); deploy without --portable and "
                         "import ssdkit.ops before loading the model" % meta["network"])


_FAMILIES = {SSD: SSDFamily(), FPN: FPNFamily()}


_SSD_KEYS = ("model.data_shape", "model.test_shape", "model.overlap_threshold", "model.negative_mining_ratio")
"""Config keys only SSD graphs read (FPN networks resize by ``model.resize_*`` and match by ``[fpn]``)."""
_FPN_KEYS_OF_MODEL = ("model.resize_short", "model.resize_long")
"""Config keys only FPN graphs read."""


def family_overrides(network, overrides, *, flags=None):
    """Command-line ``overrides`` (``{"section.key": value}``) as the family of ``network`` reads them.

    FPN networks take ``model.nms_thresh`` as ``fpn.test_nms_threshold`` (the one NMS threshold of
    their detections). A key the family's graphs do not read is refused, so no flag is accepted and
    then ignored.

    Parameters
    ----------
    network : str, the run's network
    overrides : dict, the flags given
    flags : dict ``{key: flag}`` to name flags in the message (default: the keys)

    Raises
    ------
    ValueError : a key of the other family
    """
    fpn = network in _fpn_networks()
    foreign = _SSD_KEYS if fpn else _FPN_KEYS_OF_MODEL
    refused = [k for k in overrides if k in foreign]
    if refused:
        names = ", ".join((flags or {}).get(k, k) for k in refused)
        raise ValueError("%s do%s not apply to %s network %s (%s); drop %s"
                         % (names, "es" if len(refused) == 1 else "", "FPN" if fpn else "SSD", network,
                            "it resizes by --resize-short / --resize-long and matches by its [fpn] settings"
                            if fpn else "it runs at the square --data-shape", "it" if len(refused) == 1 else "them"))
    if fpn and "model.nms_thresh" in overrides:
        overrides = dict(overrides)
        overrides["fpn.test_nms_threshold"] = overrides.pop("model.nms_thresh")
    return overrides


def family_of(network):
    """The family of a network name (``fpn_*`` -> FPN, else SSD), a Config, or a meta dict."""
    if isinstance(network, dict):
        network = network["network"]
    elif not isinstance(network, str):
        network = network.model.network
    return _FAMILIES[FPN if network in _fpn_networks() else SSD]
