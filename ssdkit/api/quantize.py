"""Post-training INT8 quantization of an SSD deploy graph with MXNet's oneDNN (MKLDNN) backend.

The convolutions (fused with their BatchNorm and ReLU by the oneDNN subgraph pass) run in int8; the
layers that must stay fp32 are excluded: ssdkit's detection operators (:data:`FP32_OPERATORS`: anchor
generation, decoding and NMS have no int8 kernels and need exact coordinates), and, by default, the
prediction heads (the ``feat*_pred`` / ``feat*_cls_pred`` / ``feat*_loc_pred`` convolutions, whose
outputs are the box offsets and class logits). Activation ranges are calibrated on the user's images,
read and normalised by the family's own inference transform (:meth:`ssdkit.api.ssd.SSDFamily.preprocess`,
the one :class:`ssdkit.Detector` uses), so calibration sees exactly what inference sees.

    >>> from ssdkit.api.deploy import deploy_model
    >>> from ssdkit.api.quantize import Calibration
    >>> deploy_model("output/ssd", "output/deploy/ssd_int8",
    ...              int8=Calibration(data="data/synthetic/VOCdevkit/VOC2007/JPEGImages", images=64))

The graph written is an ordinary MXNet symbol (``_sg_mkldnn_conv`` nodes with ``quantized=true`` and
calibrated ranges as attributes, ``_contrib_quantize_v2`` / ``_contrib_dequantize`` at the int8/fp32
borders) with the fp32 parameter names; the oneDNN kernels quantize the weights when the graph is bound.
It runs on x86 CPUs only (MXNet's CPU build with oneDNN).
"""
import json
from dataclasses import dataclass

import mxnet as mx
import numpy as np

from ssdkit.api.data import meta_normalization
from ssdkit.api.family import family_of
from ssdkit.dataset.image import load_image_rgb
from ssdkit.detector import list_images

CALIB_MODES = ("naive", "entropy")
"""``naive``: each layer's int8 range is the min/max seen on the calibration images; ``entropy``: the
range that minimises the KL divergence between the fp32 and int8 output histograms (clips outliers)."""

FP32_OPERATORS = ("MultiBoxPrior", "MultiBoxDetection", "MultiBoxTarget", "_contrib_MultiBoxPrior",
                  "_contrib_MultiBoxDetection", "RCNNDetection", "Proposal", "MultiLevelROIAlign")
"""Operators that stay fp32 (ssdkit's detection operators and contrib's equivalents)."""

HEAD_SUFFIXES = ("_pred",)
"""Convolutions whose name ends so are prediction heads (``feat{k}_pred`` fused, ``feat{k}_cls_pred`` and
``feat{k}_loc_pred`` separate; :func:`ssdkit.symbol.common.multibox_layer`)."""

_BACKEND = "MKLDNN_QUANTIZE"
_MAX_BATCH = 8


@dataclass(frozen=True)
class Calibration:
    """How to quantize a deploy graph to INT8.

    Attributes
    ----------
    data : str, an image file or a folder of images (``.jpg``, ``.png``, ...; not searched recursively)
    images : int >= 1, calibration images: this many are drawn (without replacement, by ``seed``) from
        ``data``; more than ``data`` holds is an error
    mode : ``"naive"`` (default) or ``"entropy"`` (:data:`CALIB_MODES`); on the main job's lite model
        naive kept VOC07 within 0.002 of fp32, entropy lost 0.011 (bench/README_inference.md)
    exclude_heads : bool, keep the prediction-head convolutions in fp32
    seed : int, which images are drawn
    """

    data: str
    images: int
    mode: str = "naive"
    exclude_heads: bool = True
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.images, int) or isinstance(self.images, bool) or self.images < 1:
            raise ValueError("the number of calibration images must be an integer >= 1, got %r" % (self.images,))
        if self.mode not in CALIB_MODES:
            raise ValueError("calibration mode must be one of %s, got %r" % (", ".join(CALIB_MODES), self.mode))
        if not self.data:
            raise ValueError("no calibration data: give a folder of images (--calib-data)")


def calibration_paths(calibration):
    """The image paths :class:`Calibration` ``calibration`` uses: ``images`` of the files in ``data``.

    Returns
    -------
    list of str, ``calibration.images`` paths in sorted order

    Raises
    ------
    MissingFileError : ``data`` is neither an image file nor a folder
    ValueError : ``data`` holds fewer images than asked for
    """
    paths = list_images(calibration.data)
    if len(paths) < calibration.images:
        raise ValueError("%d calibration images asked for, but %s holds %d; give --calib-images %d or "
                         "a folder with more images" % (calibration.images, calibration.data, len(paths),
                                                        len(paths)))
    chosen = np.random.default_rng(calibration.seed).choice(len(paths), calibration.images, replace=False)
    return [paths[i] for i in sorted(chosen)]


class CalibrationIter(mx.io.DataIter):
    """Batches ``data (b, 3, S, S)`` of calibration images, normalised by the model's inference transform.

    Parameters
    ----------
    paths : list of str, the images (each read once per pass)
    meta : dict, the model's meta file (input size, mean, std)
    family : the model's family (:func:`ssdkit.api.family.family_of`); its ``preprocess`` is applied

    The batch size is the largest divisor of ``len(paths)`` up to 8, so every batch is full and the
    statistics see each image exactly once, no padding. :attr:`images_read` counts images read.
    """

    def __init__(self, paths, meta, family):
        super().__init__(batch_size=max(d for d in range(1, min(_MAX_BATCH, len(paths)) + 1)
                                        if len(paths) % d == 0))
        self._paths = list(paths)
        self._meta = meta
        self._family = family
        self._normalization = meta_normalization(meta)
        (self._name, shape), = family.inference_shapes(meta, self.batch_size)
        self.provide_data = [mx.io.DataDesc(self._name, shape)]
        self.provide_label = []
        self._cursor = 0
        self.images_read = 0

    def reset(self):
        self._cursor = 0

    def next(self):
        if self._cursor >= len(self._paths):
            raise StopIteration
        chunk = self._paths[self._cursor:self._cursor + self.batch_size]
        self._cursor += len(chunk)
        inputs = [self._family.preprocess(self._meta, load_image_rgb(p), self._normalization) for p in chunk]
        self.images_read += len(chunk)
        batch, = self._family.batch_inputs(self._meta, inputs, self.batch_size)
        return mx.io.DataBatch(data=[mx.nd.array(batch)], pad=0)


def check_int8(meta, *, portable=False):
    """ValueError unless a model of ``meta`` can be quantized: SSD networks only (FPN's two-stage
    graph, RoI pooling and ``RCNNDetection`` have no int8 path here), and not as a portable graph."""
    if family_of(meta).name != "ssd":
        raise ValueError("--int8 quantizes SSD networks only; %s is a two-stage FPN network (its RoI "
                         "pooling and RCNNDetection stages are not quantized); deploy it without --int8"
                         % meta["network"])
    if portable:
        raise ValueError("--int8 and --portable do not go together: the int8 graph uses oneDNN's fused "
                         "operators, not MXNet's contrib detection graph; deploy one or the other")


def head_node_names(partitioned):
    """Names of the nodes of a oneDNN-partitioned graph that hold a prediction-head convolution
    (:data:`HEAD_SUFFIXES`), plain or fused into an ``_sg_mkldnn_conv`` subgraph."""
    names = []
    for node in json.loads(partitioned.tojson())["nodes"]:
        inner = [node] + [n for g in node.get("subgraphs", []) for n in g["nodes"]]
        if any(n["op"] == "Convolution" and n["name"].endswith(HEAD_SUFFIXES) for n in inner):
            names.append(node["name"])
    return names


def quantize_graph(symbol, arg_params, aux_params, meta, calibration):
    """The INT8 graph of an SSD detection graph, calibrated on ``calibration``'s images.

    Parameters
    ----------
    symbol : mx.sym.Symbol, the fp32 detection graph (input ``data``, output ``(B, K, 6)`` detections)
    arg_params, aux_params : dict name -> NDArray, its parameters
    meta : dict, the model's meta file (its family's transform normalises the calibration images)
    calibration : :class:`Calibration`

    Returns
    -------
    (qsymbol, qarg_params, qaux_params, images_read) : the quantized graph, its parameters (the fp32
    names; oneDNN quantizes weights at bind time) and the number of calibration images run through the
    fp32 graph (``calibration.images``)

    Raises
    ------
    ValueError : an FPN model (its two-stage graph is not quantized), too few images
    MissingFileError : ``calibration.data`` does not exist
    """
    check_int8(meta)
    family = family_of(meta)
    paths = calibration_paths(calibration)
    batches = CalibrationIter(paths, meta, family)
    partitioned = symbol.get_backend_symbol(_BACKEND)
    excluded = head_node_names(partitioned) if calibration.exclude_heads else []
    qsym, qarg, qaux = mx.contrib.quantization.quantize_model(
        partitioned, arg_params, aux_params, data_names=family.data_names, label_names=None, ctx=mx.cpu(),
        excluded_sym_names=excluded, excluded_op_names=list(FP32_OPERATORS), calib_mode=calibration.mode,
        calib_data=batches, num_calib_examples=len(paths), quantized_dtype="auto", quantize_mode="smart")
    return qsym.get_backend_symbol(_BACKEND), qarg, qaux, batches.images_read


def quantized_layers(symbol):
    """Names of the int8 convolutions of a graph (``_sg_mkldnn_conv`` nodes with ``quantized=true``)."""
    return [n["name"] for n in json.loads(symbol.tojson())["nodes"]
            if n["op"] == "_sg_mkldnn_conv" and n.get("attrs", {}).get("quantized") == "true"]

