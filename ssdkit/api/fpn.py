"""The two-stage FPN (Faster R-CNN) detector family (see :mod:`ssdkit.api.family`): aspect-preserving
resize padded to a fixed ``image_shape``, inputs ``data`` and ``im_info``, pixel labels,
``RCNNDetection``. With ``fpn.mask`` (Mask R-CNN) the training batches also carry ``gt_masks`` and the
detection graph outputs ``[detection, masks]``; box evaluation reads output 0 as for every model."""
import dataclasses

import numpy as np

from ssdkit.api.data import augmentation_of, copy_paste_of, label_rows, normalization_of
from ssdkit.api.inference import set_detection_attrs
from ssdkit.dataset.two_stage import make_sample, normalized_labels
from ssdkit.dataset.two_stage_iter import TwoStageIter
from ssdkit.engine.fpn_metric import FPNLossMetric
from ssdkit.symbol.common import he_initializer
from ssdkit.symbol.fpn import get_symbol, get_symbol_train
from ssdkit.symbol.fpn_config import batch_shape, fpn_settings

NAME = "fpn"

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


class FPNFamily:
    """Two-stage FPN: aspect-preserving resize (``model.resize_short`` / ``resize_long``) padded to a
    fixed ``image_shape``; inputs ``data`` and ``im_info``; pixel labels (normalised for metrics)."""

    name = NAME
    data_names = ("data", "im_info")
    label_names = ("label",)
    """Label inputs of the box-only graphs; a mask model's training batches add ``gt_masks`` (training takes
    the label names from its iterator)."""
    train_outputs = None

    def _settings(self, config):
        return dataclasses.asdict(config.fpn)

    def image_shape(self, config):
        return batch_shape(config.model.resize_short, config.model.resize_long)

    def symbols(self, config, num_classes, *, num_devices=1):
        batch = config.data.batch_size
        if batch % num_devices:
            raise ValueError("data.batch_size = %d must be a multiple of the %d devices for FPN networks (the "
                             "graph samples RoIs per device batch)" % (batch, num_devices))
        kwargs = dict(image_shape=self.image_shape(config), **self._settings(config))
        return (get_symbol_train(config.model.network, num_classes, batch_size=batch // num_devices, **kwargs),
                get_symbol(config.model.network, num_classes, **kwargs))

    def meta_fields(self, config):
        return {"network": config.model.network, "family": NAME, "resize_short": config.model.resize_short,
                "resize_long": config.model.resize_long, "image_shape": list(self.image_shape(config)),
                "fpn": {k: list(v) if isinstance(v, tuple) else v for k, v in self._settings(config).items()}}

    def inference_symbol(self, meta, *, max_detections=None):
        """The detection graph ``meta`` describes; ``max_detections`` > 0 replaces the meta's
        ``fpn.test_max_detections`` (None or -1 keep it)."""
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
        return dataclasses.replace(
            config, model=dataclasses.replace(config.model, network=meta["network"],
                                              resize_short=int(meta["resize_short"]),
                                              resize_long=int(meta["resize_long"])),
            fpn=fpn_settings(**meta["fpn"]))

    def make_iterator(self, config, split, dataset, *, part_index, num_parts, augment):
        return two_stage_iterator(config, split, dataset, part_index=part_index, num_parts=num_parts,
                                  augment=augment)

    def input_shapes(self, config, batch_size):
        h, w = self.image_shape(config)
        shapes = {"data": (batch_size, 3, h, w), "im_info": (batch_size, 3),
                  "label": (batch_size, config.data.max_objects, 6)}
        if config.fpn.mask:
            stride = config.fpn.mask_stride
            shapes["gt_masks"] = (batch_size, config.data.max_objects, -(-h // stride), -(-w // stride))
        return shapes

    def inference_shapes(self, meta, batch_size):
        h, w = meta["image_shape"]
        return [("data", (batch_size, 3, h, w)), ("im_info", (batch_size, 3))]

    def metric_labels(self, labels, batch):
        return normalized_labels(labels, batch.data[1].asnumpy()[:len(labels)])

    def train_metric(self):
        return FPNLossMetric()

    def initializer(self, num_classes):
        # He initialisation; the FPN heads carry their own (Detectron) init attributes, which win
        return he_initializer()

    def preprocess(self, meta, image, normalization):
        """``(H, W, 3)`` uint8 RGB -> ``(data (3, h, w) float32, im_info (3,) [h, w, scale])``, unpadded."""
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


def two_stage_iterator(config, split, dataset=None, *, part_index=0, num_parts=1, augment=None):
    """A two-stage (FPN) iterator over ``split``: aspect-preserving resize to ``model.resize_short`` /
    ``resize_long``, padded to :func:`ssdkit.symbol.fpn_config.batch_shape`.

    Parameters are those of :func:`ssdkit.api.ssd.ssd_iterator`; image files only (voc, coco, list).

    Returns
    -------
    TwoStageIter with ``data (B, 3, H, W)``, ``im_info (B, 3)`` and pixel ``label (B, M, 6)``; for
    training with ``fpn.mask`` also ``gt_masks (B, M, ceil(H / s), ceil(W / s))``, ``s = fpn.mask_stride``
    (the validation batches keep the boxes only: box mAP), and mask-based copy-paste when
    ``augment.copy_paste_prob`` > 0 (:func:`ssdkit.api.data.copy_paste_of`; a mask model only).
    """
    data = config.data
    train = split == "train"
    if data.format == "rec":
        raise ValueError("FPN networks (%s) read image files (data.format voc, coco or list), not .rec files"
                         % config.model.network)
    if dataset is None:
        raise ValueError("no %s data given (data.%s is empty)" % (split, "train" if train else "val"))
    aug = (augment if augment is not None else augmentation_of(config.augment)) if train else None
    records = list(dataset.records)[part_index::num_parts]
    masks = {"masks": True, "mask_stride": config.fpn.mask_stride} if train and config.fpn.mask else {}
    if train and config.augment.copy_paste_prob > 0:
        if not config.fpn.mask:
            raise ValueError("augment.copy_paste_prob = %g needs the instance masks of a mask model: set fpn.mask = "
                             "true (or copy_paste_prob = 0)" % config.augment.copy_paste_prob)
        masks["copy_paste"] = copy_paste_of(config.augment)
    return TwoStageIter(records, batch_size=data.batch_size, short=config.model.resize_short,
                        long=config.model.resize_long, max_objects=label_rows(config, dataset), augment=aug,
                        normalization=normalization_of(config), shuffle=train,
                        seed=config.runtime.seed + 1000 * part_index, num_workers=max(1, data.num_workers),
                        last_batch="discard" if train else "pad", strict=data.strict, **masks)
