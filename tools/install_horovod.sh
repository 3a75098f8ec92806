#!/usr/bin/env bash
# Build Horovod (requirements-horovod.txt) from source into .venv for MXNet with Gloo: no MPI, TensorFlow
# or PyTorch. Needs g++ and cmake >= 3.13 (Horovod fetches cmake from the package index if it is missing).
# Does nothing when horovod.mxnet already imports. pip keeps the built wheel in its cache, so a second
# environment on the same machine installs it without compiling.
#   tools/install_horovod.sh                 # into .venv (SSDKIT_VENV=other to choose)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${SSDKIT_VENV:-.venv}/bin/python"
if "$PY" -c "import horovod.mxnet as hvd; assert hvd.gloo_built()" >/dev/null 2>&1; then
  exit 0
fi
echo "building Horovod for MXNet with Gloo (several minutes)..."
start=$(date +%s)
HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
HOROVOD_WITHOUT_PYTORCH=1 MAKEFLAGS="-j$(nproc)" \
  "$PY" -m pip install --quiet --no-build-isolation --no-binary horovod -r requirements-horovod.txt -c constraints.txt
"$PY" -c "import horovod, horovod.mxnet as hvd; assert hvd.gloo_built(); print('horovod', horovod.__version__, 'for MXNet with Gloo')"
echo "Horovod installed in $(( $(date +%s) - start )) s"
