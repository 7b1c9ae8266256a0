#!/usr/bin/env bash
# Makes benchmarks/.venv, the environment `python -m tvexplorer bench` runs FusionBench in. It sees the
# system's packages (torch, open_clip, tvexplorer's requirements) and adds FusionBench on top, with
# torch pinned so that pip leaves the installed build alone.
set -euo pipefail
cd "$(dirname "$0")"
python -m venv --system-site-packages .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements.txt
# tvexplorer itself, editable and without its dependencies (the system's), for the worker's imports
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e ..
.venv/bin/python -c "import torch, fusion_bench.method.ties_merging.ties_merging_utils; print('FusionBench ready, torch', torch.__version__)"
