"""FPN two-stage (Faster R-CNN) graphs: ``get_symbol_train`` (targets and losses) and ``get_symbol``
(detections), both built by one internal function, :func:`_fpn_graph`.

The network (``notes/fpn_spec.md``): ResNet C2..C5 (:mod:`ssdkit.symbol.resnet`; ``fpn_lite``: the ``lite``
body, :mod:`ssdkit.symbol.lite`), FPN neck P2..P6,
shared RPN head with ``RPNAnchors`` per level, proposals from ``FPNProposal`` (NMS per level), in
training ``RPNTarget`` and ``ProposalTarget`` sampling, each RoI pooled once by RoIAlign 7x7 on its level
(``MultiLevelROIAlign``, level rule :func:`~ssdkit.symbol.fpn_head.roi_levels`), a 2fc box head, and at test
time ``RCNNDetection``.
The operators are ssdkit's (``src/operators/``); settings are :class:`~ssdkit.symbol.fpn_config.FPNConfig`
fields, presets come from :func:`~ssdkit.symbol.fpn_config.fpn_config`.

Graph inputs (boxes in pixels of the resized image, see :mod:`ssdkit.dataset.two_stage`):

* ``data (B, 3, H, W)``: ImageNet-normalised images, top-left aligned, zero padded to ``image_shape``;
* ``im_info (B, 3)``: ``[h, w, scale]`` of each resized image inside the padded tensor;
* training only, ``label (B, M, 5 or 6)``: rows ``[cls, x0, y0, x1, y1(, difficult)]``, padding ``cls = -1``;
* training with the mask branch (``mask = true``), ``gt_masks (B, M, Hm, Wm)``: each label row's instance
  mask, 0/1, in padded image coordinates divided by ``mask_stride`` (:class:`~ssdkit.dataset.two_stage_iter.TwoStageIter`
  with ``masks=True``).

With ``mask = true`` (Mask R-CNN, :mod:`ssdkit.symbol.mask_head`) the foreground rows of the sampled RoIs
also go through RoIAlign ``mask_roi_size`` and the mask head, trained against ``MaskTarget``; at test time the
detections do, and the graph outputs their masks as well.

The graph has fixed shapes: ``FPNProposal`` needs the anchors per level, which follow from
``image_shape``, and ``ProposalTarget`` the images per batch, so a graph serves one padded size (and, in
training, one per-device batch size).
"""
import math

import mxnet as mx
import numpy as np

from ssdkit import ops  # importing ssdkit loads the operator library (RPNAnchors, RPNTarget, ...)
from ssdkit.anchors import legacy_cell_anchors
from ssdkit.symbol.fpn_config import FPN_NETWORKS, LEVEL_STRIDES, LEVELS, ROI_LEVELS, RPN_STDS, fpn_settings
from ssdkit.symbol.fpn_head import backbone_stages, box_head, fpn_neck, multilevel_roi_align, rpn_head
from ssdkit.symbol.mask_head import class_channel, detection_rois, foreground_rows, mask_head, mask_loss

TRAIN_OUTPUTS = ("rpn_cls_loss", "rpn_box_loss", "rcnn_cls_loss", "rcnn_box_loss", "rcnn_cls_prob", "rcnn_label")
"""Outputs of the training graph, in order (each ``<name>_output`` in ``list_outputs()``); with
``mask = true`` :data:`MASK_TRAIN_OUTPUTS`."""
MASK_TRAIN_OUTPUTS = TRAIN_OUTPUTS + ("mask_loss",)
"""Outputs of the training graph with the mask branch (``fpn.mask = true``)."""


def _op(name):
    """``mx.sym.<name>`` of ssdkit's operator library, with an error that says how to get it."""
    try:
        return getattr(mx.sym, name)
    except AttributeError:
        raise RuntimeError("operator %s is not in the loaded ssdkit operator library (%s); rebuild it from "
                           "a checkout that has src/operators/ for it: .venv/bin/python setup.py -q build_ext "
                           "--inplace" % (name, ops.load_library())) from None


def _tuple_attr(values):
    """Operator attribute text of a float tuple, as Python writes it: ``(8.0,)``, ``(0.5, 1.0, 2.0)``."""
    return str(tuple(float(v) for v in values))


def _check_image_shape(image_shape):
    if len(image_shape) != 2 or min(int(v) for v in image_shape) < 64:
        raise ValueError("image_shape must be the padded (H, W), both >= 64, got %r" % (image_shape,))
    return tuple(int(v) for v in image_shape)


def _backbone(network):
    if network not in FPN_NETWORKS:
        raise ValueError("unknown FPN network %r; choose one of %s" % (network, ", ".join(sorted(FPN_NETWORKS))))
    return FPN_NETWORKS[network]


def _smooth_l1(diff, beta):
    """Smooth L1 with transition ``beta``: ``0.5 x^2 / beta`` below it, ``|x| - 0.5 beta`` above."""
    return mx.sym.smooth_l1(diff, scalar=1.0 / math.sqrt(beta))


def _norm_kwargs(settings):
    """The ``norm`` / ``gn_groups`` arguments of the blocks: none for the default (BatchNorm) graphs, so their
    calls and JSON stay as they were."""
    return {} if settings.norm == "none" else {"norm": settings.norm, "gn_groups": settings.gn_groups}


def _features(network, settings):
    norm = _norm_kwargs(settings)
    stages = backbone_stages(_backbone(network), frozen_bn=settings.frozen_bn, variant=settings.backbone_variant,
                             **norm)
    return fpn_neck(stages, settings.fpn_channels, p6=settings.fpn_p6, **norm)


def _level_sizes(features, image_shape, num_anchors):
    """Anchors per level: ``H_l * W_l * A`` of each feature map at input ``image_shape``."""
    _, shapes, _ = mx.sym.Group(features).infer_shape(data=(1, 3) + image_shape)
    return tuple(int(s[2] * s[3] * num_anchors) for s in shapes)


def _pyramid(network, settings, image_shape):
    """Features P2..P6 and the RPN outputs; returns (features, logits, deltas, anchors, level_sizes)."""
    features = _features(network, settings)
    num_anchors = settings.num_anchors
    level_sizes = _level_sizes(features, image_shape, num_anchors)
    logits, deltas, maps = rpn_head(features, num_anchors, settings.rpn_channels or settings.fpn_channels)
    # RPNAnchors reads only the grid's height and width: it takes them from the level's A-channel
    # objectness map rather than the 256-channel feature, which it would copy out of oneDNN's
    # layout on every forward; BlockGrad keeps its zero backward out of the head's gradient
    level_anchors = _legacy_anchors if settings.anchor_style == "legacy" else _centered_anchors
    anchors = mx.sym.concat(*[level_anchors(mx.sym.BlockGrad(grid), stride, level, settings)
                              for grid, stride, level in zip(maps, LEVEL_STRIDES, LEVELS)],
                            dim=1, name="rpn_anchors")
    return features, logits, deltas, anchors, level_sizes


def _centered_anchors(grid, stride, level, settings):
    """``(1, H W A, 4)`` anchors of one level, ``anchor_style = "centered"`` (``RPNAnchors``)."""
    return _op("RPNAnchors")(grid, stride=stride, scales=_tuple_attr(settings.anchor_scales),
                             ratios=_tuple_attr(settings.anchor_ratios), offset=0.5, name="rpn_anchors_p%d" % level)


def _legacy_anchors(grid, stride, level, settings):
    """``(1, H W A, 4)`` anchors of one level, ``anchor_style = "legacy"``
    (:func:`ssdkit.anchors.legacy_cell_anchors` shifted to every cell, exactly: all values are halves).

    ``RPNAnchors`` with a 2-pixel square at offset 0 gives each cell's ``(x s - 1, y s - 1, x s + 1, y s + 1)``;
    adding the cell anchors plus ``(1, 1, -1, -1)`` gives the anchors, location-major then anchor.
    """
    cells = legacy_cell_anchors(stride, settings.anchor_scales, settings.anchor_ratios) + np.array([1, 1, -1, -1])
    corners = _op("RPNAnchors")(grid, stride=stride, scales=_tuple_attr((2.0 / stride,)), ratios="(1.0,)", offset=0.0,
                                name="rpn_anchors_p%d" % level)
    table = mx.sym.concat(*[mx.sym.full(shape=(1,), val=float(v)) for v in cells.reshape(-1)], dim=0)
    table = mx.sym.reshape(table, shape=(1, 1, -1, 4))
    anchors = mx.sym.broadcast_add(mx.sym.reshape(corners, shape=(1, -1, 1, 4)), table)
    return mx.sym.reshape(anchors, shape=(1, -1, 4), name="rpn_anchors_p%d_legacy" % level)


def _proposals(logits, deltas, anchors, im_info, level_sizes, settings, train):
    """``FPNProposal`` on the RPN outputs (no gradient): ``rois (B * P, 5)``."""
    prob = mx.sym.sigmoid(mx.sym.BlockGrad(logits), name="rpn_cls_prob")
    if settings.rpn_merge_levels:
        level_sizes = (sum(level_sizes),)
    rois, _scores = _op("FPNProposal")(
        prob, mx.sym.BlockGrad(deltas), anchors, im_info, level_sizes=str(tuple(level_sizes)),
        pre_nms_top_n=settings.rpn_pre_nms_top_n_train if train else settings.rpn_pre_nms_top_n_test,
        post_nms_top_n=settings.rpn_post_nms_top_n_train if train else settings.rpn_post_nms_top_n_test,
        nms_threshold=settings.rpn_nms_threshold, min_size=settings.rpn_min_size, stds=_tuple_attr(RPN_STDS),
        name="rpn_proposal")
    return rois


def _roi_align(features, rois, settings, pooled_size, **name):
    """RoIAlign of each RoI on its own level of P2..P5 (the level rule of the settings)."""
    return multilevel_roi_align(features[:len(ROI_LEVELS)], rois, strides=LEVEL_STRIDES[:len(ROI_LEVELS)],
                                pooled_size=pooled_size, sample_ratio=settings.roi_sample_ratio,
                                min_level=ROI_LEVELS[0], aligned=settings.roi_aligned,
                                level_offset=settings.roi_level_offset, canonical_size=settings.roi_canonical_size,
                                **name)


def _rcnn(features, rois, num_classes, settings):
    """RoIAlign on the level of each RoI and the box head: ``(cls_score (R, C+1), bbox_pred (R, 4(C+1)))``."""
    pooled = _roi_align(features, rois, settings, settings.roi_size)
    if settings.rcnn_avg_pool:
        pooled = mx.sym.Pooling(pooled, pool_type="avg", kernel=(3, 3), stride=(2, 2), pad=(1, 1),
                                count_include_pad=True, name="rcnn_avg_pool")
    norm = _norm_kwargs(settings)
    return box_head(pooled, num_classes, settings.rcnn_fc_dim, batchnorm=settings.rcnn_batchnorm, **norm)


def _mask_logits(features, rois, num_classes, settings):
    """The mask branch on ``rois (R, 5)`` pixels: RoIAlign ``mask_roi_size`` on each RoI's level and
    :func:`~ssdkit.symbol.mask_head.mask_head`: ``(R, C, S, S)`` logits."""
    pooled = _roi_align(features, rois, settings, settings.mask_roi_size, name="mask_roi_align")
    return mask_head(pooled, num_classes, channels=settings.mask_channels, num_convs=settings.mask_convs,
                     norm=settings.norm, gn_groups=settings.gn_groups)


def _mask_training(features, rois, labels, label, batch_size, num_classes, settings):
    """Mask loss on the foreground part of the sampled RoIs (the first F rows of each image,
    :attr:`~ssdkit.symbol.fpn_config.FPNConfig.mask_foreground_rois`), targets by ``MaskTarget`` from the
    ``gt_masks`` input."""
    foreground = settings.mask_foreground_rois
    rois = foreground_rows(mx.sym.BlockGrad(rois), batch_size, settings.rcnn_batch_rois, foreground, (5,))
    labels = foreground_rows(mx.sym.BlockGrad(labels), batch_size, settings.rcnn_batch_rois, foreground)
    target = _op("MaskTarget")(rois, labels, label, mx.sym.Variable("gt_masks"), mask_size=settings.mask_size,
                               spatial_scale=1.0 / settings.mask_stride, sample_ratio=2,
                               aligned=settings.roi_aligned, num_classes=num_classes, name="mask_target")
    logits = _mask_logits(features, rois, num_classes, settings)
    return mask_loss(logits, labels, target, num_classes, settings.mask_loss_weight)


def _mask_inference(features, detection, im_info, num_classes, settings):
    """``masks (B, K, S, S)``: sigmoid of each detection's own class channel (``cls_id`` -1 rows: any value)."""
    rois = detection_rois(detection, im_info)
    logits = class_channel(_mask_logits(features, rois, num_classes, settings),
                           mx.sym.reshape(mx.sym.slice_axis(detection, axis=2, begin=0, end=1), shape=(-1,)),
                           num_classes, "mask_class_logits")
    probs = mx.sym.sigmoid(logits)                                              # (B K, S, S)
    # (B, K) from the detections themselves: a saved graph whose RCNNDetection max_detections is changed
    # (deploy / evaluate overrides) still reshapes right
    return mx.sym.reshape_like(probs, mx.sym.BlockGrad(detection), lhs_begin=0, lhs_end=1, rhs_begin=0, rhs_end=2,
                               name="masks")


def _detections(rois, cls_prob, bbox_pred, im_info, settings):
    """``RCNNDetection``: ``(B, K, 6)`` detections normalised to each image's valid size (clipped to it
    unless ``rcnn_clip_boxes`` is False)."""
    clip = {} if settings.rcnn_clip_boxes else {"clip": 0}   # the default graph keeps its attributes
    return _op("RCNNDetection")(rois, cls_prob, bbox_pred, im_info, stds=_tuple_attr(settings.rcnn_stds),
                                score_threshold=settings.test_score_threshold,
                                nms_threshold=settings.test_nms_threshold,
                                max_detections=settings.test_max_detections, normalize=1, name="detection", **clip)


def _rpn_losses(logits, deltas, anchors, label, im_info, batch_size, settings):
    """RPN objectness BCE over sampled anchors and smooth L1 over positives, both / (B * batch_size)."""
    cls_target, box_target, box_weight = _op("RPNTarget")(
        anchors, label, im_info, positive_iou=settings.rpn_positive_iou, negative_iou=settings.rpn_negative_iou,
        batch_size_per_image=settings.rpn_batch_size, positive_fraction=settings.rpn_positive_fraction,
        allowed_border=settings.rpn_allowed_border, stds=_tuple_attr(RPN_STDS), name="rpn_target")
    cls_target = mx.sym.BlockGrad(cls_target)
    norm = float(batch_size * settings.rpn_batch_size)
    sampled = cls_target >= 0
    positive = mx.sym.relu(cls_target)                       # 1 positive, 0 negative or ignored
    # binary cross entropy with logits, stable: max(x, 0) - x t + log(1 + exp(-|x|))
    bce = mx.sym.relu(logits) - logits * positive + mx.sym.Activation(-mx.sym.abs(logits), act_type="softrelu")
    rpn_cls_loss = mx.sym.MakeLoss(mx.sym.sum(bce * sampled) / norm, name="rpn_cls_loss")
    box = mx.sym.BlockGrad(box_weight) * _smooth_l1(deltas - mx.sym.BlockGrad(box_target), settings.rpn_box_beta)
    rpn_box_loss = mx.sym.MakeLoss(mx.sym.sum(box) / norm, name="rpn_box_loss")
    return rpn_cls_loss, rpn_box_loss


def _rcnn_losses(cls_score, bbox_pred, labels, box_target, box_weight, settings):
    """Softmax cross entropy and smooth L1, both over the sampled RoIs (labels >= 0) and / their count."""
    labels = mx.sym.BlockGrad(labels)
    sampled = labels >= 0
    count = mx.sym.BlockGrad(mx.sym.maximum(mx.sym.sum(sampled), 1.0))
    log_prob = mx.sym.log_softmax(cls_score, axis=-1)
    picked = mx.sym.pick(log_prob, mx.sym.relu(labels), axis=1)
    rcnn_cls_loss = mx.sym.MakeLoss(-mx.sym.sum(picked * sampled) / count, name="rcnn_cls_loss")
    box = mx.sym.BlockGrad(box_weight) * _smooth_l1(bbox_pred - mx.sym.BlockGrad(box_target), settings.rcnn_box_beta)
    rcnn_box_loss = mx.sym.MakeLoss(mx.sym.sum(box) / count, name="rcnn_box_loss")
    cls_prob = mx.sym.BlockGrad(mx.sym.softmax(cls_score, axis=-1), name="rcnn_cls_prob")
    return rcnn_cls_loss, rcnn_box_loss, cls_prob, mx.sym.BlockGrad(labels, name="rcnn_label")


def _fpn_graph(network, num_classes, image_shape, settings, *, batch_size=None):
    """The one builder: training graph when ``batch_size`` is given, else the inference graph."""
    if int(num_classes) < 1:
        raise ValueError("num_classes must be >= 1 (object classes, background excluded), got %r" % (num_classes,))
    num_classes = int(num_classes)
    image_shape = _check_image_shape(image_shape)
    train = batch_size is not None
    im_info = mx.sym.Variable("im_info")
    features, logits, deltas, anchors, level_sizes = _pyramid(network, settings, image_shape)
    rois = _proposals(logits, deltas, anchors, im_info, level_sizes, settings, train)
    if not train:
        cls_score, bbox_pred = _rcnn(features, rois, num_classes, settings)
        cls_prob = mx.sym.softmax(cls_score, axis=-1, name="rcnn_cls_prob")
        detection = _detections(rois, cls_prob, bbox_pred, im_info, settings)
        if not settings.mask:
            return detection
        return mx.sym.Group([detection, _mask_inference(features, detection, im_info, num_classes, settings)])

    label = mx.sym.Variable("label")
    rpn_cls_loss, rpn_box_loss = _rpn_losses(logits, deltas, anchors, label, im_info, batch_size, settings)
    rois, labels, box_target, box_weight = _op("ProposalTarget")(
        rois, label, num_classes=num_classes, batch_images=batch_size, batch_rois=settings.rcnn_batch_rois,
        fg_fraction=settings.rcnn_fg_fraction, fg_thresh=settings.rcnn_fg_iou,
        bg_thresh_hi=settings.rcnn_bg_iou_hi, bg_thresh_lo=settings.rcnn_bg_iou_lo,
        stds=_tuple_attr(settings.rcnn_stds), add_gt_as_proposals=1, name="proposal_target")
    cls_score, bbox_pred = _rcnn(features, rois, num_classes, settings)
    rcnn_outputs = _rcnn_losses(cls_score, bbox_pred, labels, box_target, box_weight, settings)
    if not settings.mask:
        return mx.sym.Group([rpn_cls_loss, rpn_box_loss, *rcnn_outputs])
    masks = _mask_training(features, rois, labels, label, batch_size, num_classes, settings)
    return mx.sym.Group([rpn_cls_loss, rpn_box_loss, *rcnn_outputs, masks])


def get_symbol_train(network, num_classes, *, image_shape, batch_size, **settings):
    """FPN training graph.

    Parameters
    ----------
    network : str, a key of :data:`ssdkit.symbol.fpn_config.FPN_NETWORKS` (``fpn_resnet50``, ``fpn_resnet18``,
        ``fpn_lite``)
    num_classes : int, object classes C (background excluded)
    image_shape : (H, W), the padded input size (``data`` is ``(B, 3, H, W)``), e.g.
        :func:`ssdkit.dataset.two_stage.batch_shape` of the resize
    batch_size : int, images per device batch (``ProposalTarget``'s ``batch_images``; with several
        devices, the iterator batch divided by their number)
    settings : :class:`~ssdkit.symbol.fpn_config.FPNConfig` fields (unknown keys raise ValueError)

    Returns
    -------
    mx.sym.Symbol, a group of :data:`TRAIN_OUTPUTS`:
        ``rpn_cls_loss (1,)`` sigmoid cross entropy summed over the sampled anchors / (B * rpn_batch_size);
        ``rpn_box_loss (1,)`` smooth L1 (beta ``rpn_box_beta``) over positive anchors / (B * rpn_batch_size);
        ``rcnn_cls_loss (1,)`` softmax cross entropy over the sampled RoIs / their number;
        ``rcnn_box_loss (1,)`` class-specific smooth L1 (beta ``rcnn_box_beta``) over foreground RoIs /
        the number of sampled RoIs (these four are MakeLoss outputs: their values are the losses);
        ``rcnn_cls_prob (B * S, C + 1)`` softmax of the sampled RoIs (BlockGrad, for metrics);
        ``rcnn_label (B * S,)`` their targets (BlockGrad; 0 background, k + 1 class k, -1 padding).
    With ``mask = true`` (:data:`MASK_TRAIN_OUTPUTS`) also ``mask_loss (1,)`` (MakeLoss): ``mask_loss_weight`` x
    the sigmoid cross entropy of each foreground RoI's class channel against its ``MaskTarget``, averaged over
    the foreground RoIs x S x S (among the first ``mask_foreground_rois`` rows of each image), 0 when there are
    none; the graph then has the input ``gt_masks (B, M, ceil(H / mask_stride), ceil(W / mask_stride))``.
    """
    if int(batch_size) < 1:
        raise ValueError("batch_size must be >= 1, got %r" % (batch_size,))
    return _fpn_graph(network, num_classes, image_shape, fpn_settings(**settings), batch_size=int(batch_size))


def get_symbol(network, num_classes, *, image_shape, **settings):
    """FPN inference graph (same network and parameter names as :func:`get_symbol_train`).

    Parameters are those of :func:`get_symbol_train` without ``batch_size`` (any batch works).

    Returns
    -------
    mx.sym.Symbol, ``detection (B, K, 6)`` float32, ``K = test_max_detections``: rows ``[cls_id, score,
    x0, y0, x1, y1]`` sorted by score, corners normalised to [0, 1] of each image's valid area (as SSD's
    detections), ``cls_id = -1`` (and score -1) for empty rows. Inputs ``data`` and ``im_info``.
    With ``mask = true`` a group ``[detection (B, K, 6), masks (B, K, S, S)]``: ``masks[b, k]`` the sigmoid
    probabilities of detection k's own class channel over its box (``S = mask_size``; to paste into the
    image, :func:`ssdkit.masks.paste_masks`); rows with ``cls_id = -1`` hold meaningless values.
    """
    return _fpn_graph(network, num_classes, image_shape, fpn_settings(**settings))


def get_rpn_outputs(network, *, image_shape, **settings):
    """The RPN's raw outputs, for tests and custom heads.

    Returns
    -------
    mx.sym.Symbol, a group ``[logits (B, N), deltas (B, 4N), anchors (1, N, 4)]`` (input ``data`` only);
    the per-level anchor counts are ``fpn_level_sizes(network, image_shape, **settings)``.
    """
    _, logits, deltas, anchors, _ = _pyramid(network, fpn_settings(**settings), _check_image_shape(image_shape))
    return mx.sym.Group([logits, deltas, anchors])


def fpn_level_sizes(network, *, image_shape, **settings):
    """Anchors per level P2..P6 (``FPNProposal``'s ``level_sizes``) for a padded input ``image_shape``."""
    settings = fpn_settings(**settings)
    return _level_sizes(_features(network, settings), _check_image_shape(image_shape), settings.num_anchors)
