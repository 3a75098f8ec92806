"""Train a detector (SSD or FPN: `--network fpn_resnet18` or `--config fpn_resnet18_synthetic`).

    python train.py --network resnet50 --data-shape 512 --dataset voc --data-root ~/VOCdevkit \
        --train 2007/trainval 2012/trainval --val 2007/test --prefix output/ssd_resnet50_512
    python train.py --config config/presets/tiny_256_synthetic.toml     # a preset, flags override it
    python train.py --config fpn_resnet18_synthetic --resize-short 128 --resize-long 160   # two-stage FPN

Every flag maps onto a config key (see ``--help``); the training itself is
:func:`ssdkit.api.train.train_detector`.
"""
import logging

from ssdkit.api.train import train_detector
from ssdkit.cli import builtin_data_from_env, config_from_args, make_parser, run_script


def main(argv=None):
    parser = make_parser("Train an SSD or FPN detector (MXNet Module, ssdkit operators).", training=True)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in CI logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = config_from_args(args, training=True)
    result = train_detector(config, progress=not args.no_progress, builtin=builtin_data_from_env())
    best = result["best"]
    print("finished epoch %d; best validation %s; checkpoints: %s-*" % (
        result["epoch"], "n/a" if best is None else "%.4f" % best, config.runtime.prefix))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_script(main))
