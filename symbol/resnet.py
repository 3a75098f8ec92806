"""ResNet v1 base networks (18, 34, 50, 101 layers), the architecture of GluonCV's ``resnet*_v1``.

v1 places the stride of a bottleneck unit on its first 1x1 convolution, and, like GluonCV, gives
the two 1x1 convolutions of a bottleneck a bias (3x3 convolutions, the stem and the projection
shortcut have none). BatchNorm uses ``eps=1e-5``.

Layer names: stem ``conv0`` (+ ``conv0_bn``, ``conv0_relu``), ``pool0``; unit ``u`` (1-based) of
stage ``s`` (1..4): ``stage{s}_unit{u}_conv{j}`` (+ ``_bn``, ``_relu``), the projection shortcut
``stage{s}_unit{u}_sc`` (+ ``_bn``) and the unit output ``stage{s}_unit{u}_relu``.

Variants (:data:`VARIANTS`, GluonCV's ``resnetv1b.py`` family, bottleneck depths only): ``v1b`` moves a
bottleneck's stride to its 3x3 convolution and has no convolution biases; ``v1d`` is ``v1b`` with a deep
stem (3x3 convolutions ``conv0_1`` (32, stride 2), ``conv0_2`` (32), ``conv0_3`` (64), each + BatchNorm,
replacing ``conv0``) and projection shortcuts that average-pool (2x2, ceil mode, padding excluded) before
a stride-1 ``_sc`` convolution.

GroupNorm (``gn_groups > 0``, GroupNorm backbones as in the GN Mask R-CNN configurations): every ``<conv>_bn``
is replaced by GroupNorm ``<conv>_gn`` (parameters ``<conv>_gn_gamma`` / ``_beta``,
:func:`ssdkit.symbol.common.group_norm`); convolutions keep their biases as above. The normalised widths are
:func:`norm_widths`, each must be a multiple of ``gn_groups``.
"""
import mxnet as mx

from ssdkit.symbol.common import check_group_widths, conv_act

SPECS = {
    18: ("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    34: ("basic", (3, 4, 6, 3), (64, 128, 256, 512)),
    50: ("bottleneck", (3, 4, 6, 3), (256, 512, 1024, 2048)),
    101: ("bottleneck", (3, 4, 23, 3), (256, 512, 1024, 2048)),
}
"""depth -> (unit type, units per stage, output channels per stage)."""

VARIANTS = ("v1", "v1b", "v1d")
"""ResNet variants: ``v1`` (GluonCV ``resnet*_v1``), ``v1b`` and ``v1d`` (GluonCV ``resnet*_v1b`` / ``_v1d``)."""


def _unit(data, name, channels, stride, project, bottleneck, global_stats, variant="v1", gn_groups=0):
    bn = dict(use_bn=True, bn_global_stats=global_stats, gn_groups=gn_groups)
    if bottleneck:
        mid = channels // 4
        v1 = variant == "v1"
        s1, s2 = ((stride, stride), (1, 1)) if v1 else ((1, 1), (stride, stride))
        x = conv_act(data, name + "_conv1", mid, kernel=(1, 1), stride=s1, pad=(0, 0), no_bias=not v1, **bn)
        x = conv_act(x, name + "_conv2", mid, stride=s2, **bn)
        x = conv_act(x, name + "_conv3", channels, kernel=(1, 1), pad=(0, 0), no_bias=not v1, act=None, **bn)
    else:
        x = conv_act(data, name + "_conv1", channels, stride=(stride, stride), **bn)
        x = conv_act(x, name + "_conv2", channels, act=None, **bn)
    shortcut = data
    if project and variant == "v1d" and stride > 1:
        pooled = mx.sym.Pooling(data, pool_type="avg", kernel=(stride, stride), stride=(stride, stride),
                                pooling_convention="full", count_include_pad=False, name=name + "_sc_pool")
        shortcut = conv_act(pooled, name + "_sc", channels, kernel=(1, 1), pad=(0, 0), act=None, **bn)
    elif project:
        shortcut = conv_act(data, name + "_sc", channels, kernel=(1, 1), stride=(stride, stride),
                            pad=(0, 0), act=None, **bn)
    x = mx.sym.elemwise_add(x, shortcut, name=name + "_plus")
    return mx.sym.Activation(data=x, act_type="relu", name=name + "_relu")


def stage_output_names(num_layers):
    """Names of the outputs of stages 1..4 (C2..C5, strides 4, 8, 16, 32): the last unit's relu,
    e.g. ``stage3_unit6_relu`` for resnet50; ``internals[name + "_output"]`` is the feature map."""
    units = SPECS[num_layers][1]
    return ["stage%d_unit%d_relu" % (s, n) for s, n in enumerate(units, start=1)]


def norm_widths(num_layers, variant="v1"):
    """The distinct output widths of the normalised convolutions (stem, bottleneck middles, stage outputs),
    ascending, e.g. ``(64, 128, 256, 512)`` for resnet18 and ``(32, 64, 128, 256, 512, 1024, 2048)`` for
    resnet50 ``v1d``: ``gn_groups`` must divide each."""
    unit_type, _, channels = SPECS[num_layers]
    widths = {32, 64} if variant == "v1d" else {64}
    widths.update(channels)
    if unit_type == "bottleneck":
        widths.update(c // 4 for c in channels)
    return tuple(sorted(widths))


def get_symbol(num_classes=1000, num_layers=50, *, bn_global_stats=False, variant="v1", gn_groups=0, **kwargs):
    """Build a ResNet v1 body.

    Parameters
    ----------
    num_classes : int, unused (the body has no classifier)
    num_layers : int, one of 18, 34, 50, 101
    bn_global_stats : bool, every BatchNorm uses its moving statistics also in training
        ("frozen" BatchNorm, for fine-tuning with few images per device)
    variant : str, one of :data:`VARIANTS` (``v1b`` / ``v1d``: bottleneck depths 50 and 101 only)
    gn_groups : int, 0: BatchNorm; G > 0: GroupNorm of G groups in place of every BatchNorm (G must divide
        every width of :func:`norm_widths`; not with ``bn_global_stats``)

    Returns
    -------
    mx.sym.Symbol, the last unit's output ``(B, C, H / 32, W / 32)`` (C = 512 or 2048); the
    outputs of all four stages are internals named by :func:`stage_output_names`.
    """
    del num_classes, kwargs
    if num_layers not in SPECS:
        raise ValueError("resnet num_layers must be one of %s, got %r" % (sorted(SPECS), num_layers))
    unit_type, units, channels = SPECS[num_layers]
    if variant not in VARIANTS or (variant != "v1" and unit_type != "bottleneck"):
        raise ValueError("resnet variant must be one of %s (v1b and v1d for depths 50 and 101), got %r for "
                         "depth %d" % (", ".join(VARIANTS), variant, num_layers))
    if gn_groups:
        if bn_global_stats:
            raise ValueError("resnet: GroupNorm (gn_groups=%d) has no stored statistics to freeze; "
                             "bn_global_stats is for BatchNorm" % gn_groups)
        check_group_widths("resnet%d %s" % (num_layers, variant), norm_widths(num_layers, variant), gn_groups)
    bn = dict(use_bn=True, bn_global_stats=bn_global_stats, gn_groups=gn_groups)
    if variant == "v1d":
        x = conv_act(mx.sym.Variable("data"), "conv0_1", 32, stride=(2, 2), **bn)
        x = conv_act(x, "conv0_2", 32, **bn)
        x = conv_act(x, "conv0_3", 64, **bn)
    else:
        x = conv_act(mx.sym.Variable("data"), "conv0", 64, kernel=(7, 7), stride=(2, 2), pad=(3, 3), **bn)
    x = mx.sym.Pooling(data=x, pool_type="max", kernel=(3, 3), stride=(2, 2), pad=(1, 1), name="pool0")
    in_channels = 64
    for s, (num_units, out_channels) in enumerate(zip(units, channels), start=1):
        for u in range(1, num_units + 1):
            stride = 2 if (u == 1 and s > 1) else 1
            project = u == 1 and (stride != 1 or in_channels != out_channels)
            x = _unit(x, "stage%d_unit%d" % (s, u), out_channels, stride, project, unit_type == "bottleneck",
                      bn_global_stats, variant, gn_groups)
            in_channels = out_channels
    return x
