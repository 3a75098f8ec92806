#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv, install the pinned dependency set and build
# ssdkit's operators into it (editable install). Safe to run again: it only does what is missing.
#   PYTHON=python3.11 tools/setup_env.sh     # choose the interpreter (default: python3)
#   SSDKIT_WITH_CUDA=1 tools/setup_env.sh    # also build the CUDA operator library (needs nvcc)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SSDKIT_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=23" "setuptools>=64" wheel
# The pinned working set: what ssdkit and its tests import (with the gluoncv and onnx extras, so the tests
# run them), the rest held by constraints.txt.
"$VENV/bin/python" -m pip install --quiet -r requirements-test.txt -c constraints.txt
# Editable install, built against .venv's mxnet (pyproject's build requirements would fetch a second copy).
"$VENV/bin/python" -m pip install --quiet --no-build-isolation --no-deps -e .
"$VENV/bin/python" -c "import ssdkit, ssdkit.ops; print('ssdkit', ssdkit.__version__, 'ops:', ssdkit.ops.load_library(), 'threads:', ssdkit.ops.num_threads())"
