#!/usr/bin/env bash
# README's first command: set up .venv, generate the synthetic dataset, train a small SSD on the CPU,
# evaluate it (prints VOC07 mAP), freeze a deploy model and draw detections on test images.
#   tools/main_job.sh                      # everything, outputs in output/main_job/
#   SSDKIT_PRESET=file.toml tools/main_job.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup_env.sh
PY="${SSDKIT_VENV:-.venv}/bin/python"
PRESET="${SSDKIT_PRESET:-lite_256_synthetic}"
DATA=data/synthetic
OUT=output/main_job
# trainval trains, val picks the best epoch, test gives the reported number (seeded, byte-identical;
# the test images do not depend on the size of the other splits)
NUM_TRAIN=6000
SETS="$DATA/VOCdevkit/VOC2007/ImageSets/Main"
if [ ! -f "$SETS/val.txt" ] || [ "$(wc -l < "$SETS/trainval.txt")" -ne "$NUM_TRAIN" ]; then
  "$PY" tools/make_synthetic_dataset.py "$DATA" --num-train "$NUM_TRAIN" --num-test 300 --num-val 200 --seed 0
fi
start=$(date +%s)
# one OpenMP thread per CPU context (the preset trains on two, see its [runtime] section)
OMP_NUM_THREADS=1 "$PY" train.py --config "$PRESET" --data-root "$DATA/VOCdevkit" --prefix "$OUT/ssd"
trained=$(date +%s)
"$PY" evaluate.py --config "$PRESET" --data-root "$DATA/VOCdevkit" --val 2007/test --prefix "$OUT/ssd" \
  --output "$OUT/eval"
done_eval=$(date +%s)
"$PY" deploy.py --prefix "$OUT/ssd" --output "$OUT/deploy/ssd"
mapfile -t TEST_IMAGES < <(head -n 4 "$SETS/test.txt" | sed "s#^#$DATA/VOCdevkit/VOC2007/JPEGImages/#; s#\$#.jpg#")
"$PY" demo.py --deploy "$OUT/deploy/ssd" --images "${TEST_IMAGES[@]}" --output "$OUT/demo" --score-thresh 0.1
echo "training: $((trained - start)) s, evaluation: $((done_eval - trained)) s"
echo "metrics: $OUT/eval/metrics.json, curves: $OUT/ssd-curves.png, PR curves: $OUT/eval/pr_curves.png, detections: $OUT/demo/"
