"""Configuration of a training / evaluation run: one frozen dataclass per section.

Every default for augmentation, schedule and evaluation lives here (and in the preset files),
not in the scripts. Values are validated in ``__post_init__`` with messages that name the key.
"""
from dataclasses import dataclass, field
from typing import Tuple

from ssdkit.detection_defaults import NEGATIVE_MINING_RATIO, NMS_THRESH, NMS_TOPK, OVERLAP_THRESHOLD
from ssdkit.normalization import IMAGENET_MEAN, IMAGENET_STD
from ssdkit.symbol.fpn_config import FPNConfig


def _check(cond, key, message):
    if not cond:
        raise ValueError("config key '%s': %s" % (key, message))


COPY_PASTE_MODES = ("move", "copy")
"""``augment.copy_paste_mode`` values (:mod:`ssdkit.dataset.copy_paste`)."""


def copy_paste_problem(prob, max_instances, scale, rotation, translate, min_visible, mode):
    """The one set of rules for the copy-paste settings (``AugmentConfig.copy_paste_*`` and
    :class:`ssdkit.dataset.copy_paste.CopyPaste`): None when they are valid, else ``(name, message)`` for the
    first bad one (``name`` without the ``copy_paste_`` prefix)."""
    rules = (
        ("prob", 0.0 <= prob <= 1.0, "must be in [0, 1], got %r" % (prob,)),
        ("max_instances", isinstance(max_instances, int) and max_instances >= 1,
         "must be an integer >= 1, got %r" % (max_instances,)),
        ("scale", len(scale) == 2 and 0 < scale[0] <= scale[1],
         "must be [low, high] with 0 < low <= high, got %r" % (scale,)),
        ("rotation", 0.0 <= rotation <= 180.0, "must be in [0, 180] degrees, got %r" % (rotation,)),
        ("translate", 0.0 <= translate <= 1.0, "must be in [0, 1] (a fraction of the image size), got %r"
         % (translate,)),
        ("min_visible", 0.0 <= min_visible <= 1.0, "must be in [0, 1], got %r" % (min_visible,)),
        ("mode", mode in COPY_PASTE_MODES, "must be one of %s, got %r" % (", ".join(COPY_PASTE_MODES), mode)),
    )
    for name, ok, message in rules:
        if not ok:
            return name, message
    return None


@dataclass(frozen=True)
class ModelConfig:
    """The detector: network name and input size, classes, inference settings, initial weights.

    ``pretrained``: ImageNet weights of the base network (a GluonCV ``.params`` file);
    ``finetune``: a whole detector to start from (``prefix-NNNN.params`` of ssdkit or a GluonCV SSD
    zoo file), heads of another class count are re-initialised; ``freeze``: regular expressions of
    parameter names kept fixed.

    ``data_shape`` is the square input of SSD networks; two-stage (``fpn_*``) networks resize each
    image keeping its aspect so the short side is ``resize_short`` and the long side at most
    ``resize_long`` (see :mod:`ssdkit.dataset.two_stage`), and ignore ``data_shape``.
    ``test_shape`` (SSD, 0: ``data_shape``) is the square input of validation, evaluation and the
    deployed graph; it is written to the meta file. A fully convolutional SSD whose preset places
    anchors by feature-map size (no fixed ``steps``) runs at any size, but a model trained at one
    size mis-scales its boxes at another (check COCO AP / AP75, not only VOC07: see
    bench/README_recipe.md); meant for models trained at several sizes.

    ``overlap_threshold`` and ``negative_mining_ratio`` set the SSD training targets
    (``MultiBoxTarget``): besides the anchor each ground truth claims first, every anchor whose IoU
    with a ground truth reaches ``overlap_threshold`` is a positive, and hard negatives are mined at
    ``negative_mining_ratio`` per positive (-1: no mining, every other anchor is a negative).
    Lowering the threshold gives small objects, whose best anchor on a coarse grid often stays
    below IoU 0.5, more positives. Training only; FPN networks have their own ``[fpn]`` settings.
    """

    network: str = "tiny"
    data_shape: int = 256
    test_shape: int = 0
    resize_short: int = 800
    resize_long: int = 1333
    class_names: Tuple[str, ...] = ()
    nms_thresh: float = NMS_THRESH
    nms_topk: int = NMS_TOPK
    force_suppress: bool = False
    overlap_threshold: float = OVERLAP_THRESHOLD
    negative_mining_ratio: float = NEGATIVE_MINING_RATIO
    num_classes: int = 0
    pretrained: str = ""
    finetune: str = ""
    freeze: Tuple[str, ...] = ()

    def __post_init__(self):
        _check(self.num_classes >= 0, "model.num_classes", "must be >= 0 (0: from class_names / data)")
        _check(not (self.num_classes and self.class_names and self.num_classes != len(self.class_names)),
               "model.num_classes", "is %d but class_names lists %d names"
               % (self.num_classes, len(self.class_names)))
        _check(self.data_shape >= 32, "model.data_shape", "must be >= 32, got %r" % self.data_shape)
        _check(self.test_shape == 0 or self.test_shape >= 32, "model.test_shape",
               "must be 0 (= data_shape) or >= 32, got %r" % self.test_shape)
        _check(32 <= self.resize_short <= self.resize_long, "model.resize_short",
               "need 32 <= resize_short <= resize_long, got %r and %r" % (self.resize_short, self.resize_long))
        _check(0 < self.nms_thresh <= 1, "model.nms_thresh", "must be in (0, 1], got %r" % self.nms_thresh)
        _check(self.nms_topk == -1 or self.nms_topk > 0, "model.nms_topk", "must be > 0 or -1")
        _check(0 < self.overlap_threshold <= 1, "model.overlap_threshold",
               "must be in (0, 1], got %r" % self.overlap_threshold)
        _check(self.negative_mining_ratio == -1 or self.negative_mining_ratio > 0,
               "model.negative_mining_ratio", "must be > 0 or -1 (no mining), got %r" % self.negative_mining_ratio)
        _check(len(set(self.class_names)) == len(self.class_names), "model.class_names",
               "has duplicates: %r" % (self.class_names,))


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how batches are formed.

    ``format``: ``voc`` (``root`` = VOCdevkit, ``train``/``val`` = "2007/trainval" style sets),
    ``coco`` (``train``/``val`` = annotation json files, ``root`` = image folder prefix),
    ``list`` (``train``/``val`` = list files), ``rec`` (``train``/``val`` = .rec files).

    ``max_objects`` is the least number of label rows per image: the label padding grows to the largest
    object count in the data, so no image is refused for holding many objects.
    ``strict``: a damaged or inconsistent record (truncated image, duplicate id, orphan annotation, extra
    CSV values, damaged ``.rec`` record or label, ...) is an error naming it instead of being skipped with a
    count (see :mod:`ssdkit.dataset.validation`).
    """

    format: str = "voc"
    root: str = ""
    train: Tuple[str, ...] = ()
    val: Tuple[str, ...] = ()
    batch_size: int = 16
    max_objects: int = 64
    num_workers: int = 2
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    strict: bool = False

    def __post_init__(self):
        _check(self.format in ("voc", "coco", "list", "rec"), "data.format",
               "must be one of voc, coco, list, rec; got %r" % self.format)
        _check(self.batch_size > 0, "data.batch_size", "must be > 0, got %r" % self.batch_size)
        _check(self.max_objects > 0, "data.max_objects", "must be > 0")
        _check(self.num_workers >= 0, "data.num_workers", "must be >= 0")
        _check(len(self.mean) == 3 and len(self.std) == 3, "data.mean/std", "need 3 values each")
        _check(all(s > 0 for s in self.std), "data.std", "must be positive")


@dataclass(frozen=True)
class AugmentConfig:
    """SSD training augmentation (see :mod:`ssdkit.dataset.augment`); a probability of 0 turns a step off.

    ``crop_min_ious`` lists the IoU-constrained crop samplers (a value < 0 is the unconstrained one),
    e.g. ``[-1, 0.1, 0.3, 0.5, 0.7, 0.9]`` for the SSD paper's six; ``[]`` disables cropping.

    ``copy_paste_*``: mask-based copy-paste (InstaBoost style, :mod:`ssdkit.dataset.copy_paste`, two-stage
    networks with instance masks in the data): with probability ``copy_paste_prob`` (0: off) up to
    ``copy_paste_max_instances`` instances are cut out by their masks, scaled by a factor drawn from
    ``copy_paste_scale = [low, high]``, rotated by up to ``copy_paste_rotation`` degrees and shifted by up to
    ``copy_paste_translate`` times the image size about their box centres, and pasted on top;
    ``copy_paste_mode`` ``"move"`` inpaints the source (InstaBoost), ``"copy"`` keeps it and adds the copy.
    Instances left with less than ``copy_paste_min_visible`` of their area visible are dropped.
    """

    distort_prob: float = 0.5
    brightness_delta: float = 32.0
    contrast_range: Tuple[float, ...] = (0.5, 1.5)
    saturation_range: Tuple[float, ...] = (0.5, 1.5)
    hue_delta: float = 18.0
    expand_prob: float = 0.5
    max_expand_ratio: float = 4.0
    crop_min_ious: Tuple[float, ...] = (-1.0, 0.1, 0.3, 0.5, 0.7, 0.9)
    crop_min_scale: float = 0.3
    crop_aspect_range: Tuple[float, ...] = (0.5, 2.0)
    mirror_prob: float = 0.5
    copy_paste_prob: float = 0.0
    copy_paste_max_instances: int = 3
    copy_paste_scale: Tuple[float, ...] = (0.8, 1.2)
    copy_paste_rotation: float = 5.0
    copy_paste_translate: float = 0.05
    copy_paste_min_visible: float = 0.3
    copy_paste_mode: str = "move"

    def __post_init__(self):
        for key in ("distort_prob", "expand_prob", "mirror_prob"):
            value = getattr(self, key)
            _check(0.0 <= value <= 1.0, "augment." + key, "must be in [0, 1], got %r" % value)
        _check(self.max_expand_ratio >= 1.0, "augment.max_expand_ratio", "must be >= 1")
        _check(0 < self.crop_min_scale <= 1, "augment.crop_min_scale", "must be in (0, 1]")
        for key in ("contrast_range", "saturation_range", "crop_aspect_range"):
            pair = getattr(self, key)
            _check(len(pair) == 2 and 0 < pair[0] <= pair[1], "augment." + key,
                   "must be [low, high] with 0 < low <= high, got %r" % (pair,))
        _check(all(v < 1 for v in self.crop_min_ious), "augment.crop_min_ious", "values must be < 1")
        problem = copy_paste_problem(self.copy_paste_prob, self.copy_paste_max_instances, tuple(self.copy_paste_scale),
                                     self.copy_paste_rotation, self.copy_paste_translate,
                                     self.copy_paste_min_visible, self.copy_paste_mode)
        if problem is not None:
            _check(False, "augment.copy_paste_" + problem[0], problem[1])


@dataclass(frozen=True)
class SolverConfig:
    """Optimiser and learning-rate schedule (warm-up, then multi-step or cosine).

    The linear warm-up lasts ``warmup_iters`` updates if that is > 0, else ``warmup_epochs`` epochs.
    """

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    wd: float = 5e-4
    epochs: int = 240
    warmup_epochs: float = 0.0
    warmup_iters: int = 0
    schedule: str = "multistep"
    lr_steps: Tuple[float, ...] = (160.0, 200.0)
    lr_factor: float = 0.1
    clip_gradient: float = -1.0

    def __post_init__(self):
        _check(self.optimizer in ("sgd", "nag", "adam"), "solver.optimizer", "must be sgd, nag or adam")
        _check(self.lr > 0, "solver.lr", "must be > 0, got %r" % self.lr)
        _check(self.epochs > 0, "solver.epochs", "must be > 0")
        _check(self.warmup_epochs >= 0, "solver.warmup_epochs", "must be >= 0")
        _check(self.warmup_iters >= 0, "solver.warmup_iters", "must be >= 0")
        _check(not (self.warmup_iters > 0 and self.warmup_epochs > 0), "solver.warmup_iters",
               "give warmup_iters or warmup_epochs, not both")
        _check(self.schedule in ("multistep", "cosine"), "solver.schedule",
               "must be multistep or cosine, got %r" % self.schedule)
        _check(list(self.lr_steps) == sorted(self.lr_steps), "solver.lr_steps", "must be increasing")
        _check(0 < self.lr_factor <= 1, "solver.lr_factor", "must be in (0, 1]")


@dataclass(frozen=True)
class RuntimeConfig:
    """Devices, distribution, checkpoints, logging and seeds."""

    gpus: str = ""
    cpus: int = 1
    kv_store: str = "local"
    prefix: str = "output/ssd"
    seed: int = 0
    val_interval: int = 1
    log_interval: int = 20
    resume: bool = False

    def __post_init__(self):
        _check(self.cpus >= 1, "runtime.cpus", "must be >= 1")
        _check(self.kv_store in ("local", "device", "dist_sync", "dist_async", "dist_device_sync", "horovod"),
               "runtime.kv_store", "must be local, device, dist_sync, dist_async, dist_device_sync or horovod")
        _check(self.val_interval >= 1, "runtime.val_interval", "must be >= 1")
        _check(bool(self.prefix), "runtime.prefix", "must not be empty")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: metric, IoU threshold and the score threshold of kept detections."""

    metric: str = "voc07"
    iou_thresh: float = 0.5
    score_thresh: float = 0.01

    def __post_init__(self):
        _check(self.metric in ("voc07", "voc12", "coco"), "eval.metric", "must be voc07, voc12 or coco")
        _check(0 < self.iou_thresh < 1, "eval.iou_thresh", "must be in (0, 1)")
        _check(0 <= self.score_thresh < 1, "eval.score_thresh", "must be in [0, 1)")


@dataclass(frozen=True)
class Config:
    """A whole run: one field per section; the TOML files use the same section names.

    ``fpn`` holds the two-stage detector's settings (:class:`ssdkit.symbol.fpn_config.FPNConfig`);
    SSD networks ignore it.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
