"""SSD presets per base network and input size, and shortcuts that build their graphs.

The presets are data: one TOML file per network in ``config/networks/`` read into a typed
:class:`ssdkit.config.ssd_layout.SSDLayout` (:func:`ssdkit.config.ssd_layout.ssd_layout`).
``get_config(network, data_shape)`` returns it as a new plain dict of the keyword arguments of
:func:`ssdkit.symbol.symbol_builder.get_symbol_train` / ``get_symbol`` (everything but ``num_classes``).
Presets:

* ``vgg16_reduced`` @300 and @512: the classic MXNet SSD values (300 gives 8732 anchors).
* ``resnet18`` / ``resnet34`` / ``resnet50`` / ``resnet101``: the classic MXNet SSD resnet values
  (stage-3 and stage-4 outputs plus four extra layers, sizes .1 .. .961), any input size.
* ``mobilenet`` @512: GluonCV's ``ssd_512_mobilenet1.0`` layout (BatchNorm extra layers with
  1x1 transitions as wide as the output, pixel sizes 51.2 .. 492 and steps 16 .. 512); @300: the
  same layers with the classic 300 sizes.
* ``tiny``: the small CPU network (any input size, e.g. 64 or 128), fast but too shallow to learn
  much from scratch; ``small``: tiny with two convolutions per stage; ``lite``: the
  depthwise-separable CPU network of the main job (any input size).
"""
from ssdkit.config.ssd_layout import gluoncv_sizes, ssd_layout  # noqa: F401  (gluoncv_sizes: public name)
from ssdkit.symbol import symbol_builder


def get_config(network, data_shape, **kwargs):
    """Preset of ``network`` at input size ``data_shape`` (a new dict; ``kwargs`` override it).

    Returns
    -------
    dict with ``network`` (base-network name), ``from_layers``, ``num_filters``, ``strides``,
    ``pads``, ``sizes``, ``ratios``, ``normalizations``, ``steps`` and, where the preset sets them,
    the base network's options (``num_layers``), extra-layer options, ``fused_heads`` and ``variances``
    (:meth:`ssdkit.config.ssd_layout.SSDLayout.builder_kwargs`).
    """
    config = ssd_layout(network, data_shape).builder_kwargs()
    config.update(kwargs)
    return config


def get_symbol_train(network, data_shape, num_classes, **kwargs):
    """Training graph of a preset (``kwargs`` override preset values)."""
    return symbol_builder.get_symbol_train(num_classes=num_classes, **get_config(network, data_shape, **kwargs))


def get_symbol(network, data_shape, num_classes, **kwargs):
    """Inference graph of a preset (``kwargs`` override preset values)."""
    return symbol_builder.get_symbol(num_classes=num_classes, **get_config(network, data_shape, **kwargs))
