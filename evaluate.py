"""Evaluate a detector: VOC07 11-point and VOC12 area mAP, COCO metrics (pycocotools), per-class AP
table, PR-curve plot and detections as COCO results json.

    python evaluate.py --prefix output/ssd --dataset voc --data-root ~/VOCdevkit --val 2007/test
    python evaluate.py --deploy output/deploy/ssd --config tiny_256_synthetic

The evaluation itself is :func:`ssdkit.api.evaluate.evaluate_detector`.
"""
import logging

from ssdkit.api.evaluate import evaluate_detector
from ssdkit.cli import config_from_args, epoch_arg, make_parser, run_script


def main(argv=None):
    parser = make_parser("Evaluate an SSD or FPN detector.", training=False)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--prefix", help="training prefix (train.py --prefix); default from the config")
    group.add_argument("--deploy", help="deploy prefix (deploy.py --output)")
    parser.add_argument("--epoch", type=epoch_arg, default=None,
                        help="epoch number or 'best' (default: best, else last)")
    parser.add_argument("--output", default=None, help="folder for tables, plots and json (default PREFIX-eval)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = config_from_args(args, training=False)
    prefix = args.deploy or args.prefix or config.runtime.prefix
    result = evaluate_detector(config, prefix, epoch=args.epoch, deploy=bool(args.deploy),
                               output_dir=args.output, progress=not args.no_progress)
    with open(result["output_dir"] + "/ap_table.txt") as f:
        print(f.read().rstrip())
    print("VOC07 mAP: %.4f   VOC12 mAP: %.4f" % (result["voc07"], result["voc12"]))
    if "coco" in result:
        print("COCO AP: %.4f   AP50: %.4f   AP75: %.4f" % (result["coco"]["AP"], result["coco"]["AP50"],
                                                         result["coco"]["AP75"]))
    print("tables, PR curves and COCO results json in %s" % result["output_dir"])
    return 0


if __name__ == "__main__":
    raise SystemExit(run_script(main))
