"""MobileNet v1 (width 1.0) base network, the architecture of GluonCV's ``mobilenet1.0``.

A 3x3 stride-2 convolution followed by 13 depthwise-separable blocks; every convolution is
bias-free and followed by BatchNorm (``eps=1e-5``) and ReLU.

Layer names: stem ``conv_1`` (+ ``_bn``, ``_relu``); block ``k`` in 2..14: depthwise ``conv_{k}_dw``
(+ ``_bn``, ``_relu``) and pointwise ``conv_{k}`` (+ ``_bn``, ``_relu``). ``conv_12_relu`` is the
last stride-16 feature (512 channels), ``conv_14_relu`` the stride-32 output (1024 channels).
"""
import mxnet as mx

from ssdkit.symbol.common import conv_act

BLOCKS = ((32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
          (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1),
          (512, 1024, 2), (1024, 1024, 1))
"""(input channels, output channels, stride) of the 13 depthwise-separable blocks."""


def get_symbol(num_classes=1000, **kwargs):
    """Build the MobileNet 1.0 body.

    Parameters
    ----------
    num_classes : int, unused (the body has no classifier)

    Returns
    -------
    mx.sym.Symbol, ``conv_14_relu`` of shape ``(B, 1024, H / 32, W / 32)``.
    """
    del num_classes, kwargs
    x = conv_act(mx.sym.Variable("data"), "conv_1", 32, stride=(2, 2), use_bn=True)
    for k, (c_in, c_out, stride) in enumerate(BLOCKS, start=2):
        x = conv_act(x, "conv_%d_dw" % k, c_in, stride=(stride, stride), num_group=c_in, use_bn=True)
        x = conv_act(x, "conv_%d" % k, c_out, kernel=(1, 1), pad=(0, 0), use_bn=True)
    return x
