"""VGG16 "reduced" (atrous) base network of SSD: VGG16 conv1-conv5 with fc6/fc7 as convolutions.

fc6 is a 3x3 convolution with dilation 6 (1024 channels), fc7 a 1x1 convolution, and pool5 a
3x3 stride-1 pooling, as in the SSD paper and GluonCV's ``vgg16_atrous``. Every pooling uses the
``full`` (ceil) convention, so a 300 input gives conv4_3 at 38x38 and fc7 at 19x19.

Layer names (``from_layers`` of the presets use the relu outputs): ``conv{s}_{i}``/``relu{s}_{i}``
for stage ``s`` in 1..5, ``pool{s}``, ``fc6``/``relu6``, ``fc7``/``relu7``.

Input: ImageNet-normalised ``data`` (see :mod:`ssdkit.symbol.common`). Caffe-converted VGG
weights expect mean-subtracted 0-255 pixels instead; :mod:`ssdkit.weights` folds that scale into
``conv1_1_weight`` when importing them.
"""
import mxnet as mx

STAGES = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
"""(convolutions, channels) of the five VGG16 stages."""


def get_symbol(num_classes=1000, **kwargs):
    """Build the VGG16-reduced body.

    Parameters
    ----------
    num_classes : int, unused (the body has no classifier); kept for the common signature

    Returns
    -------
    mx.sym.Symbol, ``relu7`` of shape ``(B, 1024, H / 16, W / 16)`` (ceil at each pooling);
    ``data (B, 3, H, W)`` is its input.
    """
    del num_classes, kwargs
    x = mx.sym.Variable("data")
    for s, (num_convs, channels) in enumerate(STAGES, start=1):
        for i in range(1, num_convs + 1):
            x = mx.sym.Convolution(data=x, num_filter=channels, kernel=(3, 3), pad=(1, 1),
                                   name="conv%d_%d" % (s, i))
            x = mx.sym.Activation(data=x, act_type="relu", name="relu%d_%d" % (s, i))
        if s < 5:
            x = mx.sym.Pooling(data=x, pool_type="max", kernel=(2, 2), stride=(2, 2),
                               pooling_convention="full", name="pool%d" % s)
        else:
            x = mx.sym.Pooling(data=x, pool_type="max", kernel=(3, 3), stride=(1, 1), pad=(1, 1),
                               pooling_convention="full", name="pool5")
    x = mx.sym.Convolution(data=x, num_filter=1024, kernel=(3, 3), pad=(6, 6), dilate=(6, 6), name="fc6")
    x = mx.sym.Activation(data=x, act_type="relu", name="relu6")
    x = mx.sym.Convolution(data=x, num_filter=1024, kernel=(1, 1), name="fc7")
    return mx.sym.Activation(data=x, act_type="relu", name="relu7")
