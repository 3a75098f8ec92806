#!/usr/bin/env python
"""Pack a VOC, COCO or list dataset into RecordIO (<target>_{train,val}.{lst,rec,idx} + <target>_classes.txt).

    python tools/prepare_dataset.py --dataset voc --root data/VOCdevkit \\
        --train 2007/trainval,2012/trainval --val 2007/test --target data/rec/voc0712
    python tools/prepare_dataset.py --dataset coco --train annotations/instances_train2017.json \\
        --train-images train2017 --val annotations/instances_val2017.json --val-images val2017 --target data/rec/coco
    python tools/prepare_dataset.py --dataset list --train train.csv --val val.csv --class-names classes.txt \\
        --target data/rec/mine
"""
import argparse
import logging

from ssdkit.dataset.prepare import DATASET_KINDS, prepare_dataset


def _split(text):
    return [part for part in (text or "").split(",") if part]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=DATASET_KINDS, required=True)
    parser.add_argument("--root", help="voc: the VOCdevkit folder")
    parser.add_argument("--train", required=True,
                        help="comma-separated: VOC sets (2007/trainval), COCO json files or list files")
    parser.add_argument("--val", default="", help="the same for the validation split (optional)")
    parser.add_argument("--train-images", help="coco/list: comma-separated image folder(s) of --train")
    parser.add_argument("--val-images", help="coco/list: image folder(s) of --val")
    parser.add_argument("--class-names", help="file with one class name per line (voc default: the 20 VOC)")
    parser.add_argument("--target", required=True, help="output prefix, e.g. data/rec/voc07")
    parser.add_argument("--crowd", choices=("skip", "difficult"), default="skip", help="coco iscrowd objects")
    parser.add_argument("--check-images", choices=("decode", "header", "none"), default="decode")
    parser.add_argument("--no-difficult", action="store_true", help="pack 5-column labels without difficult")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    parser.add_argument("--max-side", type=int, help="downscale images whose longer side is larger")
    parser.add_argument("--workers", type=int, default=2, help="threads checking images")
    parser.add_argument("--strict", action="store_true",
                        help="refuse damaged or inconsistent records instead of skipping them with a count")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = prepare_dataset(
        args.dataset, args.target, train=_split(args.train), val=_split(args.val), root=args.root,
        train_image_dirs=_split(args.train_images) or None, val_image_dirs=_split(args.val_images) or None,
        class_names=args.class_names, crowd=args.crowd, check_images=args.check_images,
        with_difficult=not args.no_difficult, quality=args.quality, max_side=args.max_side, workers=args.workers,
        strict=args.strict)
    for split, res in results.items():
        print("%s: %d images, %d objects -> %s" % (split, res.num_images, res.num_objects, res.rec))


if __name__ == "__main__":
    main()
