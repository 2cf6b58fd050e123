#!/usr/bin/env bash
# The main job, offline, on 2 cores: set up, then the whole method on the 8,000 unlabelled AG News
# target texts as one verb (configs/agnews-pipeline.yaml says what each stage does). Run from anywhere:
#   bash scripts/agnews.sh             # SEED=43 bash scripts/agnews.sh for another seed of the classifier
#   ROUNDS=1 bash scripts/agnews.sh    # + a self-training round (measured with MiniLM: no gain)
# Stages are cached by content: a second run reuses what is unchanged (OVERWRITE=1 redoes them all),
# and a killed run continues at its stage. The last two lines name the run and the predictions.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-42}
ROUNDS=${ROUNDS:-0}
bash scripts/setup.sh augment,mpnet
. .venv/bin/activate
out=runs/agnews-target${SEED/#42/}
exec textlora pipeline --config configs/agnews-pipeline.yaml --output_dir "$out" --seed "$SEED" \
  --self_training.rounds "$ROUNDS" $([ "${OVERWRITE:-0}" = 1 ] && echo --overwrite)
