"""Typed, frozen specs of a trained model: what its meta file (``<prefix>-meta.json``) holds, field by field.

The meta file is a spec written verbatim (:func:`spec_to_meta`) and read back into the same type
(:func:`spec_from_meta`); ``spec_from_meta(spec_to_meta(s)) == s``. A meta file written before the specs
existed loads too: fields it lacks take their defaults, which are the values those files meant (e.g. no
``max_detections``: one row per anchor; no ``layout``: the network preset's at ``data_shape``, the layout
the graph was built with when it was written; no ``overlap_threshold`` / ``negative_mining_ratio``: their
defaults, training-only settings no inference reads). An unknown key or a value of the wrong type is an error that
names the file and the key.

An SSD graph is built from its spec through one path (:func:`ssdkit.api.ssd.ssd_graph`): the layout
(:class:`ssdkit.config.ssd_layout.SSDLayout`) as the builders' keyword arguments plus the spec's NMS,
detection and target settings.

The api keeps passing the JSON form (a plain dict) between functions; the families build a spec from a
Config (:func:`ssdkit.api.ssd.model_spec`; FPN: :meth:`ssdkit.api.fpn.FPNFamily.meta_fields`) and
inference overrides change it with :func:`dataclasses.replace` semantics
(:meth:`~ssdkit.api.ssd.SSDFamily.with_inference`).
"""
import dataclasses
import typing
from dataclasses import dataclass
from typing import Optional, Tuple

from ssdkit.config.ssd_layout import SSDLayout, ssd_layout
from ssdkit.detection_defaults import NEGATIVE_MINING_RATIO, NMS_THRESH, NMS_TOPK, OVERLAP_THRESHOLD
from ssdkit.normalization import IMAGENET_MEAN, IMAGENET_STD
from ssdkit.symbol.fpn_config import FPN_NETWORKS, FPNConfig, fpn_settings


@dataclass(frozen=True)
class SSDSpec:
    """An SSD model.

    Attributes
    ----------
    network : str, the SSD network preset (``config/networks/<network>.toml``)
    data_shape : int, square training input (pixels); fixed steps of the layout refer to it
    class_names : tuple of str, C object classes, class id i is ``class_names[i]``
    mean, std : RGB normalisation on the 0-255 scale
    test_shape : int, square inference input (0: ``data_shape``; :func:`ssdkit.api.ssd.inference_size`)
    nms_thresh, nms_topk, force_suppress : NMS of ``MultiBoxDetection``
    score_thresh : float or None, candidates' least score (None: the operator's default, 0.01)
    max_detections : int, detection rows per image (-1: one per anchor)
    portable, gluoncv_zoo : deploy models only: contrib operators; the GluonCV zoo name imported
    int8, calib_mode, calib_images : deploy models only: an INT8 graph (:mod:`ssdkit.api.quantize`),
        its calibration mode and number of calibration images ("" and 0 for fp32 graphs)
    overlap_threshold, negative_mining_ratio : ``MultiBoxTarget`` matching and hard-negative mining
        (training graphs)
    layout : SSDLayout, base network, feature layers, anchors and box-coding variances (None given: the
        preset of ``network`` at ``data_shape``, :func:`ssdkit.config.ssd_layout.ssd_layout`)
    """

    network: str
    data_shape: int
    class_names: Tuple[str, ...]
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    test_shape: int = 0
    nms_thresh: float = NMS_THRESH
    nms_topk: int = NMS_TOPK
    force_suppress: bool = False
    score_thresh: Optional[float] = None
    max_detections: int = -1
    portable: bool = False
    gluoncv_zoo: str = ""
    int8: bool = False
    calib_mode: str = ""
    calib_images: int = 0
    overlap_threshold: float = OVERLAP_THRESHOLD
    negative_mining_ratio: float = NEGATIVE_MINING_RATIO
    layout: Optional[SSDLayout] = None

    def __post_init__(self):
        if self.layout is None:
            object.__setattr__(self, "layout", ssd_layout(self.network, self.data_shape))


@dataclass(frozen=True)
class FPNSpec:
    """An FPN (two-stage) model.

    Attributes
    ----------
    network : str, a key of :data:`ssdkit.symbol.fpn_config.FPN_NETWORKS`
    resize_short, resize_long : int, the aspect-preserving resize
    image_shape : (H, W), the padded batch (:func:`ssdkit.symbol.fpn_config.batch_shape`)
    class_names, mean, std : as :class:`SSDSpec`
    fpn : FPNConfig, every graph setting (its ``test_*`` fields are the inference settings)
    family : ``"fpn"``
    max_detections, portable : deploy models only: the rows requested of deploy (-1: as trained), False
    """

    network: str
    resize_short: int
    resize_long: int
    image_shape: Tuple[int, ...]
    class_names: Tuple[str, ...]
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    fpn: FPNConfig = dataclasses.field(default_factory=FPNConfig)
    family: str = "fpn"
    max_detections: Optional[int] = None
    portable: bool = False


def spec_type(meta):
    """:class:`FPNSpec` for a meta dict of an ``fpn_*`` network, else :class:`SSDSpec`."""
    return FPNSpec if meta.get("network") in FPN_NETWORKS else SSDSpec


def spec_to_meta(spec):
    """The JSON form of ``spec`` (lists for tuples, the ``fpn`` section a dict); fields that are None
    are left out."""
    out = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if value is None:
            continue
        if isinstance(value, (FPNConfig, SSDLayout)):
            value = {k: _json(v) for k, v in dataclasses.asdict(value).items()}
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _json(value):
    """Tuples (also nested) as lists."""
    return [_json(v) for v in value] if isinstance(value, tuple) else value


def spec_from_meta(meta, *, source="meta"):
    """The spec a meta dict describes (:func:`spec_type`).

    Raises
    ------
    ValueError : naming ``source`` and the key: a required key absent, an unknown key, a value of the
        wrong type, an unknown ``fpn`` setting
    """
    cls = spec_type(meta)
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(meta) - set(hints))
    if unknown:
        raise ValueError("%s: unknown key(s) %s for a %s meta file; known: %s"
                         % (source, ", ".join(unknown), cls.__name__, ", ".join(hints)))
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    absent = [k for k in required if k not in meta]
    if absent:
        raise ValueError("%s lacks %s; it is not a model meta file written by train.py / deploy.py"
                         % (source, ", ".join(absent)))
    values = {}
    for key, value in meta.items():
        try:
            values[key] = _coerce(value, hints[key])
        except (TypeError, ValueError) as err:
            raise ValueError("%s: key '%s': %s" % (source, key, err)) from None
    try:
        return cls(**values)
    except ValueError as err:       # e.g. an SSD network without a preset and no layout
        raise ValueError("%s: %s" % (source, err)) from None


def _coerce(value, annotation):
    if annotation is FPNConfig:
        if not isinstance(value, dict):
            raise TypeError("expected a table of FPN settings, got %r" % (value,))
        return fpn_settings(**value)
    if annotation is SSDLayout:
        if not isinstance(value, dict):
            raise TypeError("expected a table of SSD layout settings, got %r" % (value,))
        hints = typing.get_type_hints(SSDLayout)
        unknown = sorted(set(value) - set(hints))
        if unknown:
            raise ValueError("unknown SSD layout setting(s) %s; known: %s" % (", ".join(unknown), ", ".join(hints)))
        values = {k: _coerce(v, hints[k]) for k, v in value.items()}
        required = [f.name for f in dataclasses.fields(SSDLayout) if f.default is dataclasses.MISSING]
        absent = [k for k in required if k not in values]
        if absent:
            raise ValueError("the SSD layout lacks %s" % ", ".join(absent))
        return SSDLayout(**values)
    if typing.get_origin(annotation) is typing.Union:       # Optional[X]
        if value is None:
            return None
        return _coerce(value, [a for a in typing.get_args(annotation) if a is not type(None)][0])
    if typing.get_origin(annotation) is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError("expected a list, got %r" % (value,))
        item = typing.get_args(annotation)[0]
        return tuple(_coerce(v, item) for v in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise TypeError("expected true/false, got %r" % (value,))
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("expected an integer, got %r" % (value,))
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("expected a number, got %r" % (value,))
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise TypeError("expected a string, got %r" % (value,))
        return value
    raise TypeError("unsupported spec field type %r" % (annotation,))
