"""The ImageNet pixel normalisation every ssdkit base network expects, defined once.

Graph input ``data (B, 3, H, W)`` is RGB ``(pixel - IMAGENET_MEAN) / IMAGENET_STD`` on the 0-255 scale
(the GluonCV convention ``(pixel / 255 - mean01) / std01``). The data pipeline
(:class:`ssdkit.dataset.augment.Normalization`), the config defaults (``data.mean`` / ``data.std``)
and the meta files use these values.
"""

IMAGENET_MEAN = (123.675, 116.28, 103.53)
"""ImageNet RGB channel means on the 0-255 scale."""
IMAGENET_STD = (58.395, 57.12, 57.375)
"""ImageNet RGB channel standard deviations on the 0-255 scale."""
