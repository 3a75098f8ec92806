"""Configuration of a training / evaluation run: one frozen dataclass per section.

Every default for augmentation, schedule and evaluation lives here (and in the preset files),
not in the scripts. Values are validated in ``__post_init__`` with messages that name the key.
"""
from dataclasses import dataclass, field
from typing import Tuple


def _check(cond, key, message):
    if not cond:
        raise ValueError("config key '%s': %s" % (key, message))


@dataclass(frozen=True)
class ModelConfig:
    """The detector: network name and input size, classes, inference settings, initial weights.

    ``pretrained``: ImageNet weights of the base network (a GluonCV ``.params`` file);
    ``finetune``: a whole detector to start from (``prefix-NNNN.params`` of ssdkit or a GluonCV SSD
    zoo file), heads of another class count are re-initialised; ``freeze``: regular expressions of
    parameter names kept fixed.
    """

    network: str = "tiny"
    data_shape: int = 256
    class_names: Tuple[str, ...] = ()
    nms_thresh: float = 0.45
    nms_topk: int = 400
    force_suppress: bool = False
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
        _check(0 < self.nms_thresh <= 1, "model.nms_thresh", "must be in (0, 1], got %r" % self.nms_thresh)
        _check(self.nms_topk == -1 or self.nms_topk > 0, "model.nms_topk", "must be > 0 or -1")
        _check(len(set(self.class_names)) == len(self.class_names), "model.class_names",
               "has duplicates: %r" % (self.class_names,))


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how batches are formed.

    ``format``: ``voc`` (``root`` = VOCdevkit, ``train``/``val`` = "2007/trainval" style sets),
    ``coco`` (``train``/``val`` = annotation json files, ``root`` = image folder prefix),
    ``list`` (``train``/``val`` = list files), ``rec`` (``train``/``val`` = .rec files).
    """

    format: str = "voc"
    root: str = ""
    train: Tuple[str, ...] = ()
    val: Tuple[str, ...] = ()
    batch_size: int = 16
    max_objects: int = 64
    num_workers: int = 2
    mean: Tuple[float, ...] = (123.68, 116.28, 103.53)
    std: Tuple[float, ...] = (58.395, 57.12, 57.375)

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
    """SSD training augmentation; probabilities in [0, 1]."""

    photometric_prob: float = 0.5
    expand_prob: float = 0.5
    max_expand_ratio: float = 4.0
    crop_prob: float = 0.9
    mirror_prob: float = 0.5

    def __post_init__(self):
        for key in ("photometric_prob", "expand_prob", "crop_prob", "mirror_prob"):
            value = getattr(self, key)
            _check(0.0 <= value <= 1.0, "augment." + key, "must be in [0, 1], got %r" % value)
        _check(self.max_expand_ratio >= 1.0, "augment.max_expand_ratio", "must be >= 1")


@dataclass(frozen=True)
class SolverConfig:
    """Optimiser and learning-rate schedule (warm-up, then multi-step or cosine)."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    wd: float = 5e-4
    epochs: int = 240
    warmup_epochs: float = 0.0
    schedule: str = "multistep"
    lr_steps: Tuple[float, ...] = (160.0, 200.0)
    lr_factor: float = 0.1
    clip_gradient: float = -1.0

    def __post_init__(self):
        _check(self.optimizer in ("sgd", "nag", "adam"), "solver.optimizer", "must be sgd, nag or adam")
        _check(self.lr > 0, "solver.lr", "must be > 0, got %r" % self.lr)
        _check(self.epochs > 0, "solver.epochs", "must be > 0")
        _check(self.warmup_epochs >= 0, "solver.warmup_epochs", "must be >= 0")
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
        _check(self.kv_store in ("local", "device", "dist_sync", "dist_async", "dist_device_sync"),
               "runtime.kv_store", "must be local, device, dist_sync, dist_async or dist_device_sync")
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
    """A whole run: one field per section; the TOML files use the same section names."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
