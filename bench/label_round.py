"""How long a labelling round takes (the page's background retraining, textlora.rounds), with a simulated person.

    python bench/label_round.py --run runs/domain-bench/imdb-source-only@top3-s42/classifier --task imdb --rounds 5 --round-size 10

Loads the run as `textlora label --model RUN` does (its frozen prefix cached once for the pool and the
replayed source rows), ranks the pool, then for each round answers the first `--round-size` texts of
the current ranking from the oracle file (../shared/data/TASK/oracle/target_unlabelled_labels.csv:
there for simulated annotators) and times the round: the training from the run's weights, and the
scoring and ranking of the labelled texts and a sample of the pool (textlora.rounds.SCORE_LIMIT). Prints and appends to bench/results/label_round.json with the CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from machine import cpu  # bench/machine.py

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TASKS = {"dvd": "amazon_dvd_electronics", "imdb": "imdb_airline"}
RESULTS = ROOT / "bench" / "results" / "label_round.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained run (the page's --model)")
    ap.add_argument("--task", default="imdb", choices=sorted(TASKS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--round-size", type=int, default=10)
    ap.add_argument("--strategy", default="combined")
    args = ap.parse_args()
    from textlora.rounds import Learner

    folder = DATA / TASKS[args.task]
    pool = pd.read_csv(folder / "target_unlabelled.csv", dtype=str, keep_default_na=False)
    oracle = pd.read_csv(folder / "oracle" / "target_unlabelled_labels.csv", dtype=str).set_index("id")["label"]
    machine = cpu()
    print(f"cpu: {machine['cpu']} ({machine['torch_capability']})", flush=True)
    t0 = time.perf_counter()
    learner = Learner(args.run, pool["text"].tolist(), strategy=args.strategy)
    load_s = time.perf_counter() - t0
    first = learner.round({}, 200, whole=True)
    print(f"loaded in {load_s:.1f} s (prefix cache {getattr(learner, 'cache_seconds', None)} s); first ranking {first.seconds}", flush=True)
    answers: dict[int, str] = {}
    order, rounds = first.order, []
    for r in range(1, args.rounds + 1):
        for k in order[: args.round_size]:
            answers[k] = oracle[pool["id"][k]]
        result = learner.round(answers, 200)
        order = result.order
        rounds.append({"round": r, "labels": result.labelled, **result.seconds})
        print(f"round {r}: {result.labelled} labels: train {result.seconds['train']:.1f} s, score {result.seconds['score']:.1f} s, total {result.seconds['total']:.1f} s", flush=True)
    record = {
        "run": args.run,
        "task": args.task,
        "pool": len(pool),
        "strategy": args.strategy,
        "steps": learner.steps,
        "score_limit": learner.score_limit,
        "batch_size": learner.batch_size,
        "prefix_split": learner.split,
        "load_s": round(load_s, 1),
        "first_ranking_s": first.seconds["total"],
        "rounds": rounds,
        "cpu": machine,
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": []}
    saved["runs"].append(record)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(saved, indent=2))


if __name__ == "__main__":
    main()
