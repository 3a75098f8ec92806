"""Blocks of the FPN two-stage graph: backbone stages, FPN neck, shared RPN head, RoI level
assignment, multi-level RoIAlign and the 2fc box head. Pure functions returning ``mx.sym``.

Parameter names (stable, for checkpoints and weight import):

* backbone: those of :mod:`ssdkit.symbol.resnet` (``conv0``, ``stage{s}_unit{u}_conv{j}`` ...) or of
  :mod:`ssdkit.symbol.lite` (``conv1``, ``stage{s}_unit{u}_dw`` / ``_pw``);
* neck: ``fpn_lateral{l}`` (1x1) and ``fpn_output{l}`` (3x3) for l = 2..5;
* RPN head, shared by all levels: ``rpn_conv`` (3x3), ``rpn_cls_logits`` (1x1, A), ``rpn_bbox_pred``
  (1x1, 4A);
* box head: ``rcnn_fc6``, ``rcnn_fc7``, ``rcnn_cls_score`` (C + 1), ``rcnn_bbox_pred`` (4 (C + 1));
* with ``norm="group"``: ``<layer>_gn_gamma`` / ``_beta`` after each neck convolution and hidden box layer,
  which then have no ``_bias``, and in the backbone ``<conv>_gn_gamma`` / ``_beta`` in place of every BatchNorm
  ``<conv>_bn`` (``conv0_gn``, ``stage1_unit1_conv1_gn``, ``stage2_unit1_dw_gn`` ...);
* mask head: :mod:`ssdkit.symbol.mask_head`.

Initialisation (Detectron's) is attached to the variables through their ``__init__`` attribute, which
``Module.init_params`` honours whatever its default initializer is: the neck convolutions and the two
fully connected layers use "Xavier fill" (uniform, fan-in, ``magnitude=3``), the predictors small
Gaussians (std 0.01, box regressors of the R-CNN 0.001), all their biases 0. A fan-out Xavier on
``rcnn_fc6`` (fan-in 256 * 7 * 7, fan-out 1024) would amplify its input about 7 times and makes
training from scratch diverge.
"""
import math

import mxnet as mx

from ssdkit.symbol import lite, resnet
from ssdkit.symbol.common import group_norm


LITE_STAGES = ((16, 32, 96, 128, 160), (2, 3, 3, 2))
"""``(widths, units)`` of the ``lite`` body under ``fpn_lite`` (:func:`ssdkit.symbol.lite.get_symbol`): the
main job's SSD body (conv1 16, stages 2-4 of 32, 96, 128 channels) plus a stage 5 of two 160-channel units for
C5 (stride 32)."""


def backbone_norm_widths(backbone, variant="v1"):
    """The distinct widths of the backbone's normalised convolutions, ascending (``gn_groups`` must divide
    each with ``norm="group"``): :func:`ssdkit.symbol.resnet.norm_widths` or the :data:`LITE_STAGES` widths."""
    if backbone == "lite":
        return tuple(sorted(set(LITE_STAGES[0])))
    return resnet.norm_widths(backbone, variant)


def check_backbone_groups(backbone, variant, gn_groups, network=None):
    """ValueError naming ``fpn.gn_groups`` unless it divides every :func:`backbone_norm_widths` (``norm="group"``
    puts GroupNorm in the backbone)."""
    widths = backbone_norm_widths(backbone, variant)
    bad = [w for w in widths if gn_groups < 1 or w % gn_groups]
    if bad:
        body = network or ("lite" if backbone == "lite" else "resnet%d %s" % (backbone, variant))
        raise ValueError("config key 'fpn.gn_groups': %d does not divide the backbone widths %s of %s (not %s); "
                         "norm = \"group\" puts GroupNorm in place of the backbone's BatchNorm, so gn_groups must "
                         "divide %d" % (gn_groups, list(widths), body, bad, math.gcd(*widths)))


def backbone_stages(backbone, *, frozen_bn=False, variant="v1", norm="none", gn_groups=32):
    """The backbone's stage outputs C2..C5.

    Parameters
    ----------
    backbone : int ResNet depth (a key of :data:`ssdkit.symbol.resnet.SPECS`) or ``"lite"``
        (:data:`LITE_STAGES`; trained from scratch, its BatchNorm cannot be frozen)
    frozen_bn : bool, BatchNorm with stored statistics in training (see ``resnet.get_symbol``)
    variant : str, the ResNet variant (:data:`ssdkit.symbol.resnet.VARIANTS`; ``v1`` for ``lite``)
    norm : str, ``none`` (the backbone's BatchNorm) or ``group``: GroupNorm of ``gn_groups`` groups in place of
        every BatchNorm (SimpleDet's / Detectron's GN backbones; ``gn_groups`` must divide every
        :func:`backbone_norm_widths`; not with ``frozen_bn``)

    Returns
    -------
    list of 4 mx.sym.Symbol, ``(B, C_l, H / 2^l, W / 2^l)`` for l = 2..5, all reading ``data``.
    """
    if norm not in ("none", "group"):
        raise ValueError("backbone_stages: norm must be none or group, got %r" % (norm,))
    groups = 0
    if norm == "group":
        if frozen_bn:
            raise ValueError("config key 'fpn.frozen_bn': norm = \"group\" replaces the backbone's BatchNorm with "
                             "GroupNorm, which has no statistics to freeze: set fpn.frozen_bn = false")
        check_backbone_groups(backbone, variant, gn_groups)
        groups = gn_groups
    if backbone == "lite":
        if frozen_bn:
            raise ValueError("fpn.frozen_bn is for fine-tuning pretrained ResNets; the lite backbone trains from "
                             "scratch with batch statistics: set fpn.frozen_bn = false")
        if variant != "v1":
            raise ValueError("fpn.backbone_variant %r is a ResNet variant; the lite backbone has none: set it to "
                             "\"v1\"" % (variant,))
        widths, units = LITE_STAGES
        internals = lite.get_symbol(widths=widths, units=units, gn_groups=groups).get_internals()
        return [internals[name + "_output"] for name in lite.stage_output_names(units)]
    body = resnet.get_symbol(num_layers=backbone, bn_global_stats=frozen_bn, variant=variant, gn_groups=groups)
    internals = body.get_internals()
    return [internals[name + "_output"] for name in resnet.stage_output_names(backbone)]


def fpn_neck(stages, channels, p6="max_pool", *, norm="none", gn_groups=32):
    """Feature pyramid (Lin et al. 2017): lateral 1x1 convolutions, nearest 2x upsampling and sum from
    the top, a 3x3 output convolution per level; P6 is P5 subsampled by 2 (max-pool, kernel 1) or, with
    ``p6="conv"``, a 3x3 stride-2 convolution ``fpn_p6`` of C5's lateral (GluonCV).

    Parameters
    ----------
    stages : list of 4 symbols C2..C5 (strides 4..32)
    channels : int, channels of every pyramid level
    p6 : str, ``max_pool`` or ``conv`` (see above)
    norm : str, ``none`` or ``group``: GroupNorm (:func:`group_norm`, ``gn_groups`` groups) after every
        convolution of the neck, which then has no bias (Detectron's GN FPN)

    Returns
    -------
    list of 5 symbols P2..P6, ``(B, channels, H_l, W_l)``; an upsampled map larger than the lateral
    one (odd sizes) is cropped to it, so any input size works.
    """
    if len(stages) != 4:
        raise ValueError("fpn_neck takes the 4 stages C2..C5, got %d" % len(stages))
    conv = _normed_conv if norm == "group" else _plain_conv
    laterals = [conv(c, "fpn_lateral%d" % level, channels, gn_groups, kernel=(1, 1))
                for level, c in zip((2, 3, 4, 5), stages)]
    merged = [None, None, None, laterals[3]]
    for i in (2, 1, 0):
        level = i + 2
        up = mx.sym.UpSampling(merged[i + 1], scale=2, sample_type="nearest", num_args=1,
                               name="fpn_upsample%d" % level)
        up = mx.sym.slice_like(up, laterals[i], axes=(2, 3), name="fpn_crop%d" % level)
        merged[i] = mx.sym.elemwise_add(laterals[i], up, name="fpn_merge%d" % level)
    outputs = [conv(m, "fpn_output%d" % level, channels, gn_groups, kernel=(3, 3), pad=(1, 1))
               for level, m in zip((2, 3, 4, 5), merged)]
    if p6 == "conv":
        p6 = conv(laterals[3], "fpn_p6", channels, gn_groups, kernel=(3, 3), stride=(2, 2), pad=(1, 1))
    else:
        p6 = mx.sym.Pooling(outputs[3], pool_type="max", kernel=(1, 1), stride=(2, 2), name="fpn_p6")
    return outputs + [p6]


def _plain_conv(data, name, channels, _groups, **kwargs):
    """Convolution ``name`` with Xavier-fill weights (:func:`_weight`) and a bias."""
    weight, bias = _weight(name)
    return mx.sym.Convolution(data, weight=weight, bias=bias, num_filter=channels, name=name, **kwargs)


def _normed_conv(data, name, channels, groups, **kwargs):
    """Convolution ``name`` without bias (Xavier fill) followed by :func:`group_norm` ``name_gn``."""
    weight, _ = _weight(name)
    x = mx.sym.Convolution(data, weight=weight, no_bias=True, num_filter=channels, name=name, **kwargs)
    return group_norm(x, name + "_gn", channels, groups)


def _weight(name, std=None):
    """Weight and bias variables of layer ``name``: Normal(std) weights, or Xavier fill (uniform,
    fan-in, magnitude 3) when ``std`` is None; zero biases."""
    init = mx.init.Xavier(rnd_type="uniform", factor_type="in", magnitude=3) if std is None else mx.init.Normal(std)
    return mx.sym.Variable(name + "_weight", init=init), mx.sym.Variable(name + "_bias", init=mx.init.Zero())


def rpn_head(features, num_anchors, channels):
    """The RPN head shared by all levels: 3x3 conv + ReLU, 1x1 objectness logits, 1x1 box deltas.

    Parameters
    ----------
    features : list of L symbols ``(B, C, H_l, W_l)``
    num_anchors : int, A anchors per cell
    channels : int, width of the 3x3 convolution

    Returns
    -------
    logits : (B, N) objectness logits, N = sum_l H_l W_l A, levels in order, each location-major then
        anchor (``transpose(0, 2, 3, 1)`` of the ``(B, A, H, W)`` map, flattened)
    deltas : (B, N * 4) box deltas in the same order, 4 per anchor
    maps : list of L symbols ``(B, A, H_l, W_l)``, the objectness convolution's output per level
        (small maps with each level's grid: what the anchors take their shape from)
    """
    conv_w, conv_b = _weight("rpn_conv", 0.01)
    cls_w, cls_b = _weight("rpn_cls_logits", 0.01)
    box_w, box_b = _weight("rpn_bbox_pred", 0.01)
    logits, deltas, maps = [], [], []
    for k, feat in enumerate(features):
        x = mx.sym.Convolution(feat, weight=conv_w, bias=conv_b, num_filter=channels, kernel=(3, 3), pad=(1, 1),
                               name="rpn_conv_l%d" % k)
        x = mx.sym.Activation(x, act_type="relu", name="rpn_relu_l%d" % k)
        cls = mx.sym.Convolution(x, weight=cls_w, bias=cls_b, num_filter=num_anchors, kernel=(1, 1),
                                 name="rpn_cls_logits_l%d" % k)
        box = mx.sym.Convolution(x, weight=box_w, bias=box_b, num_filter=4 * num_anchors, kernel=(1, 1),
                                 name="rpn_bbox_pred_l%d" % k)
        maps.append(cls)
        logits.append(mx.sym.reshape(mx.sym.transpose(cls, axes=(0, 2, 3, 1)), shape=(0, -1)))
        deltas.append(mx.sym.reshape(mx.sym.transpose(box, axes=(0, 2, 3, 1)), shape=(0, -1)))
    return (mx.sym.concat(*logits, dim=1, name="rpn_logits"),
            mx.sym.concat(*deltas, dim=1, name="rpn_deltas"), maps)


def roi_levels(rois, *, min_level=2, max_level=5, canonical_size=224.0, canonical_level=4, pixel_offset=0.0):
    """FPN level of each RoI (Lin et al. 2017, eq. 1): ``floor(k0 + log2(sqrt(w * h) / 224))``, clipped.

    With ``pixel_offset > 0`` (the "+1" convention) the sides are ``w + offset`` and ``h + offset`` and the
    rule is GluonCV's ``floor(k0 + log2(sqrt(w * h) / 224 + 1e-6))``.

    Parameters
    ----------
    rois : (R, 5) rows ``[batch_index, x0, y0, x1, y1]`` in input pixels (width ``x1 - x0``)
    min_level, max_level : int, the clip range
    canonical_size, canonical_level : a ``canonical_size`` square RoI maps to ``canonical_level``

    Returns
    -------
    (R,) float32 levels in ``[min_level, max_level]``; empty (zero-area) RoIs get ``min_level``.
    No gradient flows through it.
    """
    rois = mx.sym.BlockGrad(rois)
    w = mx.sym.relu(mx.sym.slice_axis(rois, axis=1, begin=3, end=4) - mx.sym.slice_axis(rois, axis=1, begin=1, end=2))
    h = mx.sym.relu(mx.sym.slice_axis(rois, axis=1, begin=4, end=5) - mx.sym.slice_axis(rois, axis=1, begin=2, end=3))
    if pixel_offset:
        size = mx.sym.sqrt((w + float(pixel_offset)) * (h + float(pixel_offset)))
        level = mx.sym.floor(float(canonical_level) + mx.sym.log2(size / float(canonical_size) + 1e-6))
    else:
        size = mx.sym.maximum(mx.sym.sqrt(w * h), 1e-6)
        level = mx.sym.floor(mx.sym.log2(size / float(canonical_size)) + float(canonical_level))
    level = mx.sym.clip(level, float(min_level), float(max_level))
    return mx.sym.reshape(level, shape=(-1,))


def multilevel_roi_align(features, rois, *, strides, pooled_size, sample_ratio, min_level, aligned=True,
                         canonical_size=224.0, canonical_level=4, level_offset=0.0, name="roi_align"):
    """RoIAlign of each RoI on its own FPN level only: ssdkit's ``MultiLevelROIAlign`` operator.

    The operator assigns each RoI its level by the rule of :func:`roi_levels` (same parameters) and
    pools it once, on that level; the gradient reaches only that level's map. Padding rows (batch
    index < 0) give zeros, zero-size RoIs are defined (see ``src/operators/multilevel_roi_align/``).

    Parameters
    ----------
    features : list of L symbols ``(B, C, H_l, W_l)``, levels ``min_level`` .. ``min_level + L - 1``
    rois : (R, 5) ``[batch_index, x0, y0, x1, y1]`` input pixels (no gradient flows into them)
    strides : list of L ints, pixels per cell of each feature map (spatial scale ``1 / stride``)
    pooled_size : int, output ``pooled_size x pooled_size``
    sample_ratio : int, sampling points per bin side (<= 0: adaptive)
    min_level : int, the level number of ``features[0]``
    aligned : bool, half-pixel offset (pixel ``i`` covers ``[i, i + 1)``, the continuous box convention)
    canonical_size, canonical_level : the level rule's anchor (a ``canonical_size`` square RoI maps to
        ``canonical_level``)
    level_offset : float, when non-zero the levels come from :func:`roi_levels` with this
        ``pixel_offset`` (the operator's ``levels`` input) instead of the operator's own rule
    name : str, the operator node's name (the mask branch pools with its own, ``mask_roi_align``)

    Returns
    -------
    (R, C, pooled_size, pooled_size) pooled features.
    """
    if len(features) != len(strides):
        raise ValueError("one stride per feature map: %d maps, strides %r" % (len(features), tuple(strides)))
    rois = mx.sym.BlockGrad(rois)
    levels = []
    if level_offset:
        levels = [roi_levels(rois, min_level=min_level, max_level=min_level + len(features) - 1,
                             canonical_size=canonical_size, canonical_level=canonical_level,
                             pixel_offset=level_offset)]
    given = {"level_input": True} if levels else {}
    return mx.sym.MultiLevelROIAlign(*features, rois, *levels, **given,
                                     spatial_scales=tuple(1.0 / float(s) for s in strides),
                                     pooled_size=(int(pooled_size), int(pooled_size)), sample_ratio=int(sample_ratio),
                                     aligned=bool(aligned), min_level=int(min_level),
                                     canonical_size=float(canonical_size), canonical_level=int(canonical_level),
                                     name=name)


def box_head(pooled, num_classes, fc_dim, *, batchnorm=False, norm="none", gn_groups=32):
    """Two fully connected layers with ReLU, then class scores and class-specific box deltas.

    Parameters
    ----------
    pooled : (R, C, S, S) pooled RoI features
    num_classes : int, object classes C (background excluded)
    fc_dim : int, width of the two hidden layers
    batchnorm : bool, BatchNorm (over the RoIs of a batch) between each hidden layer and its ReLU
    norm : str, ``group``: GroupNorm (``rcnn_fc6_gn``, ``rcnn_fc7_gn``) there instead, the two layers without
        bias (not with ``batchnorm``)

    Returns
    -------
    cls_score : (R, C + 1) logits, column 0 background, k + 1 class k
    bbox_pred : (R, 4 (C + 1)) deltas, 4 per class column (background's unused)
    """
    if batchnorm and norm == "group":
        raise ValueError("box_head: batchnorm and GroupNorm (norm='group') exclude each other")
    x = mx.sym.flatten(pooled, name="rcnn_flatten")
    for name in ("rcnn_fc6", "rcnn_fc7"):
        weight, bias = _weight(name)
        if norm == "group":
            x = mx.sym.FullyConnected(x, weight=weight, no_bias=True, num_hidden=fc_dim, name=name)
            x = group_norm(x, name + "_gn", fc_dim, gn_groups)
        else:
            x = mx.sym.FullyConnected(x, weight=weight, bias=bias, num_hidden=fc_dim, name=name)
        if batchnorm:
            x = mx.sym.BatchNorm(x, eps=1e-5, fix_gamma=False, name=name + "_bn")
        x = mx.sym.Activation(x, act_type="relu", name=name + "_relu")
    cls_w, cls_b = _weight("rcnn_cls_score", 0.01)
    box_w, box_b = _weight("rcnn_bbox_pred", 0.001)
    cls_score = mx.sym.FullyConnected(x, weight=cls_w, bias=cls_b, num_hidden=num_classes + 1, name="rcnn_cls_score")
    bbox_pred = mx.sym.FullyConnected(x, weight=box_w, bias=box_b, num_hidden=4 * (num_classes + 1),
                                      name="rcnn_bbox_pred")
    return cls_score, bbox_pred
