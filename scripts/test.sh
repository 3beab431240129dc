#!/usr/bin/env bash
# Installs worldgrad with its test tools, then runs the linters and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_gl.sh  # Push Cube renders offscreen with Mesa through EGL
# The CPU build of torch first; a GPU user's own torch is left alone.
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[dev]"
python3 -m ruff check .
python3 -m ruff format --check .
set +e
python3 -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests"
    rc=0
fi
exit "$rc"
