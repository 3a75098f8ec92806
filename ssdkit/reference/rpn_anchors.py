"""Numpy reference of the ``RPNAnchors`` operator (``src/operators/rpn_anchors/``).

The operator is :func:`ssdkit.anchors.rpn_anchors` on the feature-map size of its input, with the
``(1, N, 4)`` layout of every anchor tensor inside graphs.
"""
from ssdkit.anchors import rpn_anchors as _rpn_anchors


def rpn_anchors_op(data_shape, stride, scales=(8.0,), ratios=(0.5, 1.0, 2.0), offset=0.5):
    """What ``mx.nd.RPNAnchors(data, stride=..., ...)`` returns for ``data`` of shape ``data_shape``.

    Parameters
    ----------
    data_shape : (B, C, H, W), only H and W are used
    stride, scales, ratios, offset : as :func:`ssdkit.anchors.rpn_anchors`

    Returns
    -------
    (1, H * W * len(ratios) * len(scales), 4) float32 pixel corners, location-major, then ratio,
    then scale.
    """
    height, width = int(data_shape[2]), int(data_shape[3])
    return _rpn_anchors(height, width, stride, scales, ratios, offset)[None]
