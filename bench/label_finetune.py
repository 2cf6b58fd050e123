"""A labelling round's short fine-tune against the pipeline's retraining, on the same labels.

    python bench/label_finetune.py --tasks imdb dvd --seeds 42 43 44 --strategy kcenter --labels 50 --work runs/active-bench

The labelling page's rounds (textlora.rounds.Learner) retrain the run from its own weights for 16
steps of 16 rows, half labelled target texts and half replayed source rows, in ~25 s. The pipeline
with `target.labelled` retrains the classifier from scratch (~6-7 minutes on 2 cores with MPNet
top-3) on the source rows plus half the labels, the other half choosing its checkpoint. This script
takes the runs `bench/active.py` made (round 0's classifier, recorded in bench/results/active.json,
and the labels its simulated annotator revealed, under `--work`), fine-tunes round 0 as a round
does, on the same half the pipeline trained on and on all the labels, and scores the task's
`target_test.csv` (500 rows). Prints a table and appends to bench/results/label_finetune.json with the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from active import DATA, ROOT, TASKS  # bench/active.py: the tasks and the runs this script reads
from active import RESULTS as ACTIVE
from machine import cpu  # bench/machine.py

RESULTS = ROOT / "bench" / "results" / "label_finetune.json"


def record(runs: list[dict], task: str, strategy: str, labels: int, seed: int) -> dict | None:
    return next((r for r in runs if (r["task"], r["strategy"], r["labels"], r["seed"]) == (task, strategy, labels, seed)), None)


def finetune(run: str, test: pd.DataFrame, labelled: pd.DataFrame, seed: int) -> tuple[float, float]:
    """(accuracy on ``test``, seconds of training) after one round on ``labelled`` from ``run``'s weights."""
    from textlora.rounds import Learner

    texts = [*labelled["text"], *test["text"]]
    learner = Learner(run, texts, strategy="random", seed=seed)
    t0 = time.perf_counter()
    learner._train([(k, learner.names.index(name)) for k, name in enumerate(labelled["label"])])
    seconds = time.perf_counter() - t0
    probs, _ = learner.score(np.arange(len(labelled), len(texts)))
    predicted = [learner.names[i] for i in probs.argmax(1)]
    return float(np.mean(np.array(predicted) == test["label"].to_numpy())), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["imdb", "dvd"], choices=sorted(TASKS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43])
    ap.add_argument("--strategy", default="kcenter")
    ap.add_argument("--labels", type=int, default=50)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "active-bench", help="bench/active.py's output folder")
    args = ap.parse_args()
    runs = json.loads(ACTIVE.read_text())["runs"]
    machine = cpu()
    print(f"cpu: {machine['cpu']} ({machine['torch_capability']})", flush=True)
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": []}
    rows = []
    for task in args.tasks:
        test = pd.read_csv(DATA / TASKS[task] / "target_test.csv", dtype=str, keep_default_na=False)
        for seed in args.seeds:
            zero, piped = record(runs, task, "none", 0, seed), record(runs, task, args.strategy, args.labels, seed)
            name = f"{task}-s{seed}-{args.strategy}-{args.labels}"
            every = pd.read_csv(args.work / f"{name}.labels.csv", dtype=str, keep_default_na=False)
            half = pd.read_csv(args.work / name / "labelled" / "train.csv", dtype=str, keep_default_na=False)
            out = {"task": task, "seed": seed, "strategy": args.strategy, "labels": args.labels, "round0": zero["target"], "pipeline": piped["target"]}
            for variant, labelled in (("half", half), ("all", every)):
                acc, seconds = finetune(zero["run"], test, labelled, seed)
                out[f"finetune_{variant}"], out[f"finetune_{variant}_s"] = round(acc, 4), round(seconds, 1)
            out["se"] = round(math.sqrt(out["round0"] * (1 - out["round0"]) / len(test)), 4)
            out |= {"cpu": machine, "when": time.strftime("%Y-%m-%d %H:%M")}
            print(json.dumps(out), flush=True)
            rows.append(out)
            saved["runs"].append(out)
            RESULTS.write_text(json.dumps(saved, indent=2))
    print("| task | seed | round 0 | pipeline (half trains, half chooses) | fine-tune on the same half | fine-tune on all | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['task']} | {r['seed']} | {r['round0']:.3f} | {r['pipeline']:.3f} | {r['finetune_half']:.3f} | {r['finetune_all']:.3f} | {r['finetune_all_s']:.0f} |")


if __name__ == "__main__":
    main()
