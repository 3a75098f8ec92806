"""Settings of the FPN two-stage detector (one frozen dataclass) and its presets.

:class:`FPNConfig` holds every value of the graph that is not a shape: anchors, RPN matching and
sampling, proposals, R-CNN sampling, head sizes, test-time thresholds. Its defaults are the
Faster R-CNN R50-FPN (Detectron) values. The same class is the ``[fpn]`` section of a run
configuration (:class:`ssdkit.config.schema.Config`), so a TOML preset and the Python builders share
one definition.

:func:`fpn_config` returns the keyword arguments of :func:`ssdkit.symbol.fpn.get_symbol_train` /
:func:`~ssdkit.symbol.fpn.get_symbol` for a network and resize: ``network``, ``image_shape`` (the
padded batch, see :func:`batch_shape`) and the :class:`FPNConfig` fields.
"""
import dataclasses
from dataclasses import dataclass
from typing import Tuple


FPN_NETWORKS = {"fpn_resnet18": 18, "fpn_resnet50": 50, "fpn_resnet101": 101, "fpn_lite": "lite"}
"""Network name -> its backbone: a ResNet depth (:mod:`ssdkit.symbol.resnet`) or ``"lite"`` (the SSD main job's
depthwise-separable body with a stride-32 stage, :data:`ssdkit.symbol.fpn_head.LITE_STAGES`)."""

LEVELS = (2, 3, 4, 5, 6)
"""Feature levels: P2..P5 from the backbone's C2..C5, P6 by subsampling P5 (RPN only)."""
LEVEL_STRIDES = (4, 8, 16, 32, 64)
"""Pixels per feature cell of P2..P6: the anchor strides and the RoIAlign scales ``1 / stride``."""
ROI_LEVELS = (2, 3, 4, 5)
"""Levels RoIs are pooled from."""
RPN_STDS = (1.0, 1.0, 1.0, 1.0)
"""Box-coding stds of the RPN (the R-CNN's are :attr:`FPNConfig.rcnn_stds`)."""


SIZE_DIVISOR = 64
"""Padded batch sides are multiples of this (the largest FPN stride, P6), so every level's map is exact."""


def batch_shape(short, long, divisor=SIZE_DIVISOR):
    """``(H, W)`` of the padded batch that holds any aspect-preserving resize to short side ``short``
    and long side at most ``long`` (:func:`ssdkit.dataset.two_stage.resize_scale`): the FPN graph's
    ``image_shape``.

    Either side of a resized image may be the long one, so the batch is square with side ``long``
    rounded up to a multiple of ``divisor`` (``short`` when ``short == long``). E.g. 800/1333 ->
    (1344, 1344), 256/256 -> (256, 256).
    """
    if not 0 < short <= long:
        raise ValueError("need 0 < short <= long, got short=%r long=%r" % (short, long))
    side = -(-int(long) // divisor) * divisor
    return side, side


def _check(cond, key, message):
    if not cond:
        raise ValueError("config key 'fpn.%s': %s" % (key, message))


@dataclass(frozen=True)
class FPNConfig:
    """FPN / Faster R-CNN settings (defaults: Detectron's R50-FPN 1x).

    Attributes
    ----------
    anchor_scales : anchor side in strides (side = stride * scale at ratio 1), per level
    anchor_ratios : anchor height / width ratios; A = len(scales) * len(ratios) anchors per cell
    fpn_channels : channels of the FPN neck and the RPN head
    frozen_bn : backbone BatchNorm uses its stored statistics (``use_global_stats``), for fine-tuning
        ImageNet weights with few images per device
    rpn_positive_iou, rpn_negative_iou : anchor matching thresholds (``RPNTarget``)
    rpn_batch_size, rpn_positive_fraction : sampled anchors per image and their positive share
    rpn_allowed_border : anchors reaching more than this many pixels outside the image are
        ignored (negative: keep all)
    rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test : proposals per level per image before NMS
    rpn_post_nms_top_n_train, rpn_post_nms_top_n_test : proposals per image after NMS (P)
    rpn_nms_threshold : proposal NMS IoU (within each level)
    rpn_min_size : proposals smaller than this (pixels) are dropped
    rpn_box_beta : smooth-L1 transition point of the RPN box loss (1/9, Detectron)
    rcnn_batch_rois : sampled RoIs per image (S)
    rcnn_fg_fraction : foreground share of the sampled RoIs
    rcnn_fg_iou : RoIs with IoU >= this are foreground
    rcnn_bg_iou_hi, rcnn_bg_iou_lo : RoIs with ``lo <= IoU < hi`` are background
    rcnn_stds : box-coding stds of the R-CNN head
    rcnn_fc_dim : width of the two fully connected layers of the box head
    rcnn_box_beta : smooth-L1 transition point of the R-CNN box loss
    roi_size : RoIAlign output size (roi_size x roi_size)
    roi_sample_ratio : RoIAlign sampling points per bin side (<= 0: adaptive)
    test_score_threshold, test_nms_threshold, test_max_detections : ``RCNNDetection`` settings

    Conventions of other Faster R-CNN implementations (the defaults are ssdkit's; the values GluonCV's
    ``faster_rcnn_fpn_*`` zoo models use, :data:`ssdkit.weights_fpn.GLUONCV_CONVENTIONS`, reproduce them):

    backbone_variant : ResNet variant of the backbone, ``v1`` / ``v1b`` / ``v1d``
        (:data:`ssdkit.symbol.resnet.VARIANTS`)
    fpn_p6 : ``max_pool`` (P6 = P5 subsampled by 2) or ``conv`` (P6 = 3x3 stride-2 convolution
        ``fpn_p6`` of C5's lateral, GluonCV)
    rpn_channels : width of the RPN head's 3x3 convolution; 0 means ``fpn_channels``
    anchor_style : ``centered`` (side ``stride * scale``, centre ``(x + 0.5) * stride``) or ``legacy``
        (py-faster-rcnn / Detectron / GluonCV: integer sizes rounded per ratio, centre
        ``x * stride + (stride - 1) / 2``, corners ``centre +- (size - 1) / 2``)
    rpn_merge_levels : rank (``rpn_pre_nms_top_n_*`` over all levels) and NMS the proposals of all
        levels together instead of per level
    roi_level_offset : the RoI level rule measures ``w + offset`` by ``h + offset`` and, when non-zero,
        ``floor(4 + log2(sqrt(w h) / 224 + 1e-6))`` (GluonCV's form)
    roi_aligned : RoIAlign's half-pixel offset (False: MXNet ``contrib.ROIAlign``'s default)
    rcnn_clip_boxes : final boxes clipped to the image (False: GluonCV returns them unclipped)
    rcnn_avg_pool : the box head averages 3x3 windows of the pooled RoI features with stride 2 (padding 1,
        zeros counted) before ``rcnn_fc6``: ``roi_size`` 14 gives 7 x 7 (GluonCV's ``mask_rcnn_fpn_*``)

    Settings for small images and training from scratch (defaults keep the Detectron graph):

    roi_canonical_size : the RoI level rule's anchor: a RoI of this side (pixels) is pooled from P4, half of
        it from P3, ... (224: Lin et al.; smaller sends small objects to coarser, more semantic levels)
    rcnn_batchnorm : BatchNorm after each of the box head's two fully connected layers (``rcnn_fc6_bn``,
        ``rcnn_fc7_bn``, before the ReLU)

    Normalisation (Wu & He 2018; the seed's Mask R-CNN configurations):

    norm : ``none`` or ``group``: GroupNorm (per-channel affine ``<layer>_gn_gamma`` / ``_beta``) after every
        neck convolution (``fpn_lateral*``, ``fpn_output*``, ``fpn_p6``), after the box head's two fully
        connected layers (instead of ``rcnn_batchnorm``) and after the mask head's convolutions, those layers
        then without bias; and in the backbone in place of every BatchNorm ``<conv>_bn`` (GroupNorm
        ``<conv>_gn``; ResNet and ``lite``), as in SimpleDet's GN configurations (GN in backbone, neck and
        heads). The RPN head keeps its plain convolutions. With ``group`` there is no BatchNorm left, so
        ``frozen_bn`` must be false; BatchNorm checkpoints (ImageNet or GluonCV weights) do not fit the graph
    gn_groups : groups of every GroupNorm (each normalised layer's width must be a multiple, the backbone's
        too: 16 or a divisor of it for ``fpn_lite``, whose widths are 16, 32, 96, 128, 160; 32 or a divisor for
        the ResNets; :func:`fpn_config` and the graph builders check it against the network)

    Mask branch (Mask R-CNN, He et al. 2017; :mod:`ssdkit.symbol.mask_head`):

    mask : the switch; the training graph takes ``gt_masks`` and outputs ``mask_loss``, the inference graph
        outputs ``[detection, masks]``
    mask_roi_size : RoIAlign size of the mask branch (``mask_roi_size`` squared, on each RoI's level)
    mask_size : side S of the predicted masks: ``2 * mask_roi_size`` (one 2x deconvolution)
    mask_channels : width of the mask head's convolutions and deconvolution
    mask_convs : 3x3 convolutions of the mask head (``mask_conv1`` ...)
    mask_stride : image pixels per pixel of the data layer's ``gt_masks`` (``MaskTarget``'s spatial scale is
        its inverse)
    mask_loss_weight : factor of the mask loss
    """

    anchor_scales: Tuple[float, ...] = (8.0,)
    anchor_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)
    fpn_channels: int = 256
    frozen_bn: bool = False
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    rpn_batch_size: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_allowed_border: float = 0.0
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_threshold: float = 0.7
    rpn_min_size: float = 0.0
    rpn_box_beta: float = 1.0 / 9.0
    rcnn_batch_rois: int = 512
    rcnn_fg_fraction: float = 0.25
    rcnn_fg_iou: float = 0.5
    rcnn_bg_iou_hi: float = 0.5
    rcnn_bg_iou_lo: float = 0.0
    rcnn_stds: Tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    rcnn_fc_dim: int = 1024
    rcnn_box_beta: float = 1.0
    roi_size: int = 7
    roi_sample_ratio: int = 2
    test_score_threshold: float = 0.05
    test_nms_threshold: float = 0.5
    test_max_detections: int = 100
    backbone_variant: str = "v1"
    fpn_p6: str = "max_pool"
    rpn_channels: int = 0
    anchor_style: str = "centered"
    rpn_merge_levels: bool = False
    roi_level_offset: float = 0.0
    roi_aligned: bool = True
    rcnn_clip_boxes: bool = True
    rcnn_avg_pool: bool = False
    roi_canonical_size: float = 224.0
    rcnn_batchnorm: bool = False
    norm: str = "none"
    gn_groups: int = 32
    mask: bool = False
    mask_roi_size: int = 14
    mask_size: int = 28
    mask_channels: int = 256
    mask_convs: int = 4
    mask_stride: int = 1
    mask_loss_weight: float = 1.0

    def __post_init__(self):
        _check(len(self.anchor_scales) >= 1 and all(s > 0 for s in self.anchor_scales), "anchor_scales",
               "needs at least one positive value, got %r" % (self.anchor_scales,))
        _check(len(self.anchor_ratios) >= 1 and all(r > 0 for r in self.anchor_ratios), "anchor_ratios",
               "needs at least one positive value, got %r" % (self.anchor_ratios,))
        for key in ("fpn_channels", "rpn_batch_size", "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test",
                    "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test", "rcnn_batch_rois", "rcnn_fc_dim",
                    "roi_size", "test_max_detections"):
            _check(getattr(self, key) >= 1, key, "must be >= 1, got %r" % (getattr(self, key),))
        _check(0 <= self.rpn_negative_iou <= self.rpn_positive_iou <= 1, "rpn_negative_iou",
               "need 0 <= rpn_negative_iou <= rpn_positive_iou <= 1, got %r and %r"
               % (self.rpn_negative_iou, self.rpn_positive_iou))
        for key in ("rpn_positive_fraction", "rcnn_fg_fraction"):
            _check(0 < getattr(self, key) <= 1, key, "must be in (0, 1], got %r" % (getattr(self, key),))
        for key in ("rpn_nms_threshold", "test_nms_threshold", "rcnn_fg_iou"):
            _check(0 < getattr(self, key) <= 1, key, "must be in (0, 1], got %r" % (getattr(self, key),))
        _check(0 <= self.rcnn_bg_iou_lo <= self.rcnn_bg_iou_hi <= 1, "rcnn_bg_iou_lo",
               "need 0 <= rcnn_bg_iou_lo <= rcnn_bg_iou_hi <= 1, got %r and %r"
               % (self.rcnn_bg_iou_lo, self.rcnn_bg_iou_hi))
        _check(self.rpn_min_size >= 0, "rpn_min_size", "must be >= 0, got %r" % (self.rpn_min_size,))
        for key in ("rpn_box_beta", "rcnn_box_beta"):
            _check(getattr(self, key) > 0, key, "must be > 0, got %r" % (getattr(self, key),))
        _check(len(self.rcnn_stds) == 4 and all(s > 0 for s in self.rcnn_stds), "rcnn_stds",
               "needs 4 positive values, got %r" % (self.rcnn_stds,))
        _check(0 <= self.test_score_threshold < 1, "test_score_threshold",
               "must be in [0, 1), got %r" % (self.test_score_threshold,))
        for key, choices in (("backbone_variant", ("v1", "v1b", "v1d")), ("fpn_p6", ("max_pool", "conv")),
                             ("anchor_style", ("centered", "legacy"))):
            _check(getattr(self, key) in choices, key,
                   "must be one of %s, got %r" % (", ".join(choices), getattr(self, key)))
        _check(self.rpn_channels >= 0, "rpn_channels", "must be >= 0 (0: fpn_channels), got %r" % (self.rpn_channels,))
        _check(self.roi_canonical_size > 0, "roi_canonical_size",
               "must be > 0 pixels, got %r" % (self.roi_canonical_size,))
        _check(0 <= self.roi_level_offset <= 1, "roi_level_offset",
               "must be in [0, 1] pixels, got %r" % (self.roi_level_offset,))
        self._check_norm()
        self._check_mask()

    def _check_norm(self):
        _check(self.norm in ("none", "group"), "norm", "must be one of none, group, got %r" % (self.norm,))
        _check(self.gn_groups >= 1, "gn_groups", "must be >= 1, got %r" % (self.gn_groups,))
        if self.norm != "group":
            return
        _check(not self.rcnn_batchnorm, "rcnn_batchnorm", "norm = \"group\" normalises the box head with "
               "GroupNorm: set rcnn_batchnorm = false")
        _check(not self.frozen_bn, "frozen_bn", "norm = \"group\" replaces the backbone's BatchNorm with GroupNorm, "
               "which has no statistics to freeze: set frozen_bn = false")
        widths = [("fpn_channels", self.fpn_channels), ("rcnn_fc_dim", self.rcnn_fc_dim)]
        if self.mask:
            widths.append(("mask_channels", self.mask_channels))
        for key, width in widths:
            _check(width % self.gn_groups == 0, key, "%d is not a multiple of gn_groups = %d (norm = \"group\")"
                   % (width, self.gn_groups))

    def _check_mask(self):
        for key in ("mask_roi_size", "mask_channels", "mask_convs", "mask_stride"):
            _check(getattr(self, key) >= 1, key, "must be >= 1, got %r" % (getattr(self, key),))
        _check(self.mask_size == 2 * self.mask_roi_size, "mask_size",
               "must be 2 * mask_roi_size (the head upsamples once by 2), got %r with mask_roi_size %r"
               % (self.mask_size, self.mask_roi_size))
        _check(self.mask_loss_weight > 0, "mask_loss_weight", "must be > 0, got %r" % (self.mask_loss_weight,))
        if self.mask:
            _check(self.mask_foreground_rois >= 1, "rcnn_fg_fraction",
                   "the mask branch trains on the floor(rcnn_batch_rois * rcnn_fg_fraction) foreground rows of "
                   "each image: %r * %r gives none" % (self.rcnn_batch_rois, self.rcnn_fg_fraction))

    @property
    def mask_foreground_rois(self):
        """F, the leading rows of each image's sampled RoIs that may be foreground (``ProposalTarget`` puts
        at most ``floor(rcnn_batch_rois * rcnn_fg_fraction)`` foregrounds first): the mask branch's RoIs."""
        return int(self.rcnn_batch_rois * self.rcnn_fg_fraction)

    @property
    def num_anchors(self):
        """A, anchors per feature cell."""
        return len(self.anchor_scales) * len(self.anchor_ratios)


def fpn_settings(**overrides):
    """:class:`FPNConfig` with ``overrides``; an unknown key raises ValueError listing the known ones."""
    known = {f.name for f in dataclasses.fields(FPNConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError("unknown FPN setting(s) %s; known: %s" % (", ".join(unknown), ", ".join(sorted(known))))
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return FPNConfig(**values)


def fpn_config(network, short=800, long=1333, **overrides):
    """Preset of an FPN network at a resize (a new plain dict; ``overrides`` change FPNConfig fields).

    Parameters
    ----------
    network : str, a key of :data:`FPN_NETWORKS`
    short, long : int, the data resize (short side, long-side cap); they fix ``image_shape``
    overrides : FPNConfig fields

    Returns
    -------
    dict with ``network``, ``image_shape`` ``(H, W)`` and every FPNConfig field, e.g.
    ``get_symbol_train(num_classes=C, batch_size=B, **fpn_config("fpn_resnet50"))``.
    """
    if network not in FPN_NETWORKS:
        raise ValueError("no FPN preset for network %r; presets: %s" % (network, ", ".join(sorted(FPN_NETWORKS))))
    settings = fpn_settings(**overrides)
    if settings.norm == "group":
        from ssdkit.symbol.fpn_head import check_backbone_groups    # mxnet-free module top: import here
        check_backbone_groups(FPN_NETWORKS[network], settings.backbone_variant, settings.gn_groups, network)
    config = dataclasses.asdict(settings)
    config.update(network=network, image_shape=batch_shape(short, long))
    return config
