"""Import GluonCV's Faster and Mask R-CNN FPN zoo parameter files into ssdkit's FPN graph (nothing is downloaded).

:func:`import_faster_rcnn_fpn` maps a file saved by ``net.save_parameters`` of a GluonCV 0.10
``faster_rcnn_fpn_resnet50_v1b_coco`` / ``faster_rcnn_fpn_resnet101_v1d_coco`` /
``mask_rcnn_fpn_resnet50_v1b_coco`` / ``mask_rcnn_fpn_resnet101_v1d_coco`` net (:data:`ZOO`) onto the
ssdkit graph of :func:`zoo_fpn_config` (``ssdkit.symbol.fpn.get_symbol``), returning ``(arg_params,
aux_params)`` for ``Module.set_params``.

Name mapping (GluonCV structural names of ``save_parameters``):

* backbone ``features.resnetv1{b,d}_*``: the stem (``conv0`` / v1d ``conv0..2`` + ``batchnorm0..2``),
  ``layers{s}_conv{k}`` / ``layers{s}_batchnorm{k}`` numbered in creation order within a stage (3 per
  bottleneck unit) -> ``stage{s}_unit{u}_conv{j}``, ``down{s}_conv0`` -> ``stage{s}_unit1_sc``;
* neck ``features.P{l}_conv_lat`` -> ``fpn_lateral{l}``, ``features.P{l}_conv1`` -> ``fpn_output{l}``,
  ``features.P6_conv1`` -> ``fpn_p6``;
* RPN ``rpn.rpn_head.conv1.0`` / ``score`` / ``loc`` -> ``rpn_conv`` / ``rpn_cls_logits`` / ``rpn_bbox_pred``;
* box head ``box_features.0`` / ``.2`` -> ``rcnn_fc6`` / ``rcnn_fc7``, ``class_predictor`` ->
  ``rcnn_cls_score``; ``box_predictor`` (4 C rows, no background) -> ``rcnn_bbox_pred`` (4 (C + 1) rows)
  with 4 zero rows for the background column, which ``RCNNDetection`` never reads;
* Mask R-CNN: the box head's ``box_features.0`` is an average pool (no parameters), so its dense layers are
  ``box_features.1`` / ``.3``; mask head ``mask.deconv.0/2/4/6`` (3x3 convolutions, ReLU between) ->
  ``mask_conv1..4``, ``mask.deconv.8`` (2x2 stride-2 transposed convolution) -> ``mask_deconv``,
  ``mask.mask`` (1x1, one channel per object class, no background) -> ``mask_predictor``.

The settings that make the graph compute what GluonCV computes are :data:`GLUONCV_CONVENTIONS` (each
one an :class:`~ssdkit.symbol.fpn_config.FPNConfig` field; README "Importing GluonCV's Faster R-CNN
FPN" lists them, ``tests/test_fpn_gluoncv_import.py`` checks features, proposals and detections), and for
the Mask R-CNN models also :data:`GLUONCV_MASK_CONVENTIONS` (``tests/test_mask_gluoncv_import.py`` checks
detections and masks).
"""
import mxnet as mx
import numpy as np

from ssdkit.symbol import resnet
from ssdkit.symbol.fpn_config import fpn_config

ZOO = {
    "faster_rcnn_fpn_resnet50_v1b_coco": ("fpn_resnet50", "v1b", 80),
    "faster_rcnn_fpn_resnet101_v1d_coco": ("fpn_resnet101", "v1d", 80),
    "mask_rcnn_fpn_resnet50_v1b_coco": ("fpn_resnet50", "v1b", 80),
    "mask_rcnn_fpn_resnet101_v1d_coco": ("fpn_resnet101", "v1d", 80),
}
"""GluonCV zoo name -> (ssdkit FPN network, ResNet variant, object classes)."""

GLUONCV_CONVENTIONS = dict(
    fpn_p6="conv", rpn_channels=1024, anchor_style="legacy", rpn_merge_levels=True,
    roi_level_offset=1.0, roi_aligned=False, rcnn_clip_boxes=False,
    rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
    rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=1000, rpn_nms_threshold=0.7, rpn_min_size=0.0,
    rcnn_batch_rois=512, rcnn_fg_fraction=0.25, rcnn_fg_iou=0.5, rcnn_stds=(0.1, 0.1, 0.2, 0.2),
    roi_size=7, roi_sample_ratio=2, frozen_bn=True,
    test_score_threshold=0.01, test_nms_threshold=0.5, test_max_detections=100,
)
"""FPNConfig values of GluonCV's ``faster_rcnn_fpn_*_coco`` (besides ``backbone_variant``). ``rpn_min_size``
0 is GluonCV's 1 under its "+1" width (``x1 - x0 + 1 >= 1`` always holds); ``test_max_detections`` 100 is
COCO's limit (GluonCV returns every kept box, ``C * 1000`` rows, class-major)."""

GLUONCV_MASK_CONVENTIONS = dict(
    roi_size=14, rcnn_avg_pool=True,
    mask=True, mask_roi_size=14, mask_size=28, mask_channels=256, mask_convs=4,
)
"""FPNConfig values of GluonCV's ``mask_rcnn_fpn_*_coco`` on top of :data:`GLUONCV_CONVENTIONS`: the box head
pools RoIs at 14 x 14 and averages 3 x 3 windows with stride 2 (padding 1, zeros counted) down to 7 x 7
before its first dense layer; the mask branch pools the detections (the boxes as output, unclipped, pixels)
at 14 x 14 with the box branch's RoIAlign conventions, 4 convolutions, a 2x deconvolution to 28 x 28."""

GLUONCV_SIZE = (800, 1333)
"""GluonCV's ``short``, ``max_size`` for these models."""


def _check_zoo_name(name):
    if name not in ZOO:
        raise ValueError("no GluonCV FPN zoo model %r; known: %s" % (name, ", ".join(sorted(ZOO))))


def is_mask_model(name):
    """Whether GluonCV zoo model ``name`` (a key of :data:`ZOO`) is a Mask R-CNN."""
    _check_zoo_name(name)
    return name.startswith("mask_rcnn_")


def zoo_fpn_config(name, short=GLUONCV_SIZE[0], long=GLUONCV_SIZE[1], **overrides):
    """Keyword arguments of ``ssdkit.symbol.fpn.get_symbol`` for GluonCV zoo model ``name``.

    Parameters
    ----------
    name : str, a key of :data:`ZOO`
    short, long : int, the resize (``image_shape`` is :func:`~ssdkit.symbol.fpn_config.batch_shape` of it)
    overrides : FPNConfig fields replacing :data:`GLUONCV_CONVENTIONS` (and for a Mask R-CNN
        :data:`GLUONCV_MASK_CONVENTIONS`) values (e.g. ``test_nms_threshold``)

    Returns
    -------
    dict with ``network``, ``image_shape`` and every FPNConfig field (``num_classes`` is ``ZOO[name][2]``).
    """
    _check_zoo_name(name)
    network, variant, _ = ZOO[name]
    settings = dict(GLUONCV_CONVENTIONS, backbone_variant=variant)
    if is_mask_model(name):
        settings.update(GLUONCV_MASK_CONVENTIONS)
    settings.update(overrides)
    return fpn_config(network, short, long, **settings)


def _backbone_map(depth, variant):
    """ssdkit layer -> GluonCV prefix (without ``features.``) of the ResNet v1b / v1d backbone."""
    root = "resnetv1%s_" % variant[-1]
    table = {}
    if variant == "v1d":
        for j in range(3):
            table["conv0_%d" % (j + 1)] = root + "conv%d" % j
            table["conv0_%d_bn" % (j + 1)] = root + "batchnorm%d" % j
    else:
        table["conv0"] = root + "conv0"
        table["conv0_bn"] = root + "batchnorm0"
    _, units, _ = resnet.SPECS[depth]
    for s, n in enumerate(units, start=1):
        for u in range(1, n + 1):
            for j in range(1, 4):
                k = 3 * (u - 1) + (j - 1)
                table["stage%d_unit%d_conv%d" % (s, u, j)] = root + "layers%d_conv%d" % (s, k)
                table["stage%d_unit%d_conv%d_bn" % (s, u, j)] = root + "layers%d_batchnorm%d" % (s, k)
        table["stage%d_unit1_sc" % s] = root + "down%d_conv0" % s
        table["stage%d_unit1_sc_bn" % s] = root + "down%d_batchnorm0" % s
    return {k: "features." + v for k, v in table.items()}


def layer_map(name):
    """ssdkit layer -> GluonCV parameter prefix (``<prefix>.weight`` / ``<prefix>_weight``) for zoo ``name``."""
    _check_zoo_name(name)
    network, variant, _ = ZOO[name]
    table = _backbone_map(int(network.rsplit("resnet", 1)[1]), variant)
    for level in (2, 3, 4, 5):
        table["fpn_lateral%d" % level] = "features.P%d_conv_lat" % level
        table["fpn_output%d" % level] = "features.P%d_conv1" % level
    first = 1 if is_mask_model(name) else 0     # Mask R-CNN: box_features.0 is the average pool
    table.update({"fpn_p6": "features.P6_conv1", "rpn_conv": "rpn.rpn_head.conv1.0",
                  "rpn_cls_logits": "rpn.rpn_head.score", "rpn_bbox_pred": "rpn.rpn_head.loc",
                  "rcnn_fc6": "box_features.%d" % first, "rcnn_fc7": "box_features.%d" % (first + 2),
                  "rcnn_cls_score": "class_predictor", "rcnn_bbox_pred": "box_predictor"})
    if is_mask_model(name):
        convs = GLUONCV_MASK_CONVENTIONS["mask_convs"]
        table.update({"mask_conv%d" % (k + 1): "mask.deconv.%d" % (2 * k) for k in range(convs)})
        table.update({"mask_deconv": "mask.deconv.%d" % (2 * convs), "mask_predictor": "mask.mask"})
    return table


_SUFFIXES = {"weight": "weight", "bias": "bias", "gamma": "gamma", "beta": "beta",
             "moving_mean": "running_mean", "moving_var": "running_var"}
"""ssdkit parameter suffix -> GluonCV's (Gluon BatchNorm says running_*)."""


def _source_key(source, prefix, suffix):
    for sep in (".", "_"):
        key = prefix + sep + _SUFFIXES[suffix]
        if key in source:
            return key
    return None


def import_faster_rcnn_fpn(path, name):
    """Parameters of GluonCV zoo model ``name`` saved at ``path``, for ssdkit's FPN graph.

    Parameters
    ----------
    path : str, a GluonCV ``.params`` file (``net.save_parameters``) of ``name``
    name : str, a key of :data:`ZOO`

    Returns
    -------
    (arg_params, aux_params) : dicts of NDArrays named as the graph of ``zoo_fpn_config(name)``; every
    parameter of that graph is present. A missing or mis-shaped GluonCV parameter raises ValueError
    naming it and the file.
    """
    from ssdkit.symbol.fpn import get_symbol  # the graph module loads the operator library

    _check_zoo_name(name)
    try:
        source = mx.nd.load(path)
    except Exception as exc:  # mxnet raises MXNetError for a missing or damaged file
        raise ValueError("cannot read GluonCV parameters %s: %s" % (path, exc)) from None
    num_classes = ZOO[name][2]
    sym = get_symbol(num_classes=num_classes, **zoo_fpn_config(name, 256, 256))
    arg_shapes, _, aux_shapes = sym.infer_shape(data=(1, 3, 256, 256), im_info=(1, 3))
    shapes = dict(zip(sym.list_arguments(), arg_shapes))
    shapes.update(zip(sym.list_auxiliary_states(), aux_shapes))
    table = layer_map(name)
    arg_params, aux_params = {}, {}
    for param in sym.list_arguments() + sym.list_auxiliary_states():
        if param in ("data", "im_info"):
            continue
        layer, suffix = param.rsplit("_", 1)
        if suffix in ("mean", "var"):
            layer, suffix = param.rsplit("_", 2)[0], "moving_" + suffix
        key = _source_key(source, table.get(layer, "?"), suffix) if layer in table else None
        if key is None:
            raise ValueError("%s has no parameter for ssdkit's %s (GluonCV %s.%s): is it a %s file?"
                             % (path, param, table.get(layer, "?"), _SUFFIXES.get(suffix, suffix), name))
        value = source[key].asnumpy()
        if layer == "rcnn_bbox_pred":  # add the background column's 4 rows (or biases) in front
            value = np.concatenate([np.zeros((4,) + value.shape[1:], value.dtype), value])
        if value.shape != tuple(shapes[param]):
            raise ValueError("%s: %s has shape %s, ssdkit's %s needs %s: is it a %s file?"
                             % (path, key, value.shape, param, tuple(shapes[param]), name))
        target = aux_params if param in sym.list_auxiliary_states() else arg_params
        target[param] = mx.nd.array(value, dtype=value.dtype)
    return arg_params, aux_params


def zoo_class_names(name):
    """Class names of GluonCV FPN zoo model ``name`` in its class-id order (COCO: GluonCV's
    ``COCODetection.CLASSES``, COCO category-id order)."""
    _check_zoo_name(name)
    try:
        from gluoncv.data import COCODetection
    except ImportError as err:
        raise ImportError("the COCO class names of GluonCV zoo models come from GluonCV (%s); install it "
                          "with: pip install 'ssdkit[gluoncv]'" % err) from None
    return tuple(COCODetection.CLASSES)
