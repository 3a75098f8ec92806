"""Blocks shared by every SSD graph: conv layers, the multi-scale feature list and the multibox heads.

Naming (the weight importers in :mod:`ssdkit.weights` rely on it):

* ``conv_act(name=n)`` creates ``n`` (Convolution), ``n_bn`` (BatchNorm, when asked; with ``gn_groups``
  GroupNorm ``n_gn`` instead, :func:`group_norm`) and ``n_relu``.
* Extra feature layer ``k`` of :func:`multi_layer_feature` is ``feat{k}_conv_1x1`` followed by
  ``feat{k}_conv_3x3`` (the second one's kernel may be another size).
* Head ``k`` of :func:`multibox_layer` owns ``feat{k}_scale`` (learned L2 normalisation scale),
  ``feat{k}_loc_pred`` and ``feat{k}_cls_pred`` (3x3 convolutions) and ``feat{k}_anchors``
  (``MultiBoxPrior``); with ``fused_heads`` the two predictors are one convolution ``feat{k}_pred``.

Input contract of every ssdkit base network: ``data (B, 3, H, W)`` RGB normalised the ImageNet
way, ``(pixel - IMAGENET_MEAN) / IMAGENET_STD`` on the 0-255 scale (:mod:`ssdkit.normalization`; the
GluonCV convention).
"""
import mxnet as mx
import numpy as np

from ssdkit import ops  # noqa: F401  (loads the operator library: MultiBoxPrior, MultiBoxTarget, ...)
from ssdkit.normalization import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (the input contract)


def conv_act(data, name, num_filter, *, kernel=(3, 3), stride=(1, 1), pad=(1, 1), dilate=(1, 1),
             num_group=1, use_bn=False, no_bias=None, bn_eps=1e-5, bn_fix_gamma=False,
             bn_global_stats=False, gn_groups=0, act="relu"):
    """Convolution, optional BatchNorm (or GroupNorm) and activation.

    Parameters
    ----------
    data : mx.sym.Symbol, ``(B, C_in, H, W)``
    name : str, name of the convolution; BatchNorm is ``name + '_bn'``, the activation
        ``name + '_relu'``
    num_filter : int, output channels
    use_bn : bool, add BatchNorm after the convolution
    no_bias : bool or None, None means "no bias exactly when BatchNorm follows"
    bn_global_stats : bool, BatchNorm normalises with its stored moving statistics also in
        training (``use_global_stats``; "frozen" BatchNorm for fine-tuning with small batches)
    gn_groups : int, 0: the normalisation ``use_bn`` asks for is BatchNorm; G > 0: GroupNorm of G groups
        (:func:`group_norm` ``name + '_gn'``, parameters ``name_gn_gamma`` / ``_beta``) in its place
        (``num_filter`` must be a multiple of G; not with ``bn_global_stats``)
    act : str or None, activation type (None: no activation)

    Returns
    -------
    mx.sym.Symbol, ``(B, num_filter, H', W')``
    """
    if no_bias is None:
        no_bias = use_bn
    out = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=kernel, stride=stride,
                             pad=pad, dilate=dilate, num_group=num_group, no_bias=no_bias, name=name)
    if use_bn and gn_groups:
        if bn_global_stats:
            raise ValueError("conv_act %s: GroupNorm (gn_groups=%d) has no stored statistics to freeze "
                             "(bn_global_stats)" % (name, gn_groups))
        out = group_norm(out, name + "_gn", num_filter, gn_groups, eps=bn_eps)
    elif use_bn:
        frozen = {"use_global_stats": True} if bn_global_stats else {}
        out = mx.sym.BatchNorm(data=out, eps=bn_eps, fix_gamma=bn_fix_gamma, name=name + "_bn", **frozen)
    if act is not None:
        out = mx.sym.Activation(data=out, act_type=act, name=name + "_relu")
    return out


def check_group_widths(body, widths, groups):
    """ValueError unless ``groups`` (>= 1) divides every normalised width of ``body`` (a base network), naming
    the widths it does not divide."""
    bad = [int(w) for w in widths if groups < 1 or w % groups]
    if bad:
        raise ValueError("%s: GroupNorm of %d groups needs every normalised width to be a multiple of it; widths "
                         "%s, not multiples: %s" % (body, groups, [int(w) for w in widths], bad))


def group_norm(data, name, channels, groups, eps=1e-5):
    """GroupNorm (Wu & He 2018) with a per-channel affine: ``gamma_c * (x - mean_g) / sqrt(var_g + eps) + beta_c``.

    MXNet 1.x's ``GroupNorm`` operator carries one gamma and beta per *group*; it runs here with constant
    ones and zeros, and the per-channel ``name_gamma`` (init 1) and ``name_beta`` (init 0) follow, as in
    Detectron and PyTorch.

    Parameters
    ----------
    data : (N, channels, ...) symbol; a 2-D ``(N, channels)`` input (fully connected layers) is normalised
        over each group of its channels
    name : str, the layer (parameters ``name_gamma``, ``name_beta``)
    channels : int, C (a multiple of ``groups``)
    groups : int, G

    Returns
    -------
    symbol of ``data``'s shape.
    """
    if channels % groups:
        raise ValueError("GroupNorm %s: %d channels are not a multiple of %d groups" % (name, channels, groups))
    gamma = mx.sym.Variable(name + "_gamma", shape=(channels,), init=mx.init.One())
    beta = mx.sym.Variable(name + "_beta", shape=(channels,), init=mx.init.Zero())
    x = mx.sym.reshape(data, shape=(0, 0, -1), name=name + "_flat")      # GroupNorm needs 3 or more axes
    x = mx.sym.GroupNorm(x, mx.sym.ones(shape=(groups,)), mx.sym.zeros(shape=(groups,)), num_groups=groups,
                         eps=eps, name=name)
    x = mx.sym.broadcast_add(mx.sym.broadcast_mul(x, mx.sym.reshape(gamma, shape=(1, -1, 1))),
                             mx.sym.reshape(beta, shape=(1, -1, 1)), name=name + "_affine")
    return mx.sym.reshape_like(x, data, name=name + "_out")


def _per_layer(value, num_layers, what):
    """Broadcast a scalar to ``num_layers`` values, or check a sequence's length; returns a new list."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_layers:
            raise ValueError("%s has %d values but there are %d feature layers: %r"
                             % (what, len(value), num_layers, value))
        return list(value)
    return [value] * num_layers


def multi_layer_feature(body, from_layers, num_filters, strides, pads, *, min_filter=128,
                        transition_ratio=0.5, kernels=None, use_bn=False):
    """Pick feature maps from a base network and append extra down-sampling layers.

    Parameters
    ----------
    body : mx.sym.Symbol, the base network (any output; its internals are searched)
    from_layers : sequence of str, one per feature layer: the name of a base-network layer (its
        ``<name>_output`` internal) or ``''`` for a new extra layer built on the previous feature
    num_filters : sequence of int, output channels of each extra layer (ignored, usually -1, for
        base-network layers)
    strides, pads : sequence of int, stride and padding of each extra layer's second convolution
    min_filter : int, lower bound on the channels of an extra layer's 1x1 transition
    transition_ratio : float, the 1x1 transition has ``max(min_filter, round(num_filter * ratio))``
        channels (0.5: the classic MXNet SSD; GluonCV's resnet/mobilenet SSDs use 1.0)
    kernels : sequence of int or None, kernel size of each extra layer's second convolution
        (None: 3 for every layer)
    use_bn : bool, BatchNorm after each extra convolution (GluonCV's FeatureExpander uses it,
        with MXNet's symbolic BatchNorm defaults ``eps=1e-3``)

    Returns
    -------
    list of mx.sym.Symbol, one ``(B, C_k, H_k, W_k)`` feature map per entry of ``from_layers``.
    """
    num_layers = len(from_layers)
    num_filters = _per_layer(num_filters, num_layers, "num_filters")
    strides = _per_layer(strides, num_layers, "strides")
    pads = _per_layer(pads, num_layers, "pads")
    kernels = _per_layer(3 if kernels is None else kernels, num_layers, "kernels")
    internals = body.get_internals()
    available = set(internals.list_outputs())
    layers = []
    for k, from_layer in enumerate(from_layers):
        from_layer = from_layer.strip()
        if from_layer:
            key = from_layer + "_output"
            if key not in available:
                relus = sorted(n[:-len("_output")] for n in available if n.endswith("relu_output"))
                raise ValueError("from_layers[%d] = %r is not a layer of the base network; its relu "
                                 "layers are %s" % (k, from_layer, ", ".join(relus)))
            layers.append(internals[key])
            continue
        if not layers:
            raise ValueError("from_layers[0] must name a base-network layer; '' (an extra layer) "
                             "needs a previous feature to build on")
        if num_filters[k] <= 0:
            raise ValueError("extra feature layer %d needs num_filters > 0, got %r" % (k, num_filters[k]))
        num_trans = max(min_filter, int(round(num_filters[k] * transition_ratio)))
        bn = dict(use_bn=use_bn, bn_eps=1e-3)
        trans = conv_act(layers[-1], "feat%d_conv_1x1" % k, num_trans, kernel=(1, 1), pad=(0, 0), **bn)
        ksz, s, p = int(kernels[k]), int(strides[k]), int(pads[k])
        layers.append(conv_act(trans, "feat%d_conv_3x3" % k, num_filters[k], kernel=(ksz, ksz),
                               stride=(s, s), pad=(p, p), **bn))
    return layers


def _format_list(values):
    return "(" + ",".join("%r" % float(v) for v in values) + ")"


FUSED_HEAD_ALIGN = 8
"""A fused head's output channels are rounded up to a multiple of this (oneDNN's fast path)."""


def _fused_head(layer, k, num_anchors, num_classes):
    """One 3x3 convolution ``feat{k}_pred`` giving both predictors of feature layer ``k``.

    Its output channels are ``[A * (C + 1) class logits, A * 4 box offsets, padding]`` with the
    total rounded up to :data:`FUSED_HEAD_ALIGN`: the same function as two separate 3x3
    convolutions, in one oneDNN call of aligned width (measured 2-2.5x faster forward + backward
    on the ``lite`` heads than two convolutions of 35 and 20 channels). The padding channels are
    sliced away and get no gradient. The bias variable carries ``__cls_channels__`` so that
    :func:`multibox_initializer` finds the class part.

    Returns
    -------
    (loc, cls) : mx.sym.Symbol, ``(B, H * W * A * 4)`` and ``(B, H * W * A * (C + 1))``, the
    flattened NHWC layouts the separate heads give.
    """
    cls_channels, loc_channels = num_anchors * (num_classes + 1), num_anchors * 4
    total = -(-(cls_channels + loc_channels) // FUSED_HEAD_ALIGN) * FUSED_HEAD_ALIGN
    bias = mx.sym.Variable("feat%d_pred_bias" % k, attr={"__cls_channels__": str(cls_channels)})
    pred = mx.sym.Convolution(data=layer, bias=bias, num_filter=total, kernel=(3, 3), pad=(1, 1),
                              name="feat%d_pred" % k)
    nhwc = mx.sym.transpose(pred, axes=(0, 2, 3, 1))                       # (B, H, W, total)
    cls = mx.sym.slice_axis(nhwc, axis=3, begin=0, end=cls_channels)
    loc = mx.sym.slice_axis(nhwc, axis=3, begin=cls_channels, end=cls_channels + loc_channels)
    return mx.sym.flatten(loc), mx.sym.flatten(cls), pred


def multibox_layer(from_layers, num_classes, *, sizes, ratios, normalization=-1, num_channels=(),
                   clip=False, steps=(), fused_heads=False):
    """Attach L2 normalisation, class/box predictors and anchors to every feature map.

    Parameters
    ----------
    from_layers : list of mx.sym.Symbol, feature maps ``(B, C_k, H_k, W_k)``
    num_classes : int, object classes (background excluded; the heads predict ``num_classes + 1``)
    sizes : sequence of sequences of float, anchor sizes per layer (fractions of the image)
    ratios : sequence of sequences of float (or one sequence for every layer), width / height
    normalization : float or sequence of float, > 0: L2-normalise the layer over channels and
        multiply by a learned per-channel scale initialised to this value; <= 0: nothing
    num_channels : sequence of int, channels of each layer (needed where normalization > 0)
    clip : bool, clip anchors to [0, 1]
    steps : sequence of float, anchor centre step per layer as a fraction of the image (empty:
        ``1 / feature size``)
    fused_heads : bool, one aligned convolution per layer for both predictors (see
        :func:`_fused_head`; parameter names ``feat{k}_pred_*`` instead of ``feat{k}_cls_pred_*`` /
        ``feat{k}_loc_pred_*``; ``ssdkit.weights.fuse_head_params`` converts separate-head weights)

    Returns
    -------
    loc_preds : mx.sym.Symbol, ``(B, N * 4)`` box regressions, anchor-major
    cls_preds : mx.sym.Symbol, ``(B, num_classes + 1, N)`` class logits, channel 0 background
    anchors : mx.sym.Symbol, ``(1, N, 4)`` normalised corner anchors
    """
    loc_preds, cls_logits, anchors = multibox_heads(
        from_layers, num_classes, sizes=sizes, ratios=ratios, normalization=normalization,
        num_channels=num_channels, clip=clip, steps=steps, fused_heads=fused_heads)
    cls_preds = mx.sym.transpose(cls_logits, axes=(0, 2, 1), name="multibox_cls_pred")
    return loc_preds, cls_preds, anchors


def multibox_heads(from_layers, num_classes, *, sizes, ratios, normalization=-1, num_channels=(),
                   clip=False, steps=(), fused_heads=False):
    """:func:`multibox_layer` with the class logits left class-last, ``(B, N, num_classes + 1)``
    (named ``multibox_cls_logits``): the layout a softmax over classes is fastest in (MXNet's CPU
    softmax over the last axis took 1.8 ms where axis 1 of ``(B, C + 1, N)`` took 12.9 ms, SSD512,
    batch 8). Parameters and the other two outputs as in :func:`multibox_layer`.
    """
    num_layers = len(from_layers)
    if num_layers == 0:
        raise ValueError("multibox_layer needs at least one feature layer")
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1 (object classes, background excluded), got %r"
                         % (num_classes,))
    sizes = _per_layer(sizes, num_layers, "sizes")
    if not isinstance(ratios[0], (list, tuple)):
        ratios = [ratios] * num_layers
    ratios = _per_layer(ratios, num_layers, "ratios")
    normalization = _per_layer(normalization, num_layers, "normalizations")
    steps = list(steps) if steps else []
    if steps and len(steps) != num_layers:
        raise ValueError("steps has %d values but there are %d feature layers" % (len(steps), num_layers))
    num_channels = list(num_channels)

    loc_layers, cls_layers, anchor_layers = [], [], []
    for k, layer in enumerate(from_layers):
        if normalization[k] > 0:
            if k >= len(num_channels) or num_channels[k] <= 0:
                raise ValueError("layer %d is L2-normalised, so num_channels[%d] (num_filters) must "
                                 "give its channel count" % (k, k))
            layer = mx.sym.L2Normalization(data=layer, mode="channel", eps=1e-5, name="feat%d_norm" % k)
            scale = mx.sym.Variable("feat%d_scale" % k, shape=(1, num_channels[k], 1, 1),
                                    init=mx.init.Constant(float(normalization[k])))
            layer = mx.sym.broadcast_mul(layer, scale, name="feat%d_scaled" % k)
        num_anchors = len(sizes[k]) + len(ratios[k]) - 1
        if fused_heads:
            loc, cls, head = _fused_head(layer, k, num_anchors, num_classes)
        else:
            head = mx.sym.Convolution(data=layer, num_filter=num_anchors * 4, kernel=(3, 3), pad=(1, 1),
                                      name="feat%d_loc_pred" % k)
            loc = mx.sym.flatten(mx.sym.transpose(head, axes=(0, 2, 3, 1)))
            cls = mx.sym.Convolution(data=layer, num_filter=num_anchors * (num_classes + 1), kernel=(3, 3),
                                     pad=(1, 1), name="feat%d_cls_pred" % k)
            cls = mx.sym.flatten(mx.sym.transpose(cls, axes=(0, 2, 3, 1)))
        loc_layers.append(loc)
        cls_layers.append(cls)
        step = (steps[k], steps[k]) if steps else (-1.0, -1.0)
        # Anchors depend on the feature map's height and width only, which the head's output
        # `head (B, A * 4 or more, H, W)` shares. Feeding it rather than the feature keeps the copy
        # (BlockGrad) and the oneDNN-to-plain layout conversion MultiBoxPrior's input needs small:
        # for SSD512-ResNet50's 1024-channel stride-16 map at batch 8 the two took 30 ms a forward.
        # BlockGrad: without it the training graph runs MultiBoxPrior's zero backward and adds
        # its zeros into the head's gradient.
        anchors = mx.sym.MultiBoxPrior(mx.sym.BlockGrad(head), sizes=_format_list(sizes[k]),
                                       ratios=_format_list(ratios[k]), clip=clip, steps=_format_list(step),
                                       name="feat%d_anchors" % k)
        anchor_layers.append(mx.sym.flatten(anchors))

    loc_preds = mx.sym.concat(*loc_layers, dim=1, name="multibox_loc_pred")
    cls_preds = mx.sym.concat(*cls_layers, dim=1)
    cls_logits = mx.sym.reshape(cls_preds, shape=(0, -1, num_classes + 1), name="multibox_cls_logits")
    anchors = mx.sym.concat(*anchor_layers, dim=1)
    anchors = mx.sym.reshape(anchors, shape=(0, -1, 4), name="multibox_anchors")
    return loc_preds, cls_logits, anchors


def he_initializer():
    """MSRA/He Gaussian initialisation (Xavier, fan-out, magnitude 2): ssdkit's default for new weights."""
    return mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2)


def multibox_initializer(num_classes, *, background_prior=0.99, head_sigma=0.01):
    """Initializer for an SSD graph trained from scratch (or with a pretrained body).

    Every multibox head (``feat{k}_loc_pred``, ``feat{k}_cls_pred``, or a fused ``feat{k}_pred``)
    starts with small Gaussian weights (``head_sigma``) so the first losses are not dominated by
    random head outputs, and the class bias gives the background channel a prior probability
    ``background_prior`` (the object channels share the rest); other parameters use MSRA/He Xavier
    initialisation.

    Parameters
    ----------
    num_classes : int, object classes (background excluded)

    Returns
    -------
    mx.init.Initializer
    """
    if not 0.0 < background_prior < 1.0:
        raise ValueError("background_prior must be in (0, 1), got %r" % (background_prior,))
    # softmax(b, 0, ..., 0)[0] = prior  <=>  b = log(prior * C / (1 - prior))
    bias = float(np.log(background_prior * num_classes / (1.0 - background_prior)))
    return mx.init.Mixed(
        [r".*_cls_pred_bias$", r".*_loc_pred_bias$", r".*_pred_bias$", r".*_pred_weight$", ".*"],
        [_BackgroundBias(bias, num_classes + 1), mx.init.Zero(), _FusedHeadBias(bias, num_classes + 1),
         mx.init.Normal(head_sigma), he_initializer()])


class _BackgroundBias(mx.init.Initializer):
    """Class-head bias: ``value`` on the background channel of every anchor, 0 elsewhere.

    The head's output channels are ``anchor * (C + 1) + class`` (see :func:`multibox_layer`).
    """

    def __init__(self, value, channels):
        super().__init__(value=value, channels=channels)
        self._value, self._channels = float(value), int(channels)

    def _class_channels(self, name, arr):
        """How many leading channels of ``arr`` are class logits (all of a class head's)."""
        return arr.size

    def _init_weight(self, name, arr):
        bias = np.zeros(arr.shape, dtype=np.float32)
        bias[:self._class_channels(name, arr):self._channels] = self._value
        arr[:] = bias

    _init_bias = _init_weight
    _init_default = _init_weight


class _FusedHeadBias(_BackgroundBias):
    """Bias of a fused head (``feat{k}_pred``): the class part as :class:`_BackgroundBias`, box
    offsets and padding 0. The class part's size comes from the variable's ``__cls_channels__``."""

    def _class_channels(self, name, arr):
        attrs = getattr(name, "attrs", None) or {}
        if "__cls_channels__" not in attrs:
            raise ValueError("%s looks like a fused head bias but has no __cls_channels__ attribute; "
                             "initialise it through the symbol (mx.mod.Module.init_params)" % (name,))
        return int(attrs["__cls_channels__"])
