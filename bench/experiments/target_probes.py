"""Cheap probes on finished target runs: do averages or ensembles of models already trained help?

    python bench/target_probes.py                      # every run under runs/target-bench with 2 checkpoints
    python bench/target_probes.py --runs synth-2000-s42 synth-s42

For each run of bench/target_experiments.py (both epoch checkpoints are kept), it measures on the
run's in-domain dev split and on ../shared/data/agnews/target_dev_labelled.csv:
- ``last``: the epoch-2 weights (what the run keeps);
- ``weight_avg``: the mean of the epoch-1 and epoch-2 trainable weights (a two-point weight average);
- ``prob_ens``: the mean of the two checkpoints' class probabilities (a checkpoint ensemble).
The first and last checkpoints are also measured on 2,000 generated rows that the run did not train
on (``--holdout``, default: the seed-7 rows of the ``synth-4000`` experiment; a run that trained on
any of them, or whose training files are no longer where its config says, is skipped there): would a target-style validation set of synthetic rows pick the
checkpoint that the target sample prefers? Then, on the target sample only, the mean of the
probabilities of every pair of runs (a two-model ensemble), and how each run does on the sample's
templated texts ("COUNTRY's Government Announces Plans to ...") and on the rest. No training; results go to
bench/results/target_probes.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "runs" / "target-bench"
SAMPLE = ROOT.parent / "shared" / "data" / "agnews" / "target_dev_labelled.csv"
RESULTS = ROOT / "bench" / "results" / "target_probes.json"


def probabilities(model, tokenizer, texts: list[str], config):
    from textlora.device import default_device
    from textlora.runtime import encode_texts, predict_logits, probabilities

    encoded = encode_texts(tokenizer, texts, config.model.max_length, config.model.truncation)
    return probabilities(predict_logits(model, encoded, tokenizer.pad_token_id or 0, batch_size=64, device=default_device()), config)


def checkpoint_probes(run: Path, sample, holdout) -> tuple[dict, object]:
    """Dev and target accuracy of the last weights, the weight average and the checkpoint ensemble."""
    import pandas as pd
    import torch
    from safetensors.torch import load_file

    from textlora.models import load_classifier

    ckpts = sorted((run / "checkpoints").glob("step-*"))
    model, tok, _, cfg = load_classifier(run, merge=False)
    params = dict(model.named_parameters())
    dev = pd.read_csv(run / "dev.csv", keep_default_na=False)
    weights = [load_file(str(c / "trainable.safetensors")) for c in ckpts]
    variants = {"first": weights[0], "last": weights[-1], "weight_avg": {k: (weights[0][k] + weights[-1][k]) / 2 for k in weights[0]}}
    sets = {"dev": dev, "target": sample}
    truth = {name: df["label"].to_numpy() for name, df in sets.items()}
    trained_on, sources = set(), [Path(f) if Path(f).is_absolute() else ROOT / f for f in cfg.data.extra_train]
    for f in sources:
        if f.is_file():
            trained_on |= set(pd.read_csv(f, keep_default_na=False)["text"])
    unseen = all(f.is_file() for f in sources) and not trained_on & set(holdout["text"])  # only where provably unseen
    probs = {}
    for name, w in variants.items():
        with torch.no_grad():
            for k, v in w.items():
                params[k].copy_(v)
        measured = sets | ({"holdout": holdout} if unseen and name != "weight_avg" else {})
        probs[name] = {s: probabilities(model, tok, list(df["text"]), cfg) for s, df in measured.items()}
    probs["prob_ens"] = {s: (probs["first"][s] + probs["last"][s]) / 2 for s in truth}
    out = {v: {s: round(float((probs[v][s].argmax(1) == truth[s]).mean()), 4) for s in truth} for v in ("first", "last", "weight_avg", "prob_ens")}
    for name in ("first", "last"):
        if "holdout" in probs[name]:
            out[name]["synthetic_holdout"] = round(float((probs[name]["holdout"].argmax(1) == holdout["label"].to_numpy()).mean()), 4)
    return out, probs["last"]["target"]


def main() -> None:
    import numpy as np
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", help="run names under runs/target-bench (default: all with two checkpoints)")
    ap.add_argument("--holdout", type=Path, default=WORK / "synthetic" / "smollm2-2000-seed7.csv", help="generated rows for the holdout probe")
    args = ap.parse_args()
    names = args.runs or sorted(p.name for p in WORK.iterdir() if (p / "textlora.json").is_file() and len(list((p / "checkpoints").glob("step-*"))) == 2)
    sample = pd.read_csv(SAMPLE, keep_default_na=False)
    holdout = pd.read_csv(args.holdout, keep_default_na=False).sample(2000, random_state=0)
    holdout = holdout[holdout["text"].str.split().str.len() >= 8]  # the filter's min_words
    results, target_probs = {"checkpoints": {}, "pairs": {}}, {}
    for name in names:
        results["checkpoints"][name], target_probs[name] = checkpoint_probes(WORK / name, sample, holdout)
        print(name, results["checkpoints"][name], flush=True)
    y = sample["label"].to_numpy()
    # one template holds many of the errors: "COUNTRY's Government Announces Plans to ... Invest..."
    template = sample["text"].str.contains("Government Announces Plans to").to_numpy()
    results["template"] = {"rows": int(template.sum()), "labels": {int(k): int(v) for k, v in zip(*np.unique(y[template], return_counts=True))}}
    for name in names:
        right = target_probs[name].argmax(1) == y
        results["template"][name] = {
            "template_right": int(right[template].sum()),
            "errors": int((~right).sum()),
            "other_rows_accuracy": round(float(right[~template].mean()), 4),
        }
        print(name, results["template"][name])
    for a, b in itertools.combinations(names, 2):
        results["pairs"][f"{a} + {b}"] = round(float(((target_probs[a] + target_probs[b]).argmax(1) == y).mean()), 4)
    best = max(results["pairs"].items(), key=lambda kv: kv[1], default=None)
    print(f"best two-run ensemble on the target sample: {best}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
