#!/usr/bin/env bash
# The main job on the offline default: set up, train on the shared AG News rows, evaluate on the
# dev split, predict the unlabelled target texts to an ID,Label CSV. Run from anywhere:
#   bash scripts/agnews.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
run=runs/agnews-minilm
time textlora train --config configs/agnews-minilm.yaml --overwrite
time textlora evaluate --model $run --data $run/dev.csv --output-dir $run/eval --overwrite
time textlora predict --model $run --data ../shared/data/agnews/target_unlabelled.csv --output $run/predictions.csv --overwrite
echo "predictions: $run/predictions.csv; metrics: $run/eval/metrics.json"
