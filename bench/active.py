"""A few target labels where they count: `textlora label`'s strategies with a simulated annotator.

    python bench/active.py --tasks imdb --strategies random combined --labels 50 --seeds 42
    python bench/active.py --tasks imdb dvd --strategies random margin kcenter combined --labels 25 50 100 200 --seeds 42 43 --ceiling
    python bench/active.py --tasks dvd --strategies kcenter --labels 50 --seeds 42 --set target.labelled_repeat 8 --tag repeat8

For each task and seed: the source-only pipeline run (`--synthetic.enabled false`: the trial drops the
generated rows on both review tasks anyway) is round 0 and gives the accuracy at 0 labels; it ranks
the unlabelled target texts once by each strategy (`textlora.active.choose` over its probabilities and
pooled vectors; random is seeded). The simulated annotator then reveals the oracle labels of the first
N texts of a ranking, and only of those (`../shared/data/TASK/oracle/target_unlabelled_labels.csv`;
read its README), and the pipeline runs again with them as `target.labelled` (half choose, half
train). `--ceiling` adds the same classifier trained on the source rows plus the whole pool with its
oracle labels. Every run is scored on the task's `target_test.csv` (500 rows, SE ~1.3 points), beside
its dev split.

The protocol is one-shot: round 0's classifier ranks all texts and N labels are the first N of that
ranking (what a person labelling N texts from one page session would answer); the page itself keeps
one ranking a session as well.

Every pipeline run shares the classifier settings of `configs/amazon-dvd-electronics.yaml` with
MPNet's top 3 layers (`--lora.layers 3`, the prefix cache) and 2 epochs, so that later runs copy the
frozen layers' states of the texts earlier runs cached. Results are appended to
bench/results/active.json with the CPU; `--plot` draws bench/results/active.png.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu  # bench/machine.py: python puts the script's folder on sys.path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "active.json"
WORK = ROOT / "runs" / "active-bench"
TASKS = {"dvd": "amazon_dvd_electronics", "imdb": "imdb_airline"}
CONFIG = "configs/amazon-dvd-electronics.yaml"
SETTINGS = ["--synthetic.enabled", "false", "--lora.layers", "3", "--train.epochs", "2"]


def pipeline(task: str, out: Path, seed: int, extra: list[str]) -> dict:
    d = DATA / TASKS[task]
    argv = [sys.executable, "-m", "textlora", "pipeline", "--config", CONFIG, "--output_dir", str(out), "--seed", str(seed)]
    argv += ["--data.train", str(d / "source_train.csv"), "--target.texts", str(d / "target_unlabelled.csv"), "--data.eval_sets.target", str(d / "target_test.csv")]
    t0 = time.perf_counter()
    subprocess.run([*argv, *SETTINGS, *extra], cwd=ROOT, check=True)
    summary = json.loads((out / "pipeline.json").read_text())
    m = summary["metrics"]
    target = m["target"]
    return {
        "dev": m["dev"]["accuracy"],
        "target": target["accuracy"],
        "target_se": round(math.sqrt(target["accuracy"] * (1 - target["accuracy"]) / target["n"]), 4),
        "labelled_dev": m.get("labelled"),
        "run": summary["run"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "train_s": sum(s.get("seconds", 0) for s in summary["stages"] if s["stage"] == "train"),
    }


def from_stages(out: Path) -> dict:
    """Round 0 read from an earlier pipeline's ``train`` stage (the same settings: ``SETTINGS``)."""
    stage = json.loads((out / "stages.json").read_text())["train"]
    target = stage["summary"]["eval_sets"]["target"]
    return {
        "dev": stage["summary"]["dev"],
        "target": target,
        "target_se": round(math.sqrt(target * (1 - target) / 500), 4),
        "run": stage["data"]["run"],
        "train_s": stage["seconds"],
        "from": str(out),
    }


def rankings(run: str, task: str, strategies: list[str], n: int, seed: int) -> dict[str, list[str]]:
    """Each strategy's first ``n`` target ids, ranked once by round 0's classifier."""
    import pandas as pd

    from textlora.active import choose, probabilities_and_embeddings

    pool = pd.read_csv(DATA / TASKS[task] / "target_unlabelled.csv", keep_default_na=False, dtype=str)
    probs, emb = probabilities_and_embeddings(run, pool["text"].tolist())
    out = {}
    for s in strategies:
        picks = choose(s, n, len(pool), probs=probs, embeddings=emb, seed=seed)
        out[s] = [pool["id"][k] for k in picks]
    return out


def reveal(task: str, ids: list[str], path: Path) -> Path:
    """The simulated annotator: the oracle labels of ``ids`` and of no other text."""
    import pandas as pd

    oracle = pd.read_csv(DATA / TASKS[task] / "oracle" / "target_unlabelled_labels.csv", dtype=str).set_index("id")["label"]
    pool = pd.read_csv(DATA / TASKS[task] / "target_unlabelled.csv", dtype=str).set_index("id")["text"]
    pd.DataFrame({"id": ids, "text": [pool[i] for i in ids], "label": [oracle[i] for i in ids]}).to_csv(path, index=False)
    return path


def ceiling_rows(task: str, path: Path) -> Path:
    """The whole pool with its oracle labels, as training rows (the in-domain ceiling only)."""
    import pandas as pd

    oracle = pd.read_csv(DATA / TASKS[task] / "oracle" / "target_unlabelled_labels.csv", dtype=str)
    pool = pd.read_csv(DATA / TASKS[task] / "target_unlabelled.csv", dtype=str)
    pool.merge(oracle, on="id")[["text", "label"]].to_csv(path, index=False)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["imdb"], choices=sorted(TASKS))
    ap.add_argument("--strategies", nargs="+", default=["random", "combined"], choices=["random", "margin", "entropy", "kcenter", "combined"])
    ap.add_argument("--labels", nargs="+", type=int, default=[50])
    ap.add_argument("--seeds", nargs="+", type=int, default=[42])
    ap.add_argument("--ceiling", action="store_true", help="also train on the source rows plus the whole pool with its oracle labels")
    ap.add_argument("--plot", action="store_true", help="draw bench/results/active.png from the saved results and stop")
    ap.add_argument("--round0", type=Path, help="an existing pipeline output dir of these settings (one task, one seed) whose 'train' stage is round 0")
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help="a pipeline setting for the labelled runs only (e.g. target.labelled_repeat 8)")
    ap.add_argument("--tag", help="recorded as STRATEGY@TAG (its own runs and results), for a variant made with --set")
    args = ap.parse_args()
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": []}
    if args.plot:
        plot(saved["runs"])
        return
    machine = cpu()
    print(f"cpu: {machine}", flush=True)

    def keep(record: dict) -> None:
        record |= {"cpu": machine, "when": time.strftime("%Y-%m-%d %H:%M")}
        key = (record["task"], record["strategy"], record["labels"], record["seed"])
        saved["runs"] = [r for r in saved["runs"] if (r["task"], r["strategy"], r["labels"], r["seed"]) != key] + [record]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(saved, indent=2))
        print(json.dumps(record), flush=True)

    for task in args.tasks:
        for seed in args.seeds:
            r0 = from_stages(args.round0) if args.round0 else pipeline(task, WORK / f"{task}-s{seed}-0", seed, [])
            keep({"task": task, "strategy": "none", "labels": 0, "seed": seed, **r0})
            t0 = time.perf_counter()
            ranked = rankings(r0["run"], task, args.strategies, max(args.labels), seed)
            select_s = round(time.perf_counter() - t0, 1)
            extra = [x for key, value in args.set for x in (f"--{key}", value)]
            for strategy in args.strategies:
                name = f"{strategy}@{args.tag}" if args.tag else strategy
                for n in args.labels:
                    out = WORK / f"{task}-s{seed}-{name}-{n}"
                    out.mkdir(parents=True, exist_ok=True)
                    labels = reveal(task, ranked[strategy][:n], out.parent / f"{out.name}.labels.csv")
                    rec = pipeline(task, out, seed, ["--target.labelled", str(labels), *extra])
                    keep({"task": task, "strategy": name, "labels": n, "seed": seed, "select_s": select_s, **rec})
            if args.ceiling:
                rows = ceiling_rows(task, WORK / f"{task}-pool-oracle.csv")
                rec = pipeline(task, WORK / f"{task}-s{seed}-ceiling", seed, ["--data.extra_train", f"[{rows}]"])
                keep({"task": task, "strategy": "ceiling", "labels": -1, "seed": seed, **rec})
    print(table(saved["runs"]))


def table(runs: list[dict]) -> str:
    lines = ["| task | strategy | labels | seed | dev | target ± SE | labelled dev (n) | train s | CPU |", "|---|---|---:|---:|---:|---:|---|---:|---|"]
    for r in sorted(runs, key=lambda r: (r["task"], r["labels"], r["strategy"], r["seed"])):
        lab = r.get("labelled_dev")
        lab = f"{lab['accuracy']:.3f} ± {lab['accuracy_se']:.3f} ({lab['n']})" if lab else ""
        n = "pool" if r["labels"] < 0 else r["labels"]
        lines.append(
            f"| {r['task']} | {r['strategy']} | {n} | {r['seed']} | {r['dev']:.4f} | {r['target']:.4f} ± {r['target_se']:.3f} | {lab} | {r['train_s']:.0f} | {r['cpu'].get('model_name', '')} |"
        )
    return "\n".join(lines)


def plot(runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [r for r in runs if r["task"] == task]
        zero = [r["target"] for r in mine if r["labels"] == 0]
        for strategy in sorted({r["strategy"] for r in mine if r["labels"] > 0}):
            xs = sorted({r["labels"] for r in mine if r["strategy"] == strategy})
            ys = [sum(r["target"] for r in mine if r["strategy"] == strategy and r["labels"] == x) / len([r for r in mine if r["strategy"] == strategy and r["labels"] == x]) for x in xs]
            if zero:
                xs, ys = [0, *xs], [sum(zero) / len(zero), *ys]
            line = ax.plot(xs, ys, marker="o", label=strategy)[0]
            for x, y in zip(xs, ys):  # how many seeds each mean is of
                n = len([r for r in mine if r["labels"] == x and (x == 0 or r["strategy"] == strategy)])
                ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=line.get_color())
        ceil = [r["target"] for r in mine if r["strategy"] == "ceiling"]
        if ceil:
            ax.axhline(sum(ceil) / len(ceil), color="grey", linestyle="--", label="source + pool (oracle)")
        ax.set_title(f"{task}: target_test accuracy (mean of n seeds)")
        ax.set_xlabel("labels")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS.with_suffix(".png"), dpi=120)
    print(f"wrote {RESULTS.with_suffix('.png')}")


if __name__ == "__main__":
    main()
