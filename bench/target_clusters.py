"""How far a labelled target sample can tell runs apart when some of its texts are near-copies.

    python bench/target_clusters.py --eval ../shared/data/agnews/target_dev_labelled.csv \
        --runs main=runs/agnews-target/classifier lr2e-3=runs/ag-alr2e3-s42/classifier --baseline main

A machine-written target set can hold templates: near-identical texts that a classifier labels as
a block, so they move together from one run to the next. The binomial standard error counts them
as independent rows and understates how far the accuracy moves. This script groups the eval texts
by word and word-pair TF-IDF cosine (texts joined when the cosine is >= --threshold; groups are the
connected components: textlora.metrics.near_copy_groups, as `textlora evaluate` groups them for its
SE), predicts the eval file with each run, and prints for each run: accuracy, the binomial SE, the
cluster-robust SE (each group one unit), the accuracy on grouped and on ungrouped texts, and the
difference to the baseline run with its paired cluster-robust SE. Labels only measure here;
nothing is chosen by them. Results are appended to
bench/results/target_clusters.json with the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from machine import cpu  # bench/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "bench" / "results" / "target_clusters.json"


def predicted_names(run, texts: list[str]) -> list[str]:
    """The run's predicted class name for each text (loaded as `textlora predict` loads it, merged weights)."""
    from textlora.prediction import load

    clf = load(run)
    return [clf.label_names[k] for k in clf.predict_proba(texts).argmax(1)]


def main() -> None:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True, help="a labelled target file (text and label columns)")
    ap.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR (a classifier run directory)")
    ap.add_argument("--baseline", help="the NAME the others are compared with (default: the first)")
    ap.add_argument("--threshold", type=float, default=0.3, help="TF-IDF cosine at which two texts are one group")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--label-column", default="label")
    args = ap.parse_args()

    from textlora.errors import UserError
    from textlora.metrics import accuracy_se, near_copy_groups
    from textlora.run import open_run

    runs = {}
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep:
            sys.exit(f"target_clusters.py: --runs {spec!r}: want NAME=RUN_DIR, a folder written by textlora train")
        try:
            runs[name] = open_run(path, flag="--runs")
        except UserError as e:
            sys.exit(f"target_clusters.py: {e}")
    baseline = args.baseline or next(iter(runs))
    if baseline not in runs:
        sys.exit(f"target_clusters.py: --baseline {baseline!r} is not one of --runs")

    data = pd.read_csv(args.eval)
    texts = data[args.text_column].astype(str).tolist()
    g = near_copy_groups(texts, args.threshold)  # as `textlora evaluate` groups them for its SE
    sizes = np.bincount(g)
    grouped = sizes[g] > 1
    print(
        f"{args.eval}: {len(texts)} texts, {len(sizes)} groups at cosine >= {args.threshold}; {int(grouped.sum())} texts in {int((sizes > 1).sum())} groups of 2 or more"
    )
    for c in np.flatnonzero(sizes > 1)[np.argsort(-sizes[sizes > 1])][:5]:
        print(f"  group of {sizes[c]}: {texts[int(np.flatnonzero(g == c)[0])][:100]!r}")

    names = runs[baseline].labels
    gold = [names[int(v)] if str(v).isdigit() else str(v) for v in data[args.label_column]]
    correct = {}
    for name, run in runs.items():
        correct[name] = np.array([p == y for p, y in zip(predicted_names(run, texts), gold)], dtype=float)

    rows = []
    print(f"\n{'run':<16}{'accuracy':>9}{'SE':>7}{'cluster SE':>11}{'grouped':>9}{'others':>8}{'vs ' + baseline:>16}{'paired SE':>10}")
    for name, c in correct.items():
        n = len(c)
        diff = c - correct[baseline]
        row = {
            "run": name,
            "path": str(runs[name].path),
            "accuracy": round(float(c.mean()), 4),
            "se": round(float(np.sqrt(c.mean() * (1 - c.mean()) / n)), 4),
            "cluster_se": round(accuracy_se(c, g), 4),
            "grouped_right": f"{int(c[grouped].sum())}/{int(grouped.sum())}",
            "others": round(float(c[~grouped].mean()), 4),
            "diff": round(float(diff.mean()), 4),
            "paired_cluster_se": round(accuracy_se(diff, g), 4),  # the SE of a mean, here of the paired differences
        }
        rows.append(row)
        print(
            f"{name:<16}{row['accuracy']:>9.4f}{row['se']:>7.4f}{row['cluster_se']:>11.4f}{row['grouped_right']:>9}{row['others']:>8.4f}"
            f"{row['diff']:>+16.4f}{row['paired_cluster_se']:>10.4f}"
        )
    record = {"eval": args.eval, "threshold": args.threshold, "groups": int(len(sizes)), "grouped_texts": int(grouped.sum()), "runs": rows, "machine": cpu()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    RESULTS.write_text(json.dumps([*old, record], indent=2) + "\n")
    print(f"\nappended to {RESULTS}")


if __name__ == "__main__":
    main()
