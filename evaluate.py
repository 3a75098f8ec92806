"""Evaluate a detector: VOC07 11-point and VOC12 area mAP, COCO metrics (pycocotools), per-class AP
table, PR-curve plot and detections as COCO results json.

    python evaluate.py --prefix output/ssd --dataset voc --data-root ~/VOCdevkit --val 2007/test
    python evaluate.py --deploy output/deploy/ssd --config tiny_256_synthetic
    python evaluate.py --onnx output/deploy/ssd.onnx --config tiny_256_synthetic    # onnxruntime

A mask model (``fpn.mask = true``) also gets COCO mask AP (``iouType="segm"``), with its masks as RLE in
coco_segm_results.json next to coco_ground_truth.json. The evaluation itself is
:func:`ssdkit.api.evaluate.evaluate_detector`.
"""
import logging

from ssdkit.api.evaluate import evaluate_detector
from ssdkit.cli import (add_inference_flags, builtin_data_from_env, config_from_args, epoch_arg,
                        inference_from_args, make_parser, overrides_from_args, run_script)

MODEL_KEYS = ("model.network", "model.data_shape", "model.test_shape", "model.resize_short", "model.resize_long",
              "model.class_names", "model.num_classes")
"""Config keys of the model flags: the model's meta file fixes them, so evaluate checks them against it
(``--test-shape``, the SSD evaluation size, is honoured)."""


def main(argv=None):
    parser = make_parser("Evaluate an SSD or FPN detector. The network, input size and classes are the "
                         "model's own (its meta file): --network, --data-shape, --resize-short, "
                         "--resize-long, --class-names and --num-class must match them.", training=False)
    add_inference_flags(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--prefix", help="training prefix (train.py --prefix); default from the config")
    group.add_argument("--deploy", help="deploy prefix (deploy.py --output)")
    group.add_argument("--onnx", metavar="FILE", help="ONNX file (deploy.py --format onnx), run by onnxruntime")
    parser.add_argument("--epoch", type=epoch_arg, default=None,
                        help="epoch number or 'best' (default: best, else last)")
    parser.add_argument("--output", default=None, help="folder for tables, plots and json (default PREFIX-eval)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = config_from_args(args, training=False)
    expect = {k: v for k, v in overrides_from_args(args, training=False).items() if k in MODEL_KEYS}
    if args.onnx and args.epoch is not None:
        parser.error("--epoch applies to training prefixes, not to --onnx")
    prefix = args.onnx or args.deploy or args.prefix or config.runtime.prefix
    result = evaluate_detector(config, prefix, epoch=args.epoch, deploy=bool(args.deploy), onnx=bool(args.onnx),
                               output_dir=args.output, progress=not args.no_progress,
                               inference=inference_from_args(args), expect=expect,
                               builtin=builtin_data_from_env())
    with open(result["output_dir"] + "/ap_table.txt") as f:
        print(f.read().rstrip())
    print("VOC07 mAP: %.4f   VOC12 mAP: %.4f" % (result["voc07"], result["voc12"]))
    if "coco" in result:
        print("COCO AP: %.4f   AP50: %.4f   AP75: %.4f" % (result["coco"]["AP"], result["coco"]["AP50"],
                                                         result["coco"]["AP75"]))
    if "coco_segm" in result:
        segm = result["coco_segm"]
        print("COCO mask AP: %.4f   AP50: %.4f   AP75: %.4f" % (segm["AP"], segm["AP50"], segm["AP75"]))
    print("tables, PR curves and COCO results json in %s" % result["output_dir"])
    return 0


if __name__ == "__main__":
    raise SystemExit(run_script(main))
