#!/usr/bin/env bash
# The CUDA check (bench/gpu_check.py says what it runs): on a GPU machine, in at most 5 minutes,
# the main job's classifier, a roberta-base-sized encoder (all layers, and top 3 with the prefix
# cache), a 1-GPU torchrun, and 1,000 generated rows, each timed and scored. Figures go to
# bench/results/gpu_check.json (or --out FILE).
#   bash bench/gpu_check.sh                 # where textlora is set up (scripts/setup.sh augment) with ../shared
#   python bench/gpu_assets.py .gpu         # elsewhere: pack what it needs (~57 MB) here,
#   bash bench/gpu_check.sh .gpu            # ... then run this there, from the checkout's root
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
assets=()
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then assets=(--assets "$1"); shift; fi
exec timeout 295 "$py" bench/gpu_check.py "${assets[@]}" "$@"
