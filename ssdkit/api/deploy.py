"""Freeze a trained detector into a deploy model: the detection graph without loss layers.

Writes ``OUTPUT-symbol.json``, ``OUTPUT-0000.params`` (only the parameters the graph uses) and
``OUTPUT-meta.json``. With ``portable=True`` the graph uses MXNet's built-in contrib operators
(:mod:`ssdkit.portable`) so plain MXNet runs it without ssdkit.

Loading a deploy model without ssdkit's helpers::

    sym, arg, aux = mx.model.load_checkpoint("OUTPUT", 0)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (1, 3, S, S))], for_training=False)
    mod.set_params(arg, aux)
    # or: net = mx.gluon.SymbolBlock.imports("OUTPUT-symbol.json", ["data"], "OUTPUT-0000.params")
    # (import ssdkit.ops first unless the model is portable)

FPN models (``fpn_*`` networks) have two inputs, ``data (B, 3, H, W)`` with ``(H, W)`` = meta
``image_shape`` and ``im_info (B, 3)``: ``data_names=["data", "im_info"]``; ``ssdkit.Detector`` does the
resize and padding. They always need ssdkit (``portable=True`` raises ValueError). A mask model
(``fpn.mask = true``) keeps both outputs, ``[detection (B, K, 6), masks (B, K, S, S)]``
(:func:`ssdkit.masks.paste_detections` pastes the masks into the image).

With ``int8=Calibration(...)`` (:mod:`ssdkit.api.quantize`) the graph is quantized to INT8 with
MXNet's oneDNN backend, calibrated on the user's images; the meta records ``int8``, ``calib_mode`` and
``calib_images``, and the model loads like any other (SSD networks only, not portable).

With ``format="onnx"`` the deploy graph is written as one file ``OUTPUT.onnx`` instead
(:mod:`ssdkit.api.onnx_export`: anchors folded, decoding and NMS as ONNX operators, the meta inside),
run by onnxruntime (``evaluate.py --onnx``, ``demo.py --onnx``, ``ssdkit.Detector(path, onnx=True)``);
SSD networks only, not with ``portable`` or ``int8``.
"""
import dataclasses
import os

from ssdkit.api.family import family_of
from ssdkit.api.inference import InferenceOverrides
from ssdkit.api.model_files import model_meta, normalized_meta, read_meta, resolve_epoch
from ssdkit.api.onnx_export import check_onnx
from ssdkit.api.param_check import check_params
from ssdkit.api.quantize import check_int8, quantize_graph, quantized_layers
from ssdkit.engine import atomic
from ssdkit.engine.checkpoint import load_params, save_params
from ssdkit.errors import MissingFileError, user_input
from ssdkit.portable import to_portable


FORMATS = ("mxnet", "onnx")
"""Deploy file formats: MXNet's symbol + params + meta, or one ONNX file."""


def deploy_model(prefix, output, *, epoch=None, portable=False, max_detections=None, inference=None, int8=None,
                 format="mxnet"):
    """Write the deploy model of training run ``prefix`` to ``output``.

    Parameters
    ----------
    prefix : str, training prefix
    output : str, deploy prefix
    epoch : int, ``"best"`` or None (best, else last)
    portable : bool, use MXNet's contrib operators (all N detection rows; see ssdkit.portable);
        SSD networks only (FPN raises ValueError: its operators have no contrib equivalents)
    max_detections : int or None, detection rows per image of the ssdkit graph (None: 100; SSD -1: one
        per anchor; FPN -1: the trained ``fpn.test_max_detections``); a portable graph always has one
        row per anchor, so giving it with ``portable`` is refused
    inference : :class:`~ssdkit.api.inference.InferenceOverrides` or None, NMS threshold, top-k, score
        threshold (and detection rows) of the deploy graph instead of the trained ones; written to
        the deploy meta
    int8 : :class:`~ssdkit.api.quantize.Calibration` or None, quantize the graph to INT8, calibrated
        on its images (SSD networks only, not with ``portable``)
    format : ``"mxnet"`` or ``"onnx"`` (write ``output + ".onnx"`` instead, :mod:`ssdkit.api.onnx_export`;
        SSD networks only, not with ``portable`` or ``int8``)

    Returns
    -------
    dict with the written paths, the number of parameters and, with ``int8``, ``calib_images`` (images
    the calibration ran) and ``quantized_layers`` (int8 convolutions); with ``format="onnx"``: ``onnx``
    (the file), ``num_params``, ``num_anchors`` and ``opset``.

    Raises
    ------
    ssdkit.errors.UserError (nothing written): a missing or unreadable file, ``portable`` for FPN,
    ``int8`` for FPN or with ``portable``, ``format="onnx"`` for FPN or with ``portable`` / ``int8``,
    fewer calibration images than asked for, or
    parameters that do not fit the meta's graph (:class:`~ssdkit.errors.ParameterMismatchError`, e.g. a
    checkpoint trained with another class count than the meta's class list).
    """
    meta = read_meta(prefix)
    family = family_of(meta)
    meta, inference = _checked_request(family, meta, inference, max_detections, portable=portable, int8=int8,
                                       format=format)
    symbol = family.inference_symbol(meta, max_detections=-1 if portable else None)
    if portable:
        symbol = to_portable(symbol)
    params = resolve_epoch(prefix, epoch)
    with user_input():
        arg, aux = load_params(params)
    check_params(symbol, arg, aux, family.inference_shapes(meta, 1), source=params, meta=meta,
                 meta_source=prefix + "-meta.json")
    return _write_deploy(output, symbol, arg, aux, meta, portable=portable,
                         max_detections=-1 if portable else inference.max_detections, int8=int8, format=format)


def deploy_overrides(inference, max_detections, *, portable):
    """The :class:`~ssdkit.api.inference.InferenceOverrides` of a deploy graph: ``inference`` with
    ``max_detections`` (default 100 rows, -1 for portable graphs). ValueError if both give different
    rows, or rows are given for a portable graph (contrib's operator returns one row per anchor)."""
    inference = inference or InferenceOverrides()
    if max_detections is not None and inference.max_detections not in (None, max_detections):
        raise ValueError("max_detections=%r and inference.max_detections=%r differ; give one"
                         % (max_detections, inference.max_detections))
    inference = inference.merged(max_detections=max_detections)
    if portable:
        if inference.max_detections is not None:
            raise ValueError("a portable deploy graph (MXNet's contrib MultiBoxDetection) has one row per anchor: "
                             "max_detections %d cannot be honoured; filter rows with cls_id >= 0, or deploy "
                             "without portable" % inference.max_detections)
        return dataclasses.replace(inference, max_detections=-1)
    return inference.merged(max_detections=100)


def deploy_gluoncv_zoo(params_path, name, output, *, fused_heads=True, portable=False, max_detections=None,
                       inference=None, int8=None, format="mxnet"):
    """Write a deploy model from a GluonCV SSD zoo file (:data:`ssdkit.weights.ZOO`, e.g.
    ``ssd_512_resnet50_v1_voc``) on disk: ssdkit's graph of that network with its weights, usable by
    ``evaluate.py --deploy``, ``demo.py --deploy`` and ``ssdkit.Detector(..., deploy=True)``.

    Parameters
    ----------
    params_path : str, the GluonCV ``.params`` file (``net.save_parameters`` format)
    name : str, its zoo name
    output : str, deploy prefix to write
    fused_heads : bool, one convolution per layer for the class and box predictors (the same
        function, faster on the CPU; ``ssdkit.weights.fuse_head_params``)
    portable, max_detections, inference, int8, format : as in :func:`deploy_model`; NMS 0.45 and top-k 400
        (GluonCV's) unless ``inference`` sets them

    Returns
    -------
    dict as :func:`deploy_model`.
    """
    from ssdkit import weights_fpn

    if name in weights_fpn.ZOO:
        return deploy_gluoncv_fpn(params_path, name, output, portable=portable, max_detections=max_detections,
                                  inference=inference, int8=int8, format=format)
    from ssdkit.config.schema import Config, ModelConfig
    from ssdkit.config.ssd_layout import SSDLayout
    from ssdkit.symbol import symbol_builder
    from ssdkit.weights import ZOO, import_ssd, zoo_config, zoo_class_names

    if not os.path.isfile(params_path):
        raise MissingFileError("GluonCV parameter file %s not found" % params_path)
    with user_input():      # the zoo name and the file are the user's input
        config = zoo_config(name, fused_heads=fused_heads)
        arg, aux = import_ssd(params_path, name, fused_heads=fused_heads)
    base, size = ZOO[name][0], ZOO[name][1]
    # the meta of an ssdkit model of the zoo net's preset base network (ImageNet normalisation is
    # the config default, GluonCV's too)
    class_names = zoo_class_names(name)
    model = ModelConfig(network={"vgg16": "vgg16_reduced"}.get(base, base), data_shape=size,
                        nms_thresh=config["nms_thresh"], nms_topk=config["nms_topk"], class_names=class_names)
    # the layout is the zoo net's own (GluonCV's anchor sizes and steps), not the preset's
    meta = dict(model_meta(Config(model=model), class_names), gluoncv_zoo=name,
                layout=dataclasses.asdict(SSDLayout.from_builder_kwargs(config)))
    family = family_of(meta)
    meta, inference = _checked_request(family, meta, inference, max_detections, portable=portable, int8=int8,
                                       format=format)
    symbol = symbol_builder.get_symbol(**config)
    symbol = family.set_inference(symbol, inference)
    if portable:
        symbol = to_portable(symbol)
    # the imported arrays may hold more than the graph uses (dropped); the zoo meta does not record the
    # head layout, so no class-count diagnosis from it
    check_params(symbol, arg, aux, family_of(meta).inference_shapes(meta, 1), source=params_path,
                 allow_extra=True)
    return _write_deploy(output, symbol, arg, aux, meta, portable=portable,
                         max_detections=inference.max_detections, int8=int8, format=format)


def deploy_gluoncv_fpn(params_path, name, output, *, resize=None, portable=False, max_detections=None,
                       inference=None, int8=None, format="mxnet"):
    """Write a deploy model from a GluonCV Faster or Mask R-CNN FPN zoo file (:data:`ssdkit.weights_fpn.ZOO`, e.g.
    ``faster_rcnn_fpn_resnet50_v1b_coco``, ``mask_rcnn_fpn_resnet50_v1b_coco``): ssdkit's FPN graph with GluonCV's
    conventions (:data:`ssdkit.weights_fpn.GLUONCV_CONVENTIONS`, for Mask R-CNN also
    :data:`~ssdkit.weights_fpn.GLUONCV_MASK_CONVENTIONS`: a mask model) and its weights, for ``evaluate.py --deploy``,
    ``demo.py --deploy`` and ``ssdkit.Detector``.

    Parameters
    ----------
    params_path, name, output : as :func:`deploy_gluoncv_zoo`
    resize : (short, long) or None, the aspect-preserving resize (None: GluonCV's 800, 1333); the graph's
        padded input is :func:`ssdkit.symbol.fpn_config.batch_shape` of it
    portable, max_detections, inference, int8, format : as :func:`deploy_model` (FPN: no portable, int8 or onnx);
        NMS 0.5 and score threshold 0.01 (GluonCV's) unless ``inference`` sets them

    Returns
    -------
    dict as :func:`deploy_model`.
    """
    from ssdkit.config.schema import Config, ModelConfig
    from ssdkit.symbol.fpn_config import fpn_settings
    from ssdkit.weights_fpn import GLUONCV_SIZE, ZOO, import_faster_rcnn_fpn, zoo_fpn_config, zoo_class_names

    if not os.path.isfile(params_path):
        raise MissingFileError("GluonCV parameter file %s not found" % params_path)
    short, long = resize or GLUONCV_SIZE
    with user_input():      # the zoo name and the resize are the user's input
        config = zoo_fpn_config(name, short, long)
        class_names = zoo_class_names(name)
        model = ModelConfig(network=ZOO[name][0], resize_short=short, resize_long=long, class_names=class_names)
        settings = fpn_settings(**{k: v for k, v in config.items() if k not in ("network", "image_shape")})
    meta = model_meta(Config(model=model, fpn=settings), class_names)
    family = family_of(meta)
    meta, inference = _checked_request(family, meta, inference, max_detections, portable=portable, int8=int8,
                                       format=format)
    with user_input():      # the file is the user's input
        arg, aux = import_faster_rcnn_fpn(params_path, name)
    symbol = family.inference_symbol(meta)
    check_params(symbol, arg, aux, family.inference_shapes(meta, 1), source=params_path)
    return _write_deploy(output, symbol, arg, aux, meta, portable=portable,
                         max_detections=inference.max_detections, int8=int8)


def _checked_request(family, meta, inference, max_detections, *, portable, int8, format="mxnet"):
    """Refuse what cannot be deployed (``portable``, ``int8`` or ONNX where the family cannot give it, an
    override a portable graph cannot honour) before anything is written; return the meta with the
    inference overrides applied, and the overrides."""
    with user_input():
        if format not in FORMATS:
            raise ValueError("format must be one of %s, got %r" % (", ".join(FORMATS), format))
        if format == "onnx":
            check_onnx(meta, portable=portable, int8=int8 is not None)
        if portable:
            family.check_portable(meta)
        if int8 is not None:
            check_int8(meta, portable=portable)
        inference = deploy_overrides(inference, max_detections, portable=portable)
        return family.with_inference(meta, inference), inference


def _write_deploy(output, symbol, arg, aux, meta, *, portable, max_detections, int8=None, format="mxnet"):
    """Write ``output``'s symbol, the parameters ``symbol`` uses and the meta file (atomically); with
    ``int8`` (a :class:`~ssdkit.api.quantize.Calibration`) the graph quantized first; with
    ``format="onnx"`` the file ``output + ".onnx"`` instead. The callers have checked that the
    parameters fit ``symbol`` (:func:`check_params`)."""
    if format == "onnx":
        from ssdkit.api.onnx_export import export_onnx

        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        meta = normalized_meta(dict(meta, portable=False, max_detections=max_detections))
        return export_onnx(symbol, arg, aux, meta, output + ".onnx")
    family = family_of(meta)
    quantized = {}
    if int8 is not None:
        with user_input():      # the calibration images are the user's input
            symbol, arg, aux, images = quantize_graph(symbol, arg, aux, meta, int8)
        meta = dict(meta, int8=True, calib_mode=int8.mode, calib_images=images)
        quantized = {"calib_images": images, "quantized_layers": len(quantized_layers(symbol))}
    needed_arg = set(symbol.list_arguments()) - set(family.data_names)
    needed_aux = set(symbol.list_auxiliary_states())
    out_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(out_dir, exist_ok=True)
    atomic.write_text(output + "-symbol.json", symbol.tojson())
    save_params(output + "-0000.params", {k: arg[k] for k in needed_arg}, {k: aux[k] for k in needed_aux})
    atomic.write_json(output + "-meta.json", normalized_meta(dict(meta, portable=bool(portable),
                                                                  max_detections=max_detections)))
    return {"symbol": output + "-symbol.json", "params": output + "-0000.params",
            "meta": output + "-meta.json", "num_params": len(needed_arg) + len(needed_aux), **quantized}
