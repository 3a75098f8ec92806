"""Write a deploy model (detections only, with NMS) from a training checkpoint.

    python deploy.py                  # the default training prefix output/ssd -> output/deploy/ssd
    python deploy.py --prefix output/ssd --output output/deploy/ssd            # needs ssdkit to run
    python deploy.py --prefix output/ssd --output output/deploy/ssd_portable --portable   # plain MXNet
    python deploy.py --prefix output/fpn --output output/deploy/fpn          # FPN (no --portable: no contrib ops)
    # INT8 (oneDNN), calibrated on 64 of the user's images (SSD networks only)
    python deploy.py --prefix output/ssd --output output/deploy/ssd_int8 --int8 \
        --calib-data data/synthetic/VOCdevkit/VOC2007/JPEGImages --calib-images 64 --calib-mode naive
    # one ONNX file (anchors, decoding and NMS inside; onnxruntime runs it; SSD networks only)
    python deploy.py --prefix output/ssd --output output/deploy/ssd --format onnx    # -> output/deploy/ssd.onnx
    # a GluonCV SSD zoo file on disk (ssdkit.weights.ZOO names) -> an ssdkit deploy model
    python deploy.py --gluoncv-zoo ssd_512_resnet50_v1_voc \
        --gluoncv-params ~/models/ssd_512_resnet50_v1_voc-9c8b225a.params --output output/deploy/gcv_ssd512
    # a GluonCV Faster (or Mask) R-CNN FPN zoo file (ssdkit.weights_fpn.ZOO names; GluonCV's 800/1333 resize
    # unless --gluoncv-resize SHORT LONG)
    python deploy.py --gluoncv-zoo faster_rcnn_fpn_resnet50_v1b_coco \
        --gluoncv-params ~/models/faster_rcnn_fpn_resnet50_v1b_coco-23357274.params --output output/deploy/gcv_fpn50

See :func:`ssdkit.api.deploy.deploy_model` for the files and how to load them. Parameters that do not
fit the meta's graph (e.g. a checkpoint trained with another class count) are refused before anything
is written: ``error: ...`` and exit status 2.
"""
import argparse
import os

from ssdkit.api.deploy import FORMATS, deploy_gluoncv_zoo, deploy_model
from ssdkit.api.deploy import deploy_gluoncv_fpn
from ssdkit.api.quantize import CALIB_MODES, Calibration
from ssdkit.cli import add_inference_flags, epoch_arg, inference_from_args, run_script
from ssdkit.config.schema import RuntimeConfig
from ssdkit.weights_fpn import ZOO as FPN_ZOO


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prefix", help="training prefix (train.py --prefix; default: train.py's default, %s)"
                        % RuntimeConfig().prefix)
    source.add_argument("--gluoncv-zoo", metavar="NAME",
                        help="GluonCV SSD, Faster or Mask R-CNN FPN zoo name of --gluoncv-params (e.g. "
                             "ssd_512_resnet50_v1_voc, faster_rcnn_fpn_resnet50_v1b_coco, "
                             "mask_rcnn_fpn_resnet50_v1b_coco; the lists are "
                             "ssdkit.weights.ZOO and ssdkit.weights_fpn.ZOO)")
    parser.add_argument("--gluoncv-params", metavar="FILE",
                        help="the GluonCV .params file (with --gluoncv-zoo)")
    parser.add_argument("--gluoncv-resize", type=int, nargs=2, metavar=("SHORT", "LONG"),
                        help="with an FPN --gluoncv-zoo: the aspect-preserving resize of the deploy model "
                             "(default GluonCV's 800 1333)")
    parser.add_argument("--separate-heads", action="store_true",
                        help="with --gluoncv-zoo: keep GluonCV's two predictor convolutions per layer "
                             "instead of ssdkit's fused heads (the same detections; fused is faster on "
                             "the CPU)")
    parser.add_argument("--output", help="deploy prefix to write (default: DIR/deploy/NAME of the training "
                                         "prefix DIR/NAME, e.g. output/deploy/ssd)")
    parser.add_argument("--epoch", type=epoch_arg, default=None, help="epoch or 'best' (default: best, else last)")
    parser.add_argument("--format", choices=FORMATS, default="mxnet",
                        help="mxnet: OUTPUT-symbol.json, -0000.params and -meta.json (default); onnx: one file "
                             "OUTPUT.onnx run by onnxruntime (evaluate.py / demo.py --onnx; SSD networks only, "
                             "needs the onnx extra: pip install -r requirements-onnx.txt)")
    parser.add_argument("--portable", action="store_true",
                        help="use MXNet's built-in contrib operators (runs without ssdkit; SSD networks only)")
    int8 = parser.add_argument_group("INT8 quantization (oneDNN; SSD networks only, not with --portable)")
    int8.add_argument("--int8", action="store_true",
                      help="quantize the deploy graph to INT8, calibrated on --calib-data")
    int8.add_argument("--calib-data", metavar="DIR",
                      help="folder of calibration images (or one image), read with the model's inference "
                           "transform; the user's own images, e.g. the training images")
    int8.add_argument("--calib-images", type=int, metavar="N", help="calibration images drawn from --calib-data")
    int8.add_argument("--calib-mode", choices=CALIB_MODES, default="naive",
                      help="naive: min/max ranges (default); entropy: KL-optimal ranges, which clip outliers")
    int8.add_argument("--quantize-heads", action="store_true",
                      help="quantize the prediction heads too (default: they stay fp32)")
    add_inference_flags(parser, defaults={
        "--max-detections": "detection rows per image (default 100; -1: SSD one per anchor, FPN as trained; "
                            "not with --portable, whose graph has one row per anchor)"})
    args = parser.parse_args(argv)
    inference = inference_from_args(args)
    if bool(args.gluoncv_zoo) != bool(args.gluoncv_params):
        parser.error("--gluoncv-zoo and --gluoncv-params go together")
    if args.gluoncv_zoo and not args.output:
        parser.error("--gluoncv-zoo needs --output")
    if args.gluoncv_resize and args.gluoncv_zoo not in FPN_ZOO:
        parser.error("--gluoncv-resize goes with a Faster R-CNN FPN --gluoncv-zoo (%s)" % ", ".join(sorted(FPN_ZOO)))
    calibration = None
    if args.int8:
        if not args.calib_data or args.calib_images is None:
            parser.error("--int8 needs --calib-data DIR and --calib-images N (the images that set the int8 ranges)")
        if args.calib_images < 1:
            parser.error("--calib-images must be >= 1, got %d" % args.calib_images)
        calibration = Calibration(data=args.calib_data, images=args.calib_images, mode=args.calib_mode,
                                  exclude_heads=not args.quantize_heads)
    elif args.calib_data or args.calib_images is not None or args.quantize_heads:
        parser.error("--calib-data, --calib-images and --quantize-heads go with --int8")
    prefix = args.prefix or RuntimeConfig().prefix
    output = args.output or os.path.join(os.path.dirname(prefix), "deploy", os.path.basename(prefix))
    if args.gluoncv_zoo in FPN_ZOO:
        written = deploy_gluoncv_fpn(args.gluoncv_params, args.gluoncv_zoo, output, resize=args.gluoncv_resize,
                                     portable=args.portable, inference=inference, int8=calibration,
                                     format=args.format)
    elif args.gluoncv_zoo:
        written = deploy_gluoncv_zoo(args.gluoncv_params, args.gluoncv_zoo, output,
                                     fused_heads=not args.separate_heads, portable=args.portable,
                                     inference=inference, int8=calibration, format=args.format)
    else:
        written = deploy_model(prefix, output, epoch=args.epoch, portable=args.portable,
                               inference=inference, int8=calibration, format=args.format)
    if args.format == "onnx":
        print("wrote %s (%d anchors folded, opset %d)" % (written["onnx"], written["num_anchors"], written["opset"]))
        return 0
    print("wrote %s and %s (%d parameters)" % (written["symbol"], written["params"], written["num_params"]))
    if calibration is not None:
        print("int8: %d quantized convolutions, calibrated (%s) on %d images"
              % (written["quantized_layers"], calibration.mode, written["calib_images"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_script(main))
