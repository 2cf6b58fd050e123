#!/usr/bin/env bash
# The main job, offline, on 2 cores: the target-domain pipeline for the 8,000 unlabelled AG News
# target texts. Set up, adapt SmolLM2 to the target texts, generate synthetic target-style rows,
# filter them, train MiniLM + LoRA on the real rows plus those rows, print in-domain dev and
# target-sample accuracy, and predict the target texts to an ID,Label CSV. Run from anywhere:
#   bash scripts/agnews.sh             # SEED=43 bash scripts/agnews.sh for another seed
#   ROUNDS=1 bash scripts/agnews.sh    # the whole pipeline: + a self-training round (~10 min more; measured: no gain)
# A self-training round pseudo-labels the target texts with the classifier just trained
# (confidence >= 0.9, the same number a class) and trains a new one on the real rows, the
# synthetic rows and those pseudo-labels.
# The adapted LM and the generated rows are reused on a second run while their settings and inputs
# are unchanged (OVERWRITE=1 redoes them). The labelled target sample is measured, never trained on:
# its texts are also kept out of the LM adaptation.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-42}
ROUNDS=${ROUNDS:-0}
data=../shared/data/agnews
sample=$data/target_dev_labelled.csv
run=runs/agnews-target${SEED/#42/}
redo=$([ "${OVERWRITE:-0}" = 1 ] && echo --overwrite || echo --reuse)
bash scripts/setup.sh augment
. .venv/bin/activate
SECONDS=0
stage() { echo "== $1 (${SECONDS}s so far)"; }
stage adapt
textlora adapt --config configs/agnews-adapt.yaml $redo
stage generate
textlora generate --config configs/agnews-generate.yaml $redo
stage filter
textlora filter --config configs/agnews-filter.yaml --overwrite >/dev/null
stage train
textlora train --config configs/agnews-target.yaml --output_dir $run --seed $SEED --overwrite
synthetic=$(python -c "import yaml; print(yaml.safe_load(open('configs/agnews-filter.yaml'))['output'])")
for r in $(seq 1 "$ROUNDS"); do
  stage "self-training round $r"
  textlora pseudolabel --model $run --data $data/target_unlabelled.csv --output $run/pseudo.csv \
    --min-confidence 0.9 --balance --exclude $sample --overwrite
  next=${run%-round*}-round$r
  textlora train --config configs/agnews-target.yaml --output_dir $next --seed $SEED --overwrite \
    --data.extra_train "[$synthetic, $run/pseudo.csv]"
  run=$next
done
stage evaluate
textlora evaluate --model $run --data $run/dev.csv $sample --output-dir $run/eval --overwrite | grep -E "^==|^accuracy"
stage predict
textlora predict --model $run --data $data/target_unlabelled.csv --output $run/predictions.csv --overwrite
echo "pipeline: ${SECONDS}s after setup"
echo "predictions: $run/predictions.csv"
