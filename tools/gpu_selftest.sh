#!/usr/bin/env bash
# Build and run ssdkit's standalone operator self-test (tests/gpu_selftest): every CUDA kernel against
# the CPU kernels on the cases of tests/op_cases.py, then again under compute-sanitizer (memcheck,
# racecheck) when that tool is on PATH. Needs the CUDA toolkit (nvcc), an NVIDIA GPU and this checkout
# installed (`pip install --no-build-isolation -e .`, the CPU mxnet wheel is enough: no GPU build of
# MXNet is used).
#
#   tools/gpu_selftest.sh            # build into build/gpu_selftest/, run, print the table
#   SSDKIT_CUDA_ARCHS="80 90" tools/gpu_selftest.sh   # architectures (default: the GPU's own, else 80 90)
#
# Exit status: 0 every comparison agreed (and the sanitizers found nothing); 1 a mismatch, a failed
# kernel or a sanitizer error; 2 build failure or no nvcc; 3 built, CPU half agreed, but no CUDA device
# was found (nothing ran on a GPU). The report is also written to build/gpu_selftest/report.txt.
set -u
cd "$(dirname "$0")/.."
OUT=build/gpu_selftest
mkdir -p "$OUT"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! command -v nvcc >/dev/null 2>&1; then
  echo "gpu_selftest: nvcc is not on PATH; install the CUDA toolkit (or add its bin/ to PATH)" >&2
  exit 2
fi
ARCHS=${SSDKIT_CUDA_ARCHS:-}
if [ -z "$ARCHS" ] && command -v nvidia-smi >/dev/null 2>&1; then
  ARCHS=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
fi
ARCHS=${ARCHS:-80 90}
echo "gpu_selftest: writing cases (tests/op_cases.py) and building for sm_${ARCHS// /, sm_} ..."
"$PY" tests/op_cases.py "$OUT/cases.txt" || exit 2
"$PY" -c "
import sys
from ssdkit import _build
_build.build_selftest('src/operators', 'tests/gpu_selftest', '$OUT/ssdkit_selftest', cuda=True,
                      archs=tuple(sys.argv[1:]), jobs=$(nproc))
" $ARCHS || exit 2
"$OUT/ssdkit_selftest" "$OUT/cases.txt" 2>&1 | tee "$OUT/report.txt"
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 3 ]; then
  echo "gpu_selftest: built, but NO CUDA DEVICE was found: no kernel ran on a GPU (exit 3)" | tee -a "$OUT/report.txt"
  exit 3
fi
if [ "$rc" -ne 0 ]; then exit "$rc"; fi
if command -v compute-sanitizer >/dev/null 2>&1; then
  for tool in memcheck racecheck; do
    echo "gpu_selftest: compute-sanitizer --tool $tool" | tee -a "$OUT/report.txt"
    compute-sanitizer --tool "$tool" --error-exitcode 1 "$OUT/ssdkit_selftest" "$OUT/cases.txt" \
      >>"$OUT/report.txt" 2>&1 || { echo "gpu_selftest: $tool reported errors (see $OUT/report.txt)"; exit 1; }
    tail -n 2 "$OUT/report.txt"
  done
else
  echo "gpu_selftest: compute-sanitizer not on PATH: memcheck / racecheck skipped" | tee -a "$OUT/report.txt"
fi
echo "gpu_selftest: all comparisons agree" | tee -a "$OUT/report.txt"
