"""Mask R-CNN's mask branch on the FPN path (He et al. 2017): the head, its RoIs, its target and loss.

Shapes: ``R`` RoIs, ``C`` object classes (background excluded), ``T = mask_roi_size`` (RoIAlign output),
``S = mask_size = 2 T`` (the predicted masks), ``B`` images, ``K`` detections per image.

Parameter names (stable, for checkpoints and weight import): ``mask_conv{1..n}`` (3x3, ``mask_channels``),
``mask_deconv`` (2x2 stride 2, ``mask_channels``), ``mask_predictor`` (1x1, C: one mask per class, channel k
for class k); with ``norm="group"`` the convolutions have no bias and ``mask_conv{i}_gn_gamma`` / ``_beta``.
Initialisation (Detectron's): MSRA fill (Gaussian, fan-out, ``sqrt(2 / (k^2 c_out))``) for the convolutions
and the deconvolution, Gaussian std 0.001 for the predictor, zero biases.
"""
import mxnet as mx

from ssdkit.symbol.common import group_norm


def _msra(name, bias=True):
    weight = mx.sym.Variable(name + "_weight", init=mx.init.MSRAPrelu(factor_type="out", slope=0.0))
    return weight, (mx.sym.Variable(name + "_bias", init=mx.init.Zero()) if bias else None)


def mask_head(pooled, num_classes, *, channels, num_convs, norm="none", gn_groups=32):
    """The mask head: ``num_convs`` 3x3 convolutions + ReLU, a 2x2 stride-2 deconvolution + ReLU, a 1x1
    predictor of one mask logit map per class.

    Parameters
    ----------
    pooled : (R, F, T, T) RoI features (:func:`ssdkit.symbol.fpn_head.multilevel_roi_align`)
    num_classes : int, C
    channels : int, width of the convolutions and the deconvolution
    num_convs : int, 3x3 convolutions (4 in Mask R-CNN)
    norm, gn_groups : ``group``: GroupNorm after each 3x3 convolution (no bias), as in the GN configurations

    Returns
    -------
    (R, C, 2T, 2T) mask logits.
    """
    x = pooled
    for i in range(1, int(num_convs) + 1):
        name = "mask_conv%d" % i
        weight, bias = _msra(name, bias=norm != "group")
        given = {"bias": bias} if bias is not None else {"no_bias": True}
        x = mx.sym.Convolution(x, weight=weight, num_filter=channels, kernel=(3, 3), pad=(1, 1), name=name, **given)
        if norm == "group":
            x = group_norm(x, name + "_gn", channels, gn_groups)
        x = mx.sym.Activation(x, act_type="relu", name=name + "_relu")
    weight, bias = _msra("mask_deconv")
    x = mx.sym.Deconvolution(x, weight=weight, bias=bias, no_bias=False, num_filter=channels, kernel=(2, 2),
                             stride=(2, 2), name="mask_deconv")
    x = mx.sym.Activation(x, act_type="relu", name="mask_deconv_relu")
    weight = mx.sym.Variable("mask_predictor_weight", init=mx.init.Normal(0.001))
    bias = mx.sym.Variable("mask_predictor_bias", init=mx.init.Zero())
    return mx.sym.Convolution(x, weight=weight, bias=bias, num_filter=int(num_classes), kernel=(1, 1),
                              name="mask_predictor")


def class_channel(logits, classes, num_classes, name):
    """Each row's own class channel: ``logits[r, classes[r]]``.

    Parameters
    ----------
    logits : (R, C, S, S)
    classes : (R,) float class ids in ``[0, C)``; other values (-1 background/padding) are clipped into
        the range (their rows are ignored by the caller)
    num_classes : int, C

    Returns
    -------
    (R, S, S); the gradient reaches only the picked channels.
    """
    index = mx.sym.contrib.arange_like(classes) * float(num_classes) + \
        mx.sym.clip(mx.sym.BlockGrad(classes), 0.0, float(num_classes - 1))
    flat = mx.sym.reshape(logits, shape=(-3, -2))               # (R C, S, S)
    return mx.sym.take(flat, index, axis=0, name=name)


def foreground_rows(data, batch_images, rows_per_image, foreground, row_shape=()):
    """The first ``foreground`` of each image's ``rows_per_image`` rows: ``(B S,) + row_shape -> (B F,) +
    row_shape`` (``ProposalTarget`` puts an image's sampled foregrounds first, at most F of them)."""
    row_shape = tuple(int(v) for v in row_shape)
    per_image = mx.sym.reshape(data, shape=(int(batch_images), int(rows_per_image)) + row_shape)
    head = mx.sym.slice_axis(per_image, axis=1, begin=0, end=int(foreground))
    return mx.sym.reshape(head, shape=(-1,) + row_shape)


def mask_loss(logits, labels, target, num_classes, weight=1.0):
    """Sigmoid cross entropy of each foreground RoI's class channel against its target.

    Parameters
    ----------
    logits : (R, C, S, S) mask logits
    labels : (R,) ``ProposalTarget`` labels (k + 1 class k, 0 background, -1 padding)
    target : (R, S, S) ``MaskTarget``'s output: 0/1 for foreground rows, -1 (ignored) for the others
    weight : float, factor of the loss

    Returns
    -------
    ``mask_loss (1,)`` (MakeLoss): ``weight`` x the BCE summed over the elements with target >= 0 / their
    number (the mean over the foreground rows x S x S); 0 when there are none.
    """
    target = mx.sym.BlockGrad(target)
    x = class_channel(logits, mx.sym.BlockGrad(labels) - 1.0, num_classes, "mask_class_logits")
    valid = target >= 0
    # binary cross entropy with logits, stable: max(x, 0) - x t + log(1 + exp(-|x|))
    bce = mx.sym.relu(x) - x * mx.sym.relu(target) + mx.sym.Activation(-mx.sym.abs(x), act_type="softrelu")
    count = mx.sym.BlockGrad(mx.sym.maximum(mx.sym.sum(valid), 1.0))
    loss = mx.sym.sum(bce * valid) / count
    return mx.sym.MakeLoss(loss * float(weight) if weight != 1.0 else loss, name="mask_loss")


def detection_rois(detection, im_info):
    """Mask RoIs of RCNNDetection's rows: ``(B, K, 6)`` normalised detections -> ``(B K, 5)``
    ``[batch_index, x0, y0, x1, y1]`` pixels of the resized image (corners x ``im_info``'s w, h); rows with
    ``cls_id < 0`` get batch index -1 (``MultiLevelROIAlign`` pools them to zeros)."""
    detection = mx.sym.BlockGrad(detection)
    cls = mx.sym.slice_axis(detection, axis=2, begin=0, end=1)                       # (B, K, 1)
    image = mx.sym.broadcast_like(mx.sym.reshape(mx.sym.contrib.arange_like(detection, axis=0), shape=(-1, 1, 1)),
                                  cls)
    image = mx.sym.where(cls >= 0, image, -mx.sym.ones_like(image))
    h = mx.sym.slice_axis(im_info, axis=1, begin=0, end=1)
    w = mx.sym.slice_axis(im_info, axis=1, begin=1, end=2)
    scale = mx.sym.reshape(mx.sym.concat(w, h, w, h, dim=1), shape=(-1, 1, 4))        # (B, 1, 4)
    boxes = mx.sym.broadcast_mul(mx.sym.slice_axis(detection, axis=2, begin=2, end=6), scale)
    return mx.sym.reshape(mx.sym.concat(image, boxes, dim=2), shape=(-1, 5), name="mask_rois")
