"""``lite``: a depthwise-separable body for training SSD from scratch on the CPU (main job, demos).

``conv1`` (3x3, stride 2) then MobileNet-style units (3x3 depthwise + 1x1 pointwise convolution,
each followed by BatchNorm and ReLU); the first unit of a stage has stride 2. With the default
widths ``(16, 32, 96, 128)`` and units ``(2, 3, 3)``:

=========================  ======  ========  ===============
layer                      stride  channels  receptive field
=========================  ======  ========  ===============
conv1_relu                 2       16        3 px
stage2_unit2_pw_relu       4       32        15 px
stage3_unit3_pw_relu       8       96        55 px
stage4_unit3_pw_relu       16      128       135 px
=========================  ======  ========  ===============

Stage 3 (the stride-8 layer, where the smallest anchors sit) is 96 wide rather than 64: in the
main job that costs about 10 % more training time and raised the test mAP by 0.014 and 0.028 on two
seeds (COCO APs 0.18 -> 0.21; bench/README_recipe.md); 128 was slower and no better.

The receptive fields are several times the anchor sizes placed on those layers, which is what lets
a network this small tell the synthetic shapes from the clutter around them; ``tiny`` (plain 3x3
convolutions, 15 px at stride 8) cannot, and stays at the background prior.

With ``gn_groups = G > 0`` every BatchNorm ``<conv>_bn`` is GroupNorm ``<conv>_gn`` instead (parameters
``<conv>_gn_gamma`` / ``_beta``, :func:`ssdkit.symbol.common.group_norm`). A depthwise convolution's groups
(one per channel) and GroupNorm's are independent; G only has to divide every width (the default widths
take 1, 2, 4, 8 or 16 groups).
"""
import mxnet as mx

from ssdkit.symbol.common import check_group_widths, conv_act

WIDTHS = (16, 32, 96, 128)
UNITS = (2, 3, 3)


def separable_unit(data, name, in_channels, out_channels, stride, gn_groups=0):
    """3x3 depthwise (``name_dw``) + 1x1 pointwise (``name_pw``) convolution, BN + ReLU after each.

    Parameters
    ----------
    data : mx.sym.Symbol, ``(B, in_channels, H, W)``
    gn_groups : int, > 0: GroupNorm of that many groups instead of BN (``name_dw_gn``, ``name_pw_gn``)

    Returns
    -------
    mx.sym.Symbol, ``(B, out_channels, ceil(H / stride), ceil(W / stride))``
    """
    x = conv_act(data, name + "_dw", in_channels, stride=(stride, stride), num_group=in_channels, use_bn=True,
                 gn_groups=gn_groups)
    return conv_act(x, name + "_pw", out_channels, kernel=(1, 1), pad=(0, 0), use_bn=True, gn_groups=gn_groups)


def stage_output_names(units=UNITS):
    """Names of the stage outputs (the last unit's ReLU of stages 2, 3, ...; strides 4, 8, ...), e.g.
    ``stage3_unit3_pw_relu``; ``internals[name + "_output"]`` is the feature map."""
    return ["stage%d_unit%d_pw_relu" % (stage, count) for stage, count in enumerate(units, start=2)]


def get_symbol(num_classes=1000, widths=WIDTHS, units=UNITS, *, gn_groups=0, **kwargs):
    """Build the ``lite`` body.

    Parameters
    ----------
    num_classes : int, unused (the body has no classifier)
    widths : (conv1, stage2, stage3, stage4[, stage5 ...]) output channels: one more than ``units``
    units : separable units in stages 2, 3, 4 (, 5 ...); each stage halves the resolution
    gn_groups : int, 0: BatchNorm; G > 0: GroupNorm of G groups in place of every BatchNorm (G must divide
        every width)

    Returns
    -------
    mx.sym.Symbol, the last unit's ReLU, ``(B, widths[-1], H / 2^S, W / 2^S)`` (ceil) for S = len(widths)
    (H / 16 with the default 3 stages); its internals ``stage{s}_unit{u}_pw_relu`` (``u`` from 1) are the
    feature layers of the ``lite`` preset (:func:`stage_output_names`).
    """
    del num_classes, kwargs
    if len(units) < 3 or len(widths) != len(units) + 1 or min(units) < 1:
        raise ValueError("lite needs 3 or more unit counts >= 1 and one width more than unit counts (conv1 and "
                         "each stage), got widths=%r units=%r" % (widths, units))
    if gn_groups:
        check_group_widths("lite", widths, gn_groups)
    x = conv_act(mx.sym.Variable("data"), "conv1", int(widths[0]), stride=(2, 2), use_bn=True, gn_groups=gn_groups)
    channels = int(widths[0])
    for stage, (width, count) in enumerate(zip(widths[1:], units), start=2):
        for unit in range(1, count + 1):
            x = separable_unit(x, "stage%d_unit%d" % (stage, unit), channels, int(width), 2 if unit == 1 else 1,
                               gn_groups)
            channels = int(width)
    return x
