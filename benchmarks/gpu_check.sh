#!/usr/bin/env bash
# The GPU path in one short command: benchmarks/gpu_check.py on cuda (a quick demo cache built on the GPU,
# ATM rounds, the slider's exact evaluation, the ViT-B/32 tower, merges at ViT-B/32 size; each timed, the
# CPU beside the GPU where that is cheap). Without a CUDA GPU it stops with one line and exit status 3.
#
#   benchmarks/gpu_check.sh [--install] [--json FILE]
#
# --install first runs `pip install -r requirements-dev.txt` (on a fresh machine: minutes, most of them
# torch's CUDA wheels; not counted in the check's own few minutes). PYTHON picks the interpreter
# (default python3, the one that holds torch on most GPU images).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [[ "${1:-}" == "--install" ]]; then
    shift
    "$PYTHON" -m pip install --quiet -r requirements-dev.txt
fi
exec "$PYTHON" benchmarks/gpu_check.py --device cuda "$@"
