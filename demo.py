"""Detect objects in an image or a folder of images and save drawings and json.

    python demo.py --prefix output/ssd --images photo.jpg --output output/demo
    python demo.py --deploy output/deploy/ssd --images data/synthetic/VOCdevkit/VOC2007/JPEGImages --limit 8
    python demo.py --deploy output/deploy/fpn --images photo.jpg       # FPN models alike
    python demo.py --onnx output/deploy/ssd.onnx --images photo.jpg    # deploy.py --format onnx, onnxruntime
    python demo.py --prefix output/mask --images photo.jpg             # a mask model: masks filled in the drawings

A mask model's (``fpn.mask = true``) masks are drawn translucently in their class colours and written to
detections.json as COCO RLE (``"mask": {"size": [H, W], "counts": ...}``, pycocotools.mask.decode reads it).

An image that cannot be read is skipped with a message on stderr; detections.json holds the others
and the last line counts the skipped ones. Bad input (a missing folder, model files that do not fit
their graph) ends with ``error: ...`` and exit status 2.
"""
import argparse
import json
import os
import sys

from ssdkit.cli import add_inference_flags, epoch_arg, inference_from_args, run_script
from ssdkit.dataset.image import ImageError, load_image_rgb
from ssdkit.detector import Detector, list_images
from ssdkit.errors import InputError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--prefix", help="training prefix")
    group.add_argument("--deploy", help="deploy prefix (deploy.py --output)")
    group.add_argument("--onnx", metavar="FILE", help="ONNX file (deploy.py --format onnx), run by onnxruntime")
    parser.add_argument("--epoch", type=epoch_arg, default=None, help="epoch or 'best' (training prefixes)")
    parser.add_argument("--images", required=True, nargs="+", help="image files and/or folders of images")
    parser.add_argument("--output", default="output/demo", help="folder for PNG drawings and detections.json")
    parser.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")
    add_inference_flags(parser, defaults={
        "--score-thresh": "the model's score threshold and the least score drawn (default 0.5)",
        "--max-detections": "detection rows per image (default: 100 for a training prefix, the deploy "
                            "model's own; -1: SSD one per anchor, FPN as trained)"})
    args = parser.parse_args(argv)
    inference = inference_from_args(args)
    score_thresh = 0.5 if inference.score_thresh is None else inference.score_thresh
    inference = inference.merged(score_thresh=score_thresh)
    paths = [p for item in args.images for p in list_images(item)]
    if args.limit:
        paths = paths[:args.limit]
    if not paths:
        raise InputError("no image files in %s" % ", ".join(args.images))
    if args.onnx and args.epoch is not None:
        parser.error("--epoch applies to training prefixes, not to --onnx")
    detector = Detector(args.onnx or args.deploy or args.prefix, epoch=args.epoch, deploy=bool(args.deploy),
                        onnx=bool(args.onnx), score_thresh=score_thresh, inference=inference)
    report, skipped = {}, []
    os.makedirs(args.output, exist_ok=True)
    for path in paths:
        try:
            image = load_image_rgb(path)
        except ImageError as err:
            skipped.append(path)
            print("skipped: %s" % err, file=sys.stderr)
            continue
        dets = detector.detect(image)
        name = os.path.splitext(os.path.basename(path))[0]
        out = detector.save_drawing(image, dets, os.path.join(args.output, name + "_det.png"))
        report[path] = detector.to_json(dets)
        print("%s: %d objects -> %s" % (path, len(dets), out))
    json_path = os.path.join(args.output, "detections.json")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    print("detections of %d image(s) in %s; %d unreadable image(s) skipped" % (len(report), json_path, len(skipped)))
    if not report:
        raise InputError("none of the %d image(s) could be read (see the messages above)" % len(paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_script(main))
