#!/usr/bin/env python
"""Write the synthetic shapes dataset (Pascal VOC + COCO json), see ssdkit.dataset.synthetic.

    python tools/make_synthetic_dataset.py data/synthetic --num-train 2000 --num-test 500 --seed 0
"""
import argparse
import os

from ssdkit.dataset.synthetic import make_synthetic_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="output folder")
    parser.add_argument("--num-train", type=int, default=2000, help="images in the trainval split")
    parser.add_argument("--num-test", type=int, default=500, help="images in the test split")
    parser.add_argument("--num-val", type=int, default=0,
                        help="images in a held-out val split (for validation during training)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-size", type=int, default=256, help="smallest image side")
    parser.add_argument("--max-size", type=int, default=400, help="largest image side")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="rendering processes (the files do not depend on it)")
    args = parser.parse_args()
    data = make_synthetic_dataset(args.root, num_train=args.num_train, num_test=args.num_test,
                                  num_val=args.num_val, seed=args.seed,
                                  image_size=(args.min_size, args.max_size), jpeg_quality=args.jpeg_quality,
                                  workers=args.workers)
    print("wrote %d trainval + %d test + %d val images to %s (VOC root %s, classes %s)"
          % (args.num_train, args.num_test, args.num_val, data.root, data.devkit, ", ".join(data.class_names)))


if __name__ == "__main__":
    main()
