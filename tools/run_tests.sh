#!/usr/bin/env bash
# The test command of README.md: set up .venv (tools/setup_env.sh), then run the whole pytest suite.
# Extra arguments go to pytest, e.g. tools/run_tests.sh -k prior -x
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup_env.sh
# pytest exits 5 when it collected no tests; that is a failure here, like any non-zero code.
exec "${SSDKIT_VENV:-.venv}/bin/python" -m pytest "$@"
