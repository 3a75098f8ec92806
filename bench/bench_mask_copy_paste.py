"""Mask R-CNN preset with and without mask-based copy-paste, same budget (issue 20).

Trains ``mask_lite_synthetic`` (3 epochs of the synthetic training split, seeded) once as it is and once with
``augment.copy_paste_prob`` set, then evaluates both on the synthetic test split: VOC07 box mAP, COCO box AP
and COCO mask AP (pycocotools). One variant per call, so the two can run side by side::

    python tools/make_synthetic_dataset.py data/synthetic --num-train 6000 --num-test 300 --num-val 200 --seed 0
    OMP_NUM_THREADS=1 python bench/bench_mask_copy_paste.py --variant plain --out output/bench_mask
    OMP_NUM_THREADS=1 python bench/bench_mask_copy_paste.py --variant copy_paste --out output/bench_mask

Each call writes ``<out>/<variant>.json`` (settings, training seconds, metrics); ``--table`` prints the
markdown table of the variants found in ``<out>``.
"""
import argparse
import json
import os
import time

from ssdkit.api.evaluate import evaluate_detector
from ssdkit.api.train import train_detector
from ssdkit.config import apply_overrides, load_config

PRESET = "mask_lite_synthetic"
VARIANTS = {
    "plain": {},
    "copy_paste": {"augment.copy_paste_prob": 0.5},
}
"""Variant name -> config overrides on top of the preset (everything else, the budget included, equal)."""


def run_variant(name, data_root, out_dir, epochs=None):
    """Train and evaluate one variant; returns the record written to ``<out_dir>/<name>.json``."""
    overrides = dict(VARIANTS[name], **{"data.root": data_root,
                                         "runtime.prefix": os.path.join(out_dir, name, "mask")})
    if epochs is not None:
        overrides["solver.epochs"] = int(epochs)
    config = apply_overrides(load_config(PRESET), overrides)
    start = time.time()
    train_detector(config, progress=False)
    trained = time.time() - start
    test = apply_overrides(config, {"data.val": ["2007/test"]})
    metrics = evaluate_detector(test, config.runtime.prefix, output_dir=os.path.join(out_dir, name, "eval"),
                                progress=False)
    record = {"variant": name, "overrides": VARIANTS[name], "epochs": config.solver.epochs,
              "train_seconds": round(trained, 1), "load_average": os.getloadavg(),
              "voc07": metrics["voc07"], "coco_box": metrics.get("coco"), "coco_segm": metrics.get("coco_segm")}
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(record, f, indent=1)
    return record


def table(out_dir):
    """Markdown rows of the variants recorded in ``out_dir``."""
    lines = ["| variant | epochs | training s | VOC07 box mAP | COCO box AP | COCO mask AP | mask AP50 | mask AP75 |",
             "|---|---|---|---|---|---|---|---|"]
    for name in VARIANTS:
        path = os.path.join(out_dir, name + ".json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            r = json.load(f)
        segm = r["coco_segm"] or {}
        lines.append("| %s %s | %d | %.0f | %.3f | %.3f | %.3f | %.3f | %.3f |" % (
            name, r["overrides"] or "", r["epochs"], r["train_seconds"], r["voc07"], r["coco_box"]["AP"],
            segm.get("AP", float("nan")), segm.get("AP50", float("nan")), segm.get("AP75", float("nan"))))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--data-root", default="data/synthetic/VOCdevkit")
    parser.add_argument("--out", default="output/bench_mask")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (both variants alike)")
    parser.add_argument("--table", action="store_true", help="print the table of the recorded variants")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.data_root, args.out, args.epochs), indent=1))
    if args.table or not args.variant:
        print(table(args.out))


if __name__ == "__main__":
    main()
