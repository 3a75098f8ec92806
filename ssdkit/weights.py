"""Import GluonCV weights from local ``.params`` files into ssdkit graphs (nothing is downloaded).

* :func:`import_imagenet` maps a GluonCV ImageNet classifier (``resnet{18,34,50,101}_v1``,
  ``mobilenet1.0``, ``vgg16_atrous``) onto the matching ssdkit base network, for
  ``--pretrained PATH``.
* :func:`import_ssd` maps a GluonCV SSD zoo net (:data:`ZOO`) onto the ssdkit ``get_symbol`` graph
  of :func:`zoo_config`: base network, extra layers, L2Norm scale, class and box predictors
  (separate, or with ``fused_heads=True`` concatenated into ssdkit's fused heads by
  :func:`fuse_head_params`).

Both return ``(arg_params, aux_params)`` dicts of NDArrays for ``Module.set_params``. Files saved
with ``net.save_parameters`` are expected (GluonCV's own downloads use that format).

Name mapping. GluonCV ImageNet files use structural names (``features.4.0.body.0.weight``); SSD
files keep those for VGG but use the symbol names of GluonCV's ``FeatureExpander`` for resnet and
mobilenet (``features.resnetv10_stage1_conv0_weight``, numbered in creation order within a
stage). :func:`layer_map` builds, per network and file kind, the table "ssdkit layer -> GluonCV
prefix"; parameters then map suffix by suffix (BatchNorm ``running_mean`` -> ``moving_mean``).

Conventions bridged here:

* GluonCV's VGG multiplies the ImageNet-normalised input by ``init_scale = 255 * std`` (its
  weights come from Caffe); ssdkit folds that per-channel factor into ``conv1_1_weight``, so every
  ssdkit network takes the same normalised input.
* GluonCV's extra layers use MXNet's symbolic BatchNorm with ``fix_gamma=True``: gamma is read as
  1 whatever the file holds, so ssdkit (``fix_gamma=False``) gets ones.
* Anchors: GluonCV works in pixels of ``base_size`` with per-layer ``(s_k, s_k+1)`` sizes and
  pixel steps; :func:`zoo_config` turns them into MultiBoxPrior sizes ``(s_k, sqrt(s_k s_k+1)) /
  base_size``, the same ratios and steps ``step / base_size`` (offsets 0.5 in both), which give the
  same anchors (tested).
* Decoding differs: GluonCV scores every (anchor, class) pair above 0.01 and runs per-class NMS
  over all of them, returning ``post_nms`` rows of unclipped boxes; ``MultiBoxDetection`` keeps one
  class per anchor (its best object class). Both decode with the same coder and variances, so the
  pre-NMS boxes and class probabilities are equal; detections coincide when no anchor has two
  object classes above the threshold (see ``tests/test_gluoncv_import.py``).
"""
import re

import mxnet as mx
import numpy as np

from ssdkit.detection_defaults import NMS_THRESH, NMS_TOPK
from ssdkit.symbol import resnet, symbol_builder, symbol_factory
from ssdkit.symbol.common import FUSED_HEAD_ALIGN

_SUFFIXES = {"weight": ("weight",), "bias": ("bias",), "gamma": ("gamma",), "beta": ("beta",),
             "moving_mean": ("running_mean", "moving_mean"), "moving_var": ("running_var", "moving_var")}
"""ssdkit parameter suffix -> GluonCV suffixes (Gluon layers say running_*, symbolic ones moving_*)."""

ZOO = {
    "ssd_300_vgg16_atrous_voc": ("vgg16", 300, 20, (30, 60, 111, 162, 213, 264, 315), (8, 16, 32, 64, 100, 300)),
    "ssd_300_vgg16_atrous_coco": ("vgg16", 300, 80, (21, 45, 99, 153, 207, 261, 315), (8, 16, 32, 64, 100, 300)),
    "ssd_512_resnet50_v1_voc": ("resnet50", 512, 20, (51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492),
                                (16, 32, 64, 128, 256, 512)),
    "ssd_512_resnet50_v1_coco": ("resnet50", 512, 80, (51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72),
                                 (16, 32, 64, 128, 256, 512)),
    "ssd_512_mobilenet1.0_voc": ("mobilenet", 512, 20, (51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492),
                                 (16, 32, 64, 128, 256, 512)),
    "ssd_512_mobilenet1.0_coco": ("mobilenet", 512, 80, (51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492),
                                  (16, 32, 64, 128, 256, 512)),
}
"""GluonCV SSD zoo name -> (base, base_size, classes, pixel sizes (L + 1), pixel steps (L)), the
values of ``gluoncv.model_zoo.ssd.presets``; ratios are the common 3/5/5/5/3/3 layout."""

IMAGENET = {"resnet18_v1": ("resnet", 18), "resnet34_v1": ("resnet", 34), "resnet50_v1": ("resnet", 50),
            "resnet101_v1": ("resnet", 101), "mobilenet1.0": ("mobilenet", None),
            "vgg16_atrous": ("vgg16_reduced", None)}
"""GluonCV ImageNet network -> (ssdkit base network, resnet depth)."""

PRESET_IMAGENET = {"vgg16_reduced": "vgg16_atrous", "resnet18": "resnet18_v1", "resnet34": "resnet34_v1",
                   "resnet50": "resnet50_v1", "resnet101": "resnet101_v1", "mobilenet": "mobilenet1.0"}
"""ssdkit preset name (``symbol_factory.get_config``) -> the GluonCV ImageNet network it loads."""


def _check_zoo_name(name):
    if name not in ZOO:
        raise ValueError("no GluonCV SSD mapping for %r; known: %s" % (name, ", ".join(sorted(ZOO))))


def zoo_class_names(name):
    """Class names of GluonCV SSD ``name`` in its class-id order (VOC: ssdkit's ``VOC_CLASSES``, the
    same order; COCO: GluonCV's ``COCODetection.CLASSES``, COCO category-id order)."""
    _check_zoo_name(name)
    if name.endswith("_voc"):
        from ssdkit.dataset.voc import VOC_CLASSES

        return tuple(VOC_CLASSES)
    try:
        from gluoncv.data import COCODetection
    except ImportError as err:
        raise ImportError("the COCO class names of GluonCV zoo models come from GluonCV (%s); install it "
                          "with: pip install 'ssdkit[gluoncv]'" % err) from None

    return tuple(COCODetection.CLASSES)


def zoo_config(name, fused_heads=False):
    """``get_symbol`` keyword arguments (``num_classes`` included) reproducing GluonCV SSD ``name``.

    Detection settings are GluonCV's: NMS 0.45, top-k 400, 100 rows (``post_nms``), boxes not
    clipped to the image. ``fused_heads``: one aligned convolution per layer for the class and box
    predictors (the same function; faster on the CPU, see :func:`fuse_head_params`).
    """
    _check_zoo_name(name)
    base, size, num_classes, pixel_sizes, pixel_steps = ZOO[name]
    if base == "vgg16":
        config = symbol_factory.get_config("vgg16_reduced", 300)
    else:
        config = symbol_factory.get_config("mobilenet", 512)
        if base == "resnet50":
            units = resnet.SPECS[50][1]
            config.update(network="resnet", num_layers=50,
                          from_layers=["stage3_unit%d_relu" % units[2], "stage4_unit%d_relu" % units[3],
                                       "", "", "", ""])
    config.update(num_classes=num_classes, sizes=symbol_factory.gluoncv_sizes(pixel_sizes, size),
                  steps=[float(s) / size for s in pixel_steps], nms_thresh=NMS_THRESH, nms_topk=NMS_TOPK,
                  clip=False, max_detections=100, fused_heads=fused_heads)
    return config


def _resnet_layers(depth):
    """Yield ``(ssdkit layer, stage, unit, slot)``; slot i >= 0 is body conv i, -1 the projection."""
    unit_type, units, channels = resnet.SPECS[depth]
    per_unit = 3 if unit_type == "bottleneck" else 2
    in_channels = 64
    for s, (num_units, out_channels) in enumerate(zip(units, channels), start=1):
        for u in range(1, num_units + 1):
            for i in range(per_unit):
                yield "stage%d_unit%d_conv%d" % (s, u, i + 1), s, u, i
            if u == 1 and (s > 1 or in_channels != out_channels):
                yield "stage%d_unit%d_sc" % (s, u), s, u, -1
            in_channels = out_channels


def layer_map(network, kind, prefix=""):
    """Table ssdkit layer name -> GluonCV parameter prefix.

    Parameters
    ----------
    network : str, a key of :data:`IMAGENET`
    kind : ``'imagenet'`` (structural names) or ``'ssd'`` (names inside a zoo SSD file)
    prefix : str, the GluonCV block prefix of an SSD file (``'resnetv10'``, ``'mobilenet0'``)

    Returns
    -------
    dict, e.g. ``{'conv0': 'features.0.', 'conv0_bn': 'features.1.', ...}``; a parameter
    ``<layer>_<suffix>`` maps to ``<prefix><GluonCV suffix>``.
    """
    base, depth = IMAGENET[network]
    table = {}
    if base == "vgg16_reduced":
        from ssdkit.symbol.vgg16_reduced import STAGES
        for s, (num_convs, _) in enumerate(STAGES, start=1):
            for i in range(1, num_convs + 1):
                table["conv%d_%d" % (s, i)] = "features.stages.%d.%d." % (s - 1, 2 * (i - 1))
        table["fc6"], table["fc7"] = "features.stages.5.0.", "features.stages.5.2."
        return table
    structural = kind == "imagenet"
    if base == "mobilenet":
        names = ["conv_1"] + [n for k in range(2, 15) for n in ("conv_%d_dw" % k, "conv_%d" % k)]
        for j, name in enumerate(names):
            table[name] = "features.%d." % (3 * j) if structural else "features.%s_conv%d_" % (prefix, j)
            table[name + "_bn"] = ("features.%d." % (3 * j + 1) if structural
                                   else "features.%s_batchnorm%d_" % (prefix, j))
        return table
    table["conv0"] = "features.0." if structural else "features.%s_conv0_" % prefix
    table["conv0_bn"] = "features.1." if structural else "features.%s_batchnorm0_" % prefix
    per_unit = 3 if resnet.SPECS[depth][0] == "bottleneck" else 2
    projected = {s for _, s, u, i in _resnet_layers(depth) if i < 0}
    for name, s, u, i in _resnet_layers(depth):
        if structural:
            block = "features.%d.%d." % (3 + s, u - 1)
            conv, bn = ((block + "downsample.0.", block + "downsample.1.") if i < 0 else
                        (block + "body.%d." % (3 * i), block + "body.%d." % (3 * i + 1)))
        else:
            # creation order inside a stage: unit 1 body, its projection, then the other units
            first = per_unit + (1 if s in projected else 0)
            n = per_unit if i < 0 else (i if u == 1 else first + (u - 2) * per_unit + i)
            conv = "features.%s_stage%d_conv%d_" % (prefix, s, n)
            bn = "features.%s_stage%d_batchnorm%d_" % (prefix, s, n)
        table[name], table[name + "_bn"] = conv, bn
    return table


def _ssd_extra_map(base, num_base_layers, num_extras):
    table = {}
    for i in range(num_extras):
        k = num_base_layers + i
        if base == "vgg16":
            table["feat%d_conv_1x1" % k] = "features.extras.%d.0." % i
            table["feat%d_conv_3x3" % k] = "features.extras.%d.2." % i
        else:
            for ours, theirs in (("conv_1x1", "expand_trans_conv%d_"), ("conv_3x3", "expand_conv%d_")):
                table["feat%d_%s" % (k, ours)] = "features." + theirs % i
            for ours, theirs in (("conv_1x1_bn", "expand_trans_bn%d_"), ("conv_3x3_bn", "expand_bn%d_")):
                table["feat%d_%s" % (k, ours)] = "features." + theirs % i
    return table


def _load(path):
    params = mx.nd.load(path)
    if not isinstance(params, dict):
        raise ValueError("%s holds unnamed arrays; save GluonCV nets with net.save_parameters(path)" % path)
    return params


def _gather(sym, data_shape, table, source, path, fixed_gamma=(), skip=()):
    """Fill every parameter of ``sym`` from ``source`` through ``table`` (``skip``: filled by the caller)."""
    arg_shapes, _, aux_shapes = sym.infer_shape(data=data_shape)
    shapes = dict(zip(sym.list_arguments(), arg_shapes))
    shapes.update(zip(sym.list_auxiliary_states(), aux_shapes))
    aux_names = set(sym.list_auxiliary_states())
    arg_params, aux_params, missing = {}, {}, []
    for name, shape in shapes.items():
        layer, suffix = None, None
        for sfx in _SUFFIXES:
            if name.endswith("_" + sfx) and name[:-len(sfx) - 1] in table:
                layer, suffix = name[:-len(sfx) - 1], sfx
        if layer is None:
            if name not in skip and name not in ("data", "label"):
                missing.append("%s (no GluonCV counterpart)" % name)
            continue
        if layer in fixed_gamma and suffix == "gamma":
            value = mx.nd.ones(shape)
        else:
            keys = [table[layer] + sfx for sfx in _SUFFIXES[suffix] if table[layer] + sfx in source]
            if not keys:
                missing.append("%s <- %s%s" % (name, table[layer], _SUFFIXES[suffix][0]))
                continue
            key = keys[0]
            value = source[key]
            if value.shape != tuple(shape):
                raise ValueError("%s: %s has shape %s but ssdkit's %s needs %s (wrong network or "
                                 "input size?)" % (path, key, value.shape, name, tuple(shape)))
        (aux_params if name in aux_names else arg_params)[name] = value.copy()
    if missing:
        raise ValueError("%s lacks %d parameters ssdkit needs, e.g. %s. Is it a GluonCV %s file saved "
                         "with save_parameters?" % (path, len(missing), "; ".join(missing[:5]),
                                                    "SSD" if "feat0_cls_pred" in table else "ImageNet"))
    return arg_params, aux_params


def _fold_vgg_input_scale(arg_params, source):
    scale = source.get("features.init_scale")
    if scale is None:
        scale = mx.nd.array(np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1) * 255)
    arg_params["conv1_1_weight"] = arg_params["conv1_1_weight"] * scale.reshape((1, 3, 1, 1))


def import_imagenet(path, network):
    """Map a GluonCV ImageNet ``.params`` file onto an ssdkit base network.

    Parameters
    ----------
    path : str, file written by ``net.save_parameters`` (e.g. GluonCV's ``resnet50_v1-*.params``)
    network : str, a key of :data:`IMAGENET` or of :data:`PRESET_IMAGENET` (``'resnet50'``)

    Returns
    -------
    (arg_params, aux_params) : dicts of NDArray named as in ssdkit's base network (and therefore
    as in every SSD graph built on it); the classifier is dropped.
    """
    network = PRESET_IMAGENET.get(network, network)
    if network not in IMAGENET:
        raise ValueError("no ImageNet mapping for %r; known: %s" % (network, ", ".join(sorted(IMAGENET))))
    source = _load(path)
    base, depth = IMAGENET[network]
    if base == "vgg16_reduced" and not any(k.startswith("features.") for k in source):
        source = {"features." + k: v for k, v in source.items()}
    body = symbol_builder.BASE_NETWORKS[base](1000, num_layers=depth)
    arg_params, aux_params = _gather(body, (1, 3, 224, 224), layer_map(network, "imagenet"), source, path)
    if base == "vgg16_reduced":
        _fold_vgg_input_scale(arg_params, source)
    return arg_params, aux_params


def import_ssd(path, name, fused_heads=False):
    """Map a GluonCV SSD zoo ``.params`` file onto ``get_symbol(**zoo_config(name, fused_heads))``.

    Returns
    -------
    (arg_params, aux_params) : dicts of NDArray covering every parameter of that graph.
    """
    config = zoo_config(name)
    base, size = ZOO[name][0], ZOO[name][1]
    source = _load(path)
    if base == "vgg16":
        table = layer_map("vgg16_atrous", "ssd")
    else:
        pattern = re.compile(r"^features\.([a-z]+\d+)_conv0_weight$")
        prefixes = [m.group(1) for m in map(pattern.match, source) if m]
        if len(prefixes) != 1:
            raise ValueError("%s: cannot find the base-network prefix (a features.<prefix>_conv0_weight "
                             "key); is it a GluonCV %s file?" % (path, name))
        table = layer_map("resnet50_v1" if base == "resnet50" else "mobilenet1.0", "ssd", prefixes[0])
    num_base = sum(1 for layer in config["from_layers"] if layer)
    extras = _ssd_extra_map(base, num_base, len(config["from_layers"]) - num_base)
    table.update(extras)
    for k in range(len(config["from_layers"])):
        table["feat%d_cls_pred" % k] = "class_predictors.%d.predictor." % k
        table["feat%d_loc_pred" % k] = "box_predictors.%d.predictor." % k
    fixed_gamma = () if base == "vgg16" else tuple(layer for layer in extras if layer.endswith("_bn"))
    sym = symbol_builder.get_symbol(**config)
    arg_params, aux_params = _gather(sym, (1, 3, size, size), table, source, path, fixed_gamma,
                                     skip=("feat0_scale",))
    if base == "vgg16":
        arg_params["feat0_scale"] = source["features.norm4.scale"].copy()
        _fold_vgg_input_scale(arg_params, source)
    if fused_heads:
        arg_params = fuse_head_params(arg_params)
    return arg_params, aux_params


def fuse_head_params(arg_params):
    """Separate-head parameters -> those of the same graph built with ``fused_heads=True``.

    Every pair ``feat{k}_cls_pred_{weight,bias}`` / ``feat{k}_loc_pred_{weight,bias}`` becomes one
    ``feat{k}_pred_{weight,bias}``: class rows, then box rows, then zero rows up to
    :data:`ssdkit.symbol.common.FUSED_HEAD_ALIGN`, the channel order of the fused convolution, so
    the fused graph computes the same logits and offsets. Other parameters are passed through.

    Parameters
    ----------
    arg_params : dict of str -> NDArray, e.g. from :func:`import_ssd` or a separate-heads checkpoint

    Returns
    -------
    dict of str -> NDArray, a new dict (the input is not modified)
    """
    out = dict(arg_params)
    pattern = re.compile(r"^feat(\d+)_cls_pred_weight$")
    layers = sorted({m.group(1) for m in map(pattern.match, arg_params) if m}, key=int)
    for k in layers:
        names = ["feat%s_%s_pred_%s" % (k, head, part)
                 for head in ("cls", "loc") for part in ("weight", "bias")]
        missing = [n for n in names if n not in arg_params]
        if missing:
            raise ValueError("cannot fuse the heads of layer %s: %s missing" % (k, ", ".join(missing)))
        cls_w, cls_b, loc_w, loc_b = (out.pop(n) for n in names)
        rows = cls_w.shape[0] + loc_w.shape[0]
        pad = -rows % FUSED_HEAD_ALIGN
        weight = [cls_w, loc_w] + ([mx.nd.zeros((pad,) + cls_w.shape[1:], dtype=cls_w.dtype)] if pad else [])
        bias = [cls_b, loc_b] + ([mx.nd.zeros((pad,), dtype=cls_b.dtype)] if pad else [])
        out["feat%s_pred_weight" % k] = mx.nd.concat(*weight, dim=0)
        out["feat%s_pred_bias" % k] = mx.nd.concat(*bias, dim=0)
    return out
