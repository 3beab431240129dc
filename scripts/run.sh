#!/usr/bin/env bash
# Installs worldgrad and runs the main job: the Push-T pipeline end to end on a preset (default: tiny).
# Extra arguments go to `worldgrad pipeline`, e.g. `bash scripts/run.sh --preset cpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_gl.sh  # Push Cube renders offscreen with Mesa through EGL
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e .
exec worldgrad pipeline "$@"
