"""A compact base network for CPU training (the main job's detector), deeper than ``tiny``.

Stages of 3x3 convolutions with BatchNorm and ReLU; each stage after the first halves the
resolution and then refines it once: ``conv1`` (16, stride 2), ``conv2``/``conv2b`` (32, stride 4),
``conv3``/``conv3b`` (64, stride 8), ``conv4``/``conv4b`` (128, stride 16).
"""
import mxnet as mx

from ssdkit.symbol.common import conv_act

STAGES = (16, 32, 64, 128)


def get_symbol(num_classes=1000, **kwargs):
    """Build the small body.

    Parameters
    ----------
    num_classes : int, unused (the body has no classifier)

    Returns
    -------
    mx.sym.Symbol, ``conv4b_relu`` of shape ``(B, 128, H / 16, W / 16)`` (ceil); ``conv3b_relu``
    (stride 8) is the other feature layer of the ``small`` preset.
    """
    del num_classes, kwargs
    x = mx.sym.Variable("data")
    for i, channels in enumerate(STAGES, start=1):
        x = conv_act(x, "conv%d" % i, channels, stride=(2, 2), use_bn=True)
        if i > 1:
            x = conv_act(x, "conv%db" % i, channels, use_bn=True)
    return x
