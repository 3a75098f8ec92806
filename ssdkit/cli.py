"""Command-line flags of the scripts, mapped onto config keys (``section.key``), and how a script ends.

Flags only override what they name: a flag not given leaves the value of ``--config`` (or the
default) alone. Every script parses with these helpers so flags mean the same everywhere, and runs
its ``main`` through :func:`run_script`, so a user error ends every script the same way.
"""
import argparse
import os
import sys

from ssdkit.errors import UserError, user_input

# flag -> (config key, argparse kwargs)
_COMMON = {
    "--network": ("model.network", dict(type=str, help="base network, e.g. tiny, vgg16_reduced, resnet50; "
                                                       "fpn_resnet18 / fpn_resnet50 / fpn_lite for the two-stage FPN")),
    "--data-shape": ("model.data_shape", dict(type=int, help="SSD input size in pixels (square)")),
    "--test-shape": ("model.test_shape", dict(type=int, help="SSD input size of validation, evaluation and "
                                                             "deploy (0: data_shape)")),
    "--resize-short": ("model.resize_short", dict(type=int, help="FPN: short image side after resizing")),
    "--resize-long": ("model.resize_long", dict(type=int, help="FPN: upper bound of the long image side")),
    "--class-names": ("model.class_names", dict(type=lambda s: tuple(c.strip() for c in s.split(",") if c.strip()),
                                                help="comma-separated class names")),
    "--num-class": ("model.num_classes", dict(type=int, help="number of object classes")),
    "--dataset": ("data.format", dict(choices=["voc", "coco", "list", "rec"], help="dataset format")),
    "--data-root": ("data.root", dict(type=str, help="VOCdevkit folder / COCO image folder")),
    "--val": ("data.val", dict(type=str, nargs="+", help="validation sets / files")),
    "--batch-size": ("data.batch_size", dict(type=int, help="images per batch (per worker)")),
    "--num-workers": ("data.num_workers", dict(type=int, help="data loading workers")),
    "--strict": ("data.strict", dict(action="store_const", const=True,
                                     help="refuse damaged or inconsistent data records instead of skipping "
                                          "them with a count")),
    "--gpus": ("runtime.gpus", dict(type=str, help="GPU ids, e.g. 0,1 (default: CPU)")),
    "--cpus": ("runtime.cpus", dict(type=int, help="number of CPU contexts for data parallelism")),
}

_TRAIN = {
    "--train": ("data.train", dict(type=str, nargs="+", help="training sets / files")),
    "--lr": ("solver.lr", dict(type=float, help="base learning rate")),
    "--momentum": ("solver.momentum", dict(type=float, help="SGD momentum")),
    "--wd": ("solver.wd", dict(type=float, help="weight decay")),
    "--epochs": ("solver.epochs", dict(type=int, help="epochs to train")),
    "--warmup-epochs": ("solver.warmup_epochs", dict(type=float, help="linear warm-up length")),
    "--schedule": ("solver.schedule", dict(choices=["multistep", "cosine"], help="lr schedule")),
    "--lr-steps": ("solver.lr_steps", dict(type=lambda s: tuple(float(v) for v in s.split(",")),
                                           help="epochs where the lr is multiplied by lr_factor, e.g. 160,200")),
    "--pretrained": ("model.pretrained", dict(type=str, help="ImageNet weights of the base network (file)")),
    "--finetune": ("model.finetune", dict(type=str, help="detector weights to start from (file)")),
    "--overlap-threshold": ("model.overlap_threshold",
                            dict(type=float, help="SSD targets: IoU that makes an anchor a positive")),
    "--negative-mining-ratio": ("model.negative_mining_ratio",
                                dict(type=float, help="SSD targets: hard negatives per positive (-1: none)")),
    "--freeze": ("model.freeze", dict(type=str, nargs="+", help="regexes of parameter names to freeze")),
    "--kv-store": ("runtime.kv_store", dict(choices=["local", "device", "dist_sync", "dist_async",
                                                     "dist_device_sync", "horovod"],
                                            help="gradient aggregation (horovod: launch with horovodrun)")),
    "--nms-thresh": ("model.nms_thresh", dict(type=float, help="NMS IoU threshold of the detections (FPN "
                                                               "networks: fpn.test_nms_threshold)")),
    "--prefix": ("runtime.prefix", dict(type=str, help="checkpoint prefix, e.g. output/ssd")),
    "--seed": ("runtime.seed", dict(type=int, help="random seed")),
    "--val-interval": ("runtime.val_interval", dict(type=int, help="validate every k epochs")),
    "--resume": ("runtime.resume", dict(action="store_const", const=True,
                                        help="continue from the last checkpoint of --prefix")),
}


def add_config_flags(parser, *, training):
    """Add ``--config`` and the flags of :data:`_COMMON` (and :data:`_TRAIN` when ``training``)."""
    parser.add_argument("--config", type=str, default=None,
                        help="TOML config file or preset name (see ssdkit.config.list_presets())")
    table = dict(_COMMON, **(_TRAIN if training else {}))
    for flag, (key, kwargs) in table.items():
        parser.add_argument(flag, dest=_dest(flag), default=None,
                            **dict(kwargs, help="%s [config: %s]" % (kwargs.get("help", ""), key)))
    return parser


def overrides_from_args(args, *, training):
    """``{"section.key": value}`` for every config flag given on the command line."""
    table = dict(_COMMON, **(_TRAIN if training else {}))
    out = {}
    for flag, (key, _kwargs) in table.items():
        value = getattr(args, _dest(flag), None)
        if value is not None:
            out[key] = tuple(value) if isinstance(value, list) else value
    return out


def config_from_args(args, *, training):
    """Load ``--config`` (or defaults) and apply the flags given.

    With ``training``, a flag's key may depend on the network's family (``--nms-thresh`` sets
    ``fpn.test_nms_threshold`` of FPN networks) and a flag of the other family is refused (see
    :func:`ssdkit.api.family.family_overrides`).
    A bad config file, key or value raises :class:`~ssdkit.errors.InputError` (or
    :class:`~ssdkit.errors.MissingFileError`) naming the key; :func:`run_script` prints it as
    ``error: ...`` with exit code 2.
    """
    from ssdkit.api.family import family_overrides
    from ssdkit.config import apply_overrides, load_config

    with user_input():
        base = load_config(args.config)
        overrides = overrides_from_args(args, training=training)
        if training:    # evaluate checks its model flags against the model's meta file instead
            network = apply_overrides(base, overrides).model.network
            overrides = family_overrides(network, overrides, flags=_flags_by_key(training))
        config = apply_overrides(base, overrides)
        images = _smoke_images()
    if images:
        from ssdkit.api.builtin_data import smoke_test_caps

        config = smoke_test_caps(config, images)
    return config


SMOKE_ENV = "SSDKIT_SMOKE_IMAGES"
"""Environment variable of smoke tests: ``N`` runs the scripts' defaults cut down (one epoch of batches of
at most N images; the built-in synthetic dataset, when no data is named, written with N images per split)."""


def _smoke_images():
    text = os.environ.get(SMOKE_ENV, "")
    if not text:
        return 0
    if not text.isdigit() or int(text) < 1:
        raise ValueError("%s must be a positive number of images, got %r" % (SMOKE_ENV, text))
    return int(text)


def builtin_data_from_env():
    """The :class:`ssdkit.api.builtin_data.BuiltinData` of a script: the defaults, or N images per split
    under :data:`SMOKE_ENV`."""
    from ssdkit.api.builtin_data import BuiltinData

    with user_input():
        images = _smoke_images()
    return BuiltinData(num_train=images, num_test=images) if images else BuiltinData()


# --- inference settings of a trained model (evaluate, deploy, demo) ---------------------------------------
_INFERENCE = {
    "--nms-thresh": ("nms_thresh", dict(type=float, help="NMS IoU threshold (default: the model's)")),
    "--nms-topk": ("nms_topk", dict(type=int, help="candidates kept before NMS, -1 all (SSD models only; "
                                                  "default: the model's)")),
    "--score-thresh": ("score_thresh", dict(type=float, help="the model's score threshold: candidates below it "
                                                           "are dropped before NMS (default: the model's)")),
    "--max-detections": ("max_detections", dict(type=int, help="detection rows per image (-1: SSD one per "
                                                              "anchor, FPN as trained)")),
}


def add_inference_flags(parser, *, skip=(), defaults=None):
    """Add the flags of :class:`ssdkit.api.inference.InferenceOverrides` (those not in ``skip``) to
    ``parser``; ``defaults`` (``{flag: help text}``) describes what an absent flag means."""
    for flag, (_field, kwargs) in _INFERENCE.items():
        if flag in skip:
            continue
        help_text = (defaults or {}).get(flag, kwargs["help"])
        parser.add_argument(flag, dest=_dest(flag), default=None, **dict(kwargs, help=help_text))
    return parser


def inference_from_args(args):
    """The :class:`ssdkit.api.inference.InferenceOverrides` of the inference flags given (others None);
    a value out of range raises :class:`~ssdkit.errors.InputError`."""
    from ssdkit.api.inference import InferenceOverrides

    with user_input():
        return InferenceOverrides(**{field: getattr(args, _dest(flag), None)
                                     for flag, (field, _kwargs) in _INFERENCE.items()})


def _flags_by_key(training):
    table = dict(_COMMON, **(_TRAIN if training else {}))
    return {key: flag for flag, (key, _kwargs) in table.items()}


def run_script(main, argv=None):
    """Run a script's ``main(argv)`` and return its exit status (for ``raise SystemExit(...)``).

    A :class:`~ssdkit.errors.UserError` (bad config, bad data, missing files, unknown class names,
    parameters that do not fit the graph) is printed as one message ``error: <message>`` on stderr and
    gives exit status 2, without a traceback. Any other exception is a defect and propagates with its
    traceback (status 1). Set ``SSDKIT_TRACEBACK=1`` to see the traceback of user errors too.
    """
    try:
        return main(argv)
    except UserError as err:
        if os.environ.get("SSDKIT_TRACEBACK"):
            raise
        print("error: %s" % err, file=sys.stderr)
        return 2


def epoch_arg(text):
    """``--epoch`` of the scripts: an epoch number or ``best`` (argparse ``type``)."""
    if text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an epoch number or 'best', got %r" % text) from None


def _dest(flag):
    return flag.lstrip("-").replace("-", "_")


def make_parser(description, *, training):
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_config_flags(parser, training=training)
