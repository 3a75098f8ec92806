"""SSD graphs: ``get_symbol_train`` (targets and losses) and ``get_symbol`` (detections).

Both build the same network with one internal function, :func:`_multibox_graph`: a base network
(:data:`BASE_NETWORKS`), multi-scale features (:func:`ssdkit.symbol.common.multi_layer_feature`)
and multibox heads with anchors (:func:`ssdkit.symbol.common.multibox_layer`). Targets, decoding
and NMS run in ssdkit's operators ``MultiBoxTarget`` and ``MultiBoxDetection`` with the box
variances ``variances`` (default :data:`ssdkit.boxes.VARIANCES`).

Graph inputs: ``data (B, 3, H, W)`` (ImageNet-normalised, see :mod:`ssdkit.symbol.common`) and,
for training, ``label (B, M, 5 or 6)`` rows ``[cls, xmin, ymin, xmax, ymax(, difficult)]``
normalised, padded with -1 rows.
"""
import mxnet as mx

# importing any ssdkit module loads the operator library (MultiBoxPrior/Target/Detection)
from ssdkit.boxes import VARIANCES
from ssdkit.detection_defaults import NEGATIVE_MINING_RATIO, NMS_THRESH, NMS_TOPK, OVERLAP_THRESHOLD
from ssdkit.symbol import lite, mobilenet, resnet, tiny, vgg16_reduced
from ssdkit.symbol.common import multi_layer_feature, multibox_heads

BASE_NETWORKS = {
    "vgg16_reduced": vgg16_reduced.get_symbol,
    "resnet": resnet.get_symbol,
    "mobilenet": mobilenet.get_symbol,
    "tiny": tiny.get_symbol,
    "lite": lite.get_symbol,
    "small": tiny.get_small_symbol,
}
"""Base-network name -> ``get_symbol(num_classes, **kwargs)`` returning the feature body."""


def _base_network(network, num_classes, **kwargs):
    if callable(network):
        return network(num_classes, **kwargs)
    if network not in BASE_NETWORKS:
        raise ValueError("unknown base network %r; choose one of %s or pass a function returning "
                         "a symbol" % (network, sorted(BASE_NETWORKS)))
    return BASE_NETWORKS[network](num_classes, **kwargs)


def _multibox_graph(network, num_classes, *, from_layers, num_filters, strides, pads, sizes, ratios,
                    normalizations, steps, min_filter, transition_ratio, extra_kernels, extra_bn,
                    fused_heads, base_kwargs):
    """The shared network: ``(loc_preds (B, N*4), cls_logits (B, N, C+1), anchors (1, N, 4))``."""
    body = _base_network(network, num_classes, **base_kwargs)
    layers = multi_layer_feature(body, from_layers, num_filters, strides, pads, min_filter=min_filter,
                                 transition_ratio=transition_ratio, kernels=extra_kernels,
                                 use_bn=extra_bn)
    return multibox_heads(layers, num_classes, sizes=sizes, ratios=ratios, normalization=normalizations,
                          num_channels=num_filters, clip=False, steps=steps, fused_heads=fused_heads)


def _class_major(cls_logits):
    """``(B, N, C+1)`` logits -> ``(B, C+1, N)``, the layout MultiBoxTarget and SoftmaxOutput take."""
    return mx.sym.transpose(cls_logits, axes=(0, 2, 1), name="multibox_cls_pred")


def _four(variances):
    """Variances as the operators' attribute wants them (a tuple of 4 floats; a list would print otherwise)."""
    values = tuple(float(v) for v in variances)
    if len(values) != 4:
        raise ValueError("variances needs 4 values (x, y, w, h), got %r" % (variances,))
    return values


def _detections(cls_prob, loc_preds, anchors, *, nms_thresh, force_suppress, nms_topk, clip,
                max_detections, score_thresh, variances):
    # score_thresh None: the operator's own default (0.01), not written to the graph
    optional = {} if score_thresh is None else {"threshold": score_thresh}
    return mx.sym.MultiBoxDetection(cls_prob, loc_preds, anchors, name="detection",
                                    nms_threshold=nms_thresh, force_suppress=force_suppress,
                                    variances=_four(variances), nms_topk=nms_topk, clip=clip,
                                    max_detections=max_detections, **optional)


def get_symbol_train(network, num_classes, from_layers, num_filters, strides, pads, sizes, ratios,
                     normalizations=-1, steps=(), min_filter=128, nms_thresh=NMS_THRESH, force_suppress=False,
                     nms_topk=NMS_TOPK, *, transition_ratio=0.5, extra_kernels=None, extra_bn=False,
                     fused_heads=False,
                     overlap_threshold=OVERLAP_THRESHOLD, negative_mining_ratio=NEGATIVE_MINING_RATIO,
                     negative_mining_thresh=0.5,
                     minimum_negative_samples=0, clip=True, max_detections=-1, score_thresh=None,
                     variances=VARIANCES, **kwargs):
    """SSD training graph.

    Parameters
    ----------
    network : str or callable, a key of :data:`BASE_NETWORKS` or ``f(num_classes, **kwargs)``
        returning the base-network symbol
    num_classes : int, object classes (background excluded)
    from_layers : sequence of str, base-network layer names, ``''`` for an extra layer
        (see :func:`ssdkit.symbol.common.multi_layer_feature`)
    num_filters, strides, pads : sequences of int, per feature layer (extra layers only; -1 else);
        ``num_filters`` also gives the channels of L2-normalised layers
    sizes : sequence of sequences of float, anchor sizes per layer (fractions of the image)
    ratios : sequence of sequences of float, anchor width / height ratios per layer
    normalizations : float or sequence, > 0: L2 normalisation with a learned scale starting there
    steps : sequence of float, anchor step per layer in fractions of the image (empty: 1 / map size)
    min_filter : int, minimum channels of an extra layer's 1x1 transition
    nms_thresh, force_suppress, nms_topk : NMS of the ``detection`` output (defaults:
        :mod:`ssdkit.detection_defaults`)
    transition_ratio, extra_kernels, extra_bn : extra-layer shape (see ``multi_layer_feature``)
    fused_heads : bool, one aligned convolution per feature layer for both predictors (see
        ``multibox_layer``; faster on the CPU, parameter names ``feat{k}_pred_*``)
    overlap_threshold, negative_mining_ratio, negative_mining_thresh, minimum_negative_samples :
        ``MultiBoxTarget`` matching and hard-negative mining
    clip : bool, clip decoded detections to [0, 1]
    max_detections : int, detection rows (-1: one per anchor)
    score_thresh : float or None, candidates scoring below it are dropped before NMS (None: the
        ``MultiBoxDetection`` default, 0.01)
    variances : 4 float, the box coding's variances of ``MultiBoxTarget`` and ``MultiBoxDetection``
    kwargs : passed to the base network (e.g. ``num_layers=50`` for resnet)

    Returns
    -------
    mx.sym.Symbol, a group of four outputs:
        ``cls_prob (B, C+1, N)`` SoftmaxOutput over classes (ignore label -1, normalised by the
        valid anchors); ``loc_loss (B, N*4)`` smooth L1 of ``loc_mask * (loc_pred - loc_target)``
        (MakeLoss, normalised by the valid entries); ``cls_label (B, N)`` class targets
        (BlockGrad, for metrics: 0 background, cls + 1 object, -1 ignored);
        ``det_out (B, K, 6)`` detections (BlockGrad).
    """
    loc_preds, cls_logits, anchors = _multibox_graph(
        network, num_classes, from_layers=from_layers, num_filters=num_filters, strides=strides, pads=pads,
        sizes=sizes, ratios=ratios, normalizations=normalizations, steps=steps, min_filter=min_filter,
        transition_ratio=transition_ratio, extra_kernels=extra_kernels, extra_bn=extra_bn,
        fused_heads=fused_heads, base_kwargs=kwargs)
    cls_preds = _class_major(cls_logits)
    label = mx.sym.Variable("label")
    # MultiBoxTarget has no gradient: BlockGrad keeps its zero backward (and the addition of its
    # zeros to the class logits' gradient) out of the training graph
    loc_target, loc_mask, cls_target = mx.sym.MultiBoxTarget(
        mx.sym.BlockGrad(anchors), label, mx.sym.BlockGrad(cls_preds), overlap_threshold=overlap_threshold,
        ignore_label=-1,
        negative_mining_ratio=negative_mining_ratio, negative_mining_thresh=negative_mining_thresh,
        minimum_negative_samples=minimum_negative_samples, variances=_four(variances), name="multibox_target")
    cls_prob = mx.sym.SoftmaxOutput(data=cls_preds, label=cls_target, ignore_label=-1, use_ignore=True,
                                    multi_output=True, normalization="valid", name="cls_prob")
    loc_diff = mx.sym.smooth_l1(data=loc_mask * (loc_preds - loc_target), scalar=1.0, name="loc_loss_")
    loc_loss = mx.sym.MakeLoss(loc_diff, normalization="valid", name="loc_loss")
    cls_label = mx.sym.BlockGrad(cls_target, name="cls_label")
    det = _detections(cls_prob, loc_preds, anchors, nms_thresh=nms_thresh, force_suppress=force_suppress,
                      nms_topk=nms_topk, clip=clip, max_detections=max_detections, score_thresh=score_thresh,
                      variances=variances)
    det = mx.sym.BlockGrad(det, name="det_out")
    return mx.sym.Group([cls_prob, loc_loss, cls_label, det])


def get_symbol(network, num_classes, from_layers, num_filters, sizes, ratios, strides, pads,
               normalizations=-1, steps=(), min_filter=128, nms_thresh=NMS_THRESH, force_suppress=False,
               nms_topk=NMS_TOPK, *, transition_ratio=0.5, extra_kernels=None, extra_bn=False,
               fused_heads=False, clip=True,
               max_detections=-1, score_thresh=None, variances=VARIANCES, **kwargs):
    """SSD inference graph (same network and parameter names as :func:`get_symbol_train`).

    Parameters are those of :func:`get_symbol_train` (note the classic positional order:
    ``sizes, ratios`` before ``strides, pads``).

    Returns
    -------
    mx.sym.Symbol, ``detection (B, K, 6)`` rows ``[cls_id, score, xmin, ymin, xmax, ymax]``
    normalised, ``cls_id = -1`` for empty or suppressed rows; ``K`` = anchors or ``max_detections``.
    """
    loc_preds, cls_logits, anchors = _multibox_graph(
        network, num_classes, from_layers=from_layers, num_filters=num_filters, strides=strides, pads=pads,
        sizes=sizes, ratios=ratios, normalizations=normalizations, steps=steps, min_filter=min_filter,
        transition_ratio=transition_ratio, extra_kernels=extra_kernels, extra_bn=extra_bn,
        fused_heads=fused_heads, base_kwargs=kwargs)
    # softmax over the last axis, then class-major: MXNet's CPU softmax is several times faster
    # over the last axis than over axis 1 of (B, C+1, N)
    cls_prob = mx.sym.transpose(mx.sym.softmax(cls_logits, axis=-1), axes=(0, 2, 1), name="cls_prob")
    return _detections(cls_prob, loc_preds, anchors, nms_thresh=nms_thresh, force_suppress=force_suppress,
                       nms_topk=nms_topk, clip=clip, max_detections=max_detections, score_thresh=score_thresh,
                       variances=variances)


def get_multibox_outputs(network, num_classes, from_layers, num_filters, sizes, ratios, strides, pads,
                         normalizations=-1, steps=(), min_filter=128, *, transition_ratio=0.5,
                         extra_kernels=None, extra_bn=False, fused_heads=False, **kwargs):
    """The raw network outputs before decoding, for tests, export and custom heads.

    Returns
    -------
    mx.sym.Symbol, a group ``[loc_preds (B, N*4), cls_preds (B, C+1, N) logits, anchors (1, N, 4)]``.
    """
    loc_preds, cls_logits, anchors = _multibox_graph(
        network, num_classes, from_layers=from_layers, num_filters=num_filters, strides=strides, pads=pads,
        sizes=sizes, ratios=ratios, normalizations=normalizations, steps=steps, min_filter=min_filter,
        transition_ratio=transition_ratio, extra_kernels=extra_kernels, extra_bn=extra_bn,
        fused_heads=fused_heads, base_kwargs=kwargs)
    return mx.sym.Group([loc_preds, _class_major(cls_logits), anchors])
