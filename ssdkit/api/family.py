"""Detector families: what differs between SSD and the two-stage FPN detector for train / evaluate /
deploy / Detector, behind one small interface: :class:`ssdkit.api.ssd.SSDFamily` and
:class:`ssdkit.api.fpn.FPNFamily` implement it side by side (no inheritance). The api functions dispatch on
:func:`family_of`; nothing else branches on the network kind.

A family says how to

* build the training and inference graphs from a Config (:meth:`symbols`) and the inference graph
  from a model's meta file (:meth:`inference_symbol`), and what the meta file records (:meth:`meta_fields`,
  :meth:`apply_meta`, :meth:`fixed_settings`);
* apply inference overrides to a meta file and a saved graph (:meth:`with_inference`,
  :meth:`set_inference`, see :mod:`ssdkit.api.inference`);
* make the iterator of a split (:meth:`make_iterator`) and name the graph inputs
  (:attr:`data_names`, :attr:`label_names`, :meth:`input_shapes`);
* train: the metric over the training outputs and the initializer;
* evaluate: turn a batch's labels into the normalised ``(B, M, 6)`` rows the VOC / COCO metrics read
  (:meth:`metric_labels`);
* preprocess one image for the :class:`~ssdkit.detector.Detector` (:meth:`preprocess`). Both families
  output detections ``(B, K, 6)`` normalised to each image's valid area, so postprocessing is shared;
* whether ``deploy --portable`` (MXNet contrib operators only) exists (:meth:`check_portable`).
"""

from ssdkit.api.fpn import FPNFamily
from ssdkit.api.ssd import SSDFamily, check_test_shape, inference_size, input_size  # noqa: F401  (public names)
from ssdkit.symbol.fpn_config import FPN_NETWORKS

SSD, FPN = SSDFamily.name, FPNFamily.name

_FAMILIES = {SSD: SSDFamily(), FPN: FPNFamily()}

_SSD_KEYS = ("model.data_shape", "model.test_shape", "model.overlap_threshold", "model.negative_mining_ratio")
"""Config keys only SSD graphs read (FPN networks resize by ``model.resize_*`` and match by ``[fpn]``)."""
_FPN_KEYS_OF_MODEL = ("model.resize_short", "model.resize_long")
"""Config keys only FPN graphs read."""


def family_overrides(network, overrides, *, flags=None):
    """Command-line ``overrides`` (``{"section.key": value}``) as the family of ``network`` reads them.

    FPN networks take ``model.nms_thresh`` as ``fpn.test_nms_threshold`` (the one NMS threshold of
    their detections). A key the family's graphs do not read is refused, so no flag is accepted and
    then ignored.

    Parameters
    ----------
    network : str, the run's network
    overrides : dict, the flags given
    flags : dict ``{key: flag}`` to name flags in the message (default: the keys)

    Raises
    ------
    ValueError : a key of the other family
    """
    fpn = network in FPN_NETWORKS
    foreign = _SSD_KEYS if fpn else _FPN_KEYS_OF_MODEL
    refused = [k for k in overrides if k in foreign]
    if refused:
        names = ", ".join((flags or {}).get(k, k) for k in refused)
        raise ValueError("%s do%s not apply to %s network %s (%s); drop %s"
                         % (names, "es" if len(refused) == 1 else "", "FPN" if fpn else "SSD", network,
                            "it resizes by --resize-short / --resize-long and matches by its [fpn] settings"
                            if fpn else "it runs at the square --data-shape", "it" if len(refused) == 1 else "them"))
    if fpn and "model.nms_thresh" in overrides:
        overrides = dict(overrides)
        overrides["fpn.test_nms_threshold"] = overrides.pop("model.nms_thresh")
    return overrides


def family_of(network):
    """The family of a network name (``fpn_*`` -> FPN, else SSD), a Config, or a meta dict."""
    if isinstance(network, dict):
        network = network["network"]
    elif not isinstance(network, str):
        network = network.model.network
    return _FAMILIES[FPN if network in FPN_NETWORKS else SSD]


def make_iterator(config, split, dataset=None, *, part_index=0, num_parts=1, augment=None):
    """A detection iterator over ``split`` for the network family of ``config.model.network``.

    Parameters are those of :func:`ssdkit.api.ssd.ssd_iterator`; FPN networks get
    :func:`ssdkit.api.fpn.two_stage_iterator`.
    """
    return family_of(config).make_iterator(config, split, dataset, part_index=part_index, num_parts=num_parts,
                                           augment=augment)
