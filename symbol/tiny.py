"""Small, fast base networks for CPU demos, tests and the main job (not meant for ImageNet accuracy).

Four 3x3 stride-2 convolutions with BatchNorm and ReLU: ``conv1`` .. ``conv4`` (16, 32, 64, 128
channels), so ``conv3_relu`` is at stride 8 and ``conv4_relu`` at stride 16.
"""
import mxnet as mx

from ssdkit.symbol.common import conv_act

CHANNELS = (16, 32, 64, 128)


def _body(refine):
    x = mx.sym.Variable("data")
    for i, channels in enumerate(CHANNELS, start=1):
        x = conv_act(x, "conv%d" % i, channels, stride=(2, 2), use_bn=True)
        if refine and i > 1:
            x = conv_act(x, "conv%db" % i, channels, use_bn=True)
    return x


def get_symbol(num_classes=1000, **kwargs):
    """Build the tiny body.

    Parameters
    ----------
    num_classes : int, unused (the body has no classifier)

    Returns
    -------
    mx.sym.Symbol, ``conv4_relu`` of shape ``(B, 128, H / 16, W / 16)`` (ceil).
    """
    del num_classes, kwargs
    return _body(refine=False)


def get_small_symbol(num_classes=1000, **kwargs):
    """The ``small`` body: ``tiny`` with a stride-1 3x3 refinement after each of conv2..conv4.

    Returns
    -------
    mx.sym.Symbol, ``conv4b_relu`` of shape ``(B, 128, H / 16, W / 16)``; ``conv3b_relu`` (stride 8)
    is the other feature layer of the ``small`` preset.
    """
    del num_classes, kwargs
    return _body(refine=True)
