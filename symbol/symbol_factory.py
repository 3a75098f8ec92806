"""SSD presets per base network and input size, and shortcuts that build their graphs.

``get_config(network, data_shape)`` returns a new plain dict of the keyword arguments of
:func:`ssdkit.symbol.symbol_builder.get_symbol_train` / ``get_symbol`` (everything but
``num_classes``). Presets:

* ``vgg16_reduced`` @300 and @512: the classic MXNet SSD values (300 gives 8732 anchors).
* ``resnet18`` / ``resnet34`` / ``resnet50`` / ``resnet101``: the classic MXNet SSD resnet values
  (stage-3 and stage-4 outputs plus four extra layers, sizes .1 .. .961), any input size.
* ``mobilenet`` @512: GluonCV's ``ssd_512_mobilenet1.0`` layout (BatchNorm extra layers with
  1x1 transitions as wide as the output, pixel sizes 51.2 .. 492 and steps 16 .. 512); @300: the
  same layers with the classic 300 sizes.
* ``tiny``: the small CPU network (any input size, e.g. 64 or 128), fast but too shallow to learn
  much from scratch; ``lite``: the depthwise-separable CPU network of the main job (any input size).
"""
import logging

from ssdkit.symbol import resnet, symbol_builder

_LOG = logging.getLogger(__name__)

_CLASSIC_SIZES = ((.1, .141), (.2, .272), (.37, .447), (.54, .619), (.71, .79), (.88, .961))
_RATIOS_6 = ((1, 2, .5),) + ((1, 2, .5, 3, 1. / 3),) * 3 + ((1, 2, .5),) * 2


def gluoncv_sizes(pixel_sizes, base_size):
    """GluonCV's per-network size list -> per-layer ``(s_k, sqrt(s_k * s_k+1))`` fractions.

    Parameters
    ----------
    pixel_sizes : sequence of L + 1 float, GluonCV's ``sizes`` in pixels
    base_size : int, the input size they refer to

    Returns
    -------
    list of L ``[size, size']`` lists (fractions of the image).
    """
    s = [float(v) / base_size for v in pixel_sizes]
    return [[s[k], (s[k] * s[k + 1]) ** 0.5] for k in range(len(s) - 1)]


def _lists(rows):
    return [list(r) for r in rows]


def get_config(network, data_shape, **kwargs):
    """Preset of ``network`` at input size ``data_shape`` (a new dict; ``kwargs`` override it).

    Returns
    -------
    dict with ``network`` (base-network name), ``from_layers``, ``num_filters``, ``strides``,
    ``pads``, ``sizes``, ``ratios``, ``normalizations``, ``steps`` and, where the base network
    needs them, its own options (e.g. ``num_layers``) and extra-layer options.
    """
    data_shape = int(data_shape)
    if network == "vgg16_reduced":
        if data_shape not in (300, 512):
            _LOG.warning("vgg16_reduced presets are tuned for 300 and 512, not %d", data_shape)
        if data_shape >= 448:
            config = dict(
                from_layers=["relu4_3", "relu7", "", "", "", "", ""],
                num_filters=[512, -1, 512, 256, 256, 256, 256],
                strides=[-1, -1, 2, 2, 2, 2, 1], pads=[-1, -1, 1, 1, 1, 1, 1],
                sizes=[[.07, .1025], [.15, .2121], [.3, .3674], [.45, .5196], [.6, .6708],
                       [.75, .8216], [.9, .9721]],
                ratios=_lists(((1, 2, .5),) + ((1, 2, .5, 3, 1. / 3),) * 4 + ((1, 2, .5),) * 2),
                normalizations=[20, -1, -1, -1, -1, -1, -1],
                steps=[x / 512.0 for x in (8, 16, 32, 64, 128, 256, 512)] if data_shape == 512 else [])
        else:
            config = dict(
                from_layers=["relu4_3", "relu7", "", "", "", ""],
                num_filters=[512, -1, 512, 256, 256, 256],
                strides=[-1, -1, 2, 2, 1, 1], pads=[-1, -1, 1, 1, 0, 0],
                sizes=_lists(_CLASSIC_SIZES), ratios=_lists(_RATIOS_6),
                normalizations=[20, -1, -1, -1, -1, -1],
                steps=[x / 300.0 for x in (8, 16, 32, 64, 100, 300)] if data_shape == 300 else [])
        config["network"] = "vgg16_reduced"
    elif network in ("resnet18", "resnet34", "resnet50", "resnet101"):
        depth = int(network[len("resnet"):])
        units = resnet.SPECS[depth][1]
        config = dict(
            network="resnet", num_layers=depth,
            from_layers=["stage3_unit%d_relu" % units[2], "stage4_unit%d_relu" % units[3], "", "", "", ""],
            num_filters=[-1, -1, 512, 256, 256, 128],
            strides=[-1, -1, 2, 2, 2, 2], pads=[-1, -1, 1, 1, 1, 1],
            sizes=_lists(_CLASSIC_SIZES), ratios=_lists(_RATIOS_6), normalizations=-1, steps=[])
    elif network == "mobilenet":
        config = dict(
            network="mobilenet",
            from_layers=["conv_12_relu", "conv_14_relu", "", "", "", ""],
            num_filters=[-1, -1, 512, 512, 256, 256],
            strides=[-1, -1, 2, 2, 2, 2], pads=[-1, -1, 1, 1, 1, 1],
            ratios=_lists(_RATIOS_6), normalizations=-1,
            transition_ratio=1.0, extra_bn=True)
        if data_shape == 512:
            config.update(sizes=gluoncv_sizes((51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492), 512),
                          steps=[x / 512.0 for x in (16, 32, 64, 128, 256, 512)])
        else:
            config.update(sizes=_lists(_CLASSIC_SIZES), steps=[])
    elif network == "tiny":
        config = dict(
            network="tiny",
            from_layers=["conv3_relu", "conv4_relu", "", ""],
            num_filters=[-1, -1, 128, 128],
            strides=[-1, -1, 2, 2], pads=[-1, -1, 1, 1],
            sizes=[[.1, .16], [.25, .35], [.5, .6], [.8, .9]],
            ratios=[[1, 2, .5] for _ in range(4)], normalizations=-1, steps=[], extra_bn=True)
    elif network == "lite":
        config = dict(
            network="lite",
            from_layers=["stage3_unit3_pw_relu", "stage4_unit3_pw_relu", "", ""],
            num_filters=[-1, -1, 128, 128],
            strides=[-1, -1, 2, 2], pads=[-1, -1, 1, 1],
            # the synthetic shapes are 0.03-0.67 of the image (median 0.13): with these sizes 91 % of
            # them have an anchor of IoU >= 0.5 (75 % with tiny's sizes)
            sizes=[[.05, .08, .12], [.18, .26], [.36, .5], [.65, .85]],
            ratios=[[1, 2, .5] for _ in range(4)], normalizations=-1, steps=[], extra_bn=True,
            # one aligned head convolution per layer: the training step 1.4x faster (bench/README_train.md)
            fused_heads=True)
    elif network == "small":
        config = dict(
            network="small",
            from_layers=["conv3b_relu", "conv4b_relu", "", ""],
            num_filters=[-1, -1, 128, 128],
            strides=[-1, -1, 2, 2], pads=[-1, -1, 1, 1],
            sizes=[[.06, .1], [.15, .25], [.35, .5], [.65, .85]],
            ratios=[[1, 2, .5] for _ in range(4)], normalizations=-1, steps=[], extra_bn=True)
    else:
        raise ValueError("no SSD preset for network %r; presets: vgg16_reduced, resnet18, resnet34, "
                         "resnet50, resnet101, mobilenet, tiny, lite, small" % (network,))
    config.update(kwargs)
    return config


def get_symbol_train(network, data_shape, num_classes, **kwargs):
    """Training graph of a preset (``kwargs`` override preset values)."""
    return symbol_builder.get_symbol_train(num_classes=num_classes, **get_config(network, data_shape, **kwargs))


def get_symbol(network, data_shape, num_classes, **kwargs):
    """Inference graph of a preset (``kwargs`` override preset values)."""
    return symbol_builder.get_symbol(num_classes=num_classes, **get_config(network, data_shape, **kwargs))
