"""The layout of an SSD network -- base network, feature layers, anchors, box coding -- as one frozen
dataclass (:class:`SSDLayout`), and the network presets that hold it as data: one TOML file per network in
``config/networks/`` (``<network>.toml``), read by :func:`ssd_layout`.

A network file holds the fields of :class:`SSDLayout` at its top level, plus

* ``tuned_sizes``: input sizes the preset is made for (another size logs a warning);
* ``[[variant]]`` tables, applied in file order to the input sizes they name (``size = N``: exactly N,
  ``min_size = N``: N and more): their keys replace the ones before;
* ``step_pixels`` (instead of ``steps``): anchor steps in pixels of the input, divided by the input size;
* ``pixel_sizes`` (instead of ``sizes``): GluonCV's L + 1 pixel sizes (:func:`gluoncv_sizes`).

:func:`ssdkit.symbol.symbol_factory.get_config` turns a layout into the keyword arguments of the graph
builders (:meth:`SSDLayout.builder_kwargs`); the SSD model spec (:class:`ssdkit.api.model_spec.SSDSpec`)
and so the checkpoint's meta file carry it verbatim.
"""
import dataclasses
import logging
import os
import tomllib
from dataclasses import dataclass
from typing import Tuple

from ssdkit.boxes import VARIANCES

_LOG = logging.getLogger(__name__)

NETWORK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "networks")
"""The SSD network presets, ``<network>.toml``."""


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


def _check(cond, key, message):
    if not cond:
        raise ValueError("SSD layout '%s': %s" % (key, message))


def _numbers(values, kind, key):
    try:
        return tuple(kind(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError("SSD layout '%s': expected a list of numbers, got %r" % (key, values)) from None


@dataclass(frozen=True)
class SSDLayout:
    """Feature layers and anchors of an SSD network; L feature layers, one entry each.

    Attributes
    ----------
    base : str, base network (a key of :data:`ssdkit.symbol.symbol_builder.BASE_NETWORKS`)
    from_layers : L str, base-network layer names, ``''`` for an extra layer
    num_filters, strides, pads : L int, extra layers' channels, stride and padding (-1 for base layers)
    sizes : L tuples of float, anchor sizes per layer (fractions of the image)
    ratios : L tuples of float, anchor width / height ratios per layer
    normalizations : 1 or L float, > 0: L2 normalisation with a learned scale starting there (one value:
        every layer)
    steps : 0 or L float, anchor step per layer in fractions of the input (empty: 1 / map size; fixed steps
        tie the model to the input size they were made for)
    num_layers : int, depth of a ``resnet`` base (0: the base takes none)
    transition_ratio, extra_bn : extra-layer shape (:func:`ssdkit.symbol.common.multi_layer_feature`)
    fused_heads : bool, one aligned head convolution per layer (:func:`ssdkit.symbol.common.multibox_layer`)
    variances : 4 float, the box coding's variances (``MultiBoxTarget`` / ``MultiBoxDetection``)

    Lists given to the constructor become tuples, numbers the field's type.
    """

    base: str
    from_layers: Tuple[str, ...]
    num_filters: Tuple[int, ...]
    strides: Tuple[int, ...]
    pads: Tuple[int, ...]
    sizes: Tuple[Tuple[float, ...], ...]
    ratios: Tuple[Tuple[float, ...], ...]
    normalizations: Tuple[float, ...] = (-1.0,)
    steps: Tuple[float, ...] = ()
    num_layers: int = 0
    transition_ratio: float = 0.5
    extra_bn: bool = False
    fused_heads: bool = False
    variances: Tuple[float, ...] = VARIANCES

    def __post_init__(self):
        norms = self.normalizations
        fix = object.__setattr__
        fix(self, "from_layers", tuple(str(v) for v in self.from_layers))
        for key in ("num_filters", "strides", "pads"):
            fix(self, key, _numbers(getattr(self, key), int, key))
        for key in ("sizes", "ratios"):
            fix(self, key, tuple(_numbers(row, float, key) for row in getattr(self, key)))
        fix(self, "normalizations", _numbers(norms if isinstance(norms, (list, tuple)) else [norms], float,
                                             "normalizations"))
        for key in ("steps", "variances"):
            fix(self, key, _numbers(getattr(self, key), float, key))
        fix(self, "num_layers", int(self.num_layers))
        fix(self, "transition_ratio", float(self.transition_ratio))
        n = len(self.from_layers)
        _check(n >= 1, "from_layers", "needs at least one layer")
        for key in ("num_filters", "strides", "pads", "sizes", "ratios"):
            _check(len(getattr(self, key)) == n, key, "has %d entries for %d feature layers (from_layers)"
                   % (len(getattr(self, key)), n))
        _check(len(self.normalizations) in (1, n), "normalizations", "needs 1 or %d values" % n)
        _check(len(self.steps) in (0, n), "steps", "needs 0 or %d values" % n)
        _check(all(len(s) >= 1 and min(s) > 0 for s in self.sizes), "sizes", "needs positive sizes per layer")
        _check(all(len(r) >= 1 and min(r) > 0 for r in self.ratios), "ratios", "needs positive ratios per layer")
        _check(len(self.variances) == 4 and min(self.variances) > 0, "variances", "needs 4 positive values")

    def builder_kwargs(self):
        """The layout as keyword arguments of :func:`ssdkit.symbol.symbol_builder.get_symbol_train` /
        ``get_symbol`` (a new dict of lists): ``network`` (the base), the per-layer lists, and the optional
        settings where they differ from their defaults (which are the builders' defaults); one
        normalisation is given as a number."""
        out = {"network": self.base}
        for f in dataclasses.fields(self):
            if f.name == "base":
                continue
            value = getattr(self, f.name)
            optional = f.name in _OPTIONAL
            if optional and value == f.default:
                continue
            if f.name in ("sizes", "ratios"):
                value = [list(row) for row in value]
            elif f.name == "normalizations" and len(value) == 1:
                value = value[0]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_builder_kwargs(cls, kwargs):
        """The layout of builder keyword arguments (the inverse of :meth:`builder_kwargs`; other keys,
        e.g. NMS settings, are left out)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"base"}
        return cls(base=kwargs["network"], **{k: v for k, v in kwargs.items() if k in names})


_OPTIONAL = ("num_layers", "transition_ratio", "extra_bn", "fused_heads", "variances")
"""Fields :meth:`SSDLayout.builder_kwargs` leaves out at their defaults (``steps`` and ``normalizations``
are always given)."""

_FILE_ONLY = ("tuned_sizes", "variant", "step_pixels", "pixel_sizes")


def network_names():
    """The SSD networks with a preset (names of ``config/networks/*.toml``)."""
    return sorted(f[:-5] for f in os.listdir(NETWORK_DIR) if f.endswith(".toml"))


def ssd_layout(network, data_shape):
    """The :class:`SSDLayout` of SSD network preset ``network`` at square input ``data_shape``.

    Raises
    ------
    ValueError : no preset of that name (the message lists them), or a preset file with an unknown key
    """
    data_shape = int(data_shape)
    path = os.path.join(NETWORK_DIR, "%s.toml" % network)
    if not isinstance(network, str) or not os.path.exists(path):
        raise ValueError("no SSD preset for network %r; presets: %s (files in %s)"
                         % (network, ", ".join(network_names()), NETWORK_DIR))
    with open(path, "rb") as f:
        data = tomllib.load(f)
    tuned = data.get("tuned_sizes")
    if tuned and data_shape not in tuned:
        _LOG.warning("%s presets are tuned for %s, not %d", network, " and ".join(str(s) for s in tuned),
                     data_shape)
    values = {k: v for k, v in data.items() if k not in ("tuned_sizes", "variant")}
    for variant in data.get("variant", []):
        variant = dict(variant)
        size, min_size = variant.pop("size", None), variant.pop("min_size", None)
        if (size is None) == (min_size is None):
            raise ValueError("%s: each [[variant]] needs one of size = N or min_size = N" % path)
        if data_shape == size or (min_size is not None and data_shape >= min_size):
            values.update(variant)
    if "step_pixels" in values:
        values["steps"] = [p / float(data_shape) for p in values.pop("step_pixels")]
    if "pixel_sizes" in values:
        values["sizes"] = gluoncv_sizes(values.pop("pixel_sizes"), data_shape)
    known = {f.name for f in dataclasses.fields(SSDLayout)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError("%s: unknown key(s) %s; known: %s" % (path, ", ".join(unknown),
                                                               ", ".join(sorted(known) + list(_FILE_ONLY))))
    try:
        return SSDLayout(**values)
    except (TypeError, ValueError) as err:
        raise ValueError("%s: %s" % (path, err)) from None
