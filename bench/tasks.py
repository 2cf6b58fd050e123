"""Multi-label and sentence-pair tasks built from the shared AG News rows, trained with the offline default recipe.

    python bench/tasks.py                 # both tasks, seed 42
    python bench/tasks.py --only pairs --seeds 42 43

- multi-label: each row joins two AG News texts; its labels are the set of their classes (one class
  when both texts share it). Measured: subset accuracy, micro- and macro-F1 on a held-out test file.
- pairs: "same topic or not" for two AG News texts (half the pairs share a class). Measured: accuracy.

The source rows are split first (seeded), so that no text of the test file is in the training
file. Each task trains MiniLM + LoRA (configs/agnews-minilm.yaml) for one epoch, then `textlora
evaluate` scores the test file. Data goes to runs/tasks/, results to bench/results/tasks.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "agnews"
WORK = ROOT / "runs" / "tasks"
RESULTS = ROOT / "bench" / "results" / "tasks.json"
NAMES = ["World", "Sports", "Business", "Sci/Tech"]
TRAIN_ROWS, TEST_ROWS = 6000, 1000


def _source(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Disjoint train/test pools of AG News rows."""
    df = pd.read_csv(DATA / "train.csv").sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return df.iloc[: len(df) - 3000], df.iloc[len(df) - 3000 :]


def multilabel_rows(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    a, b = pool.sample(n, random_state=int(rng.integers(1 << 31))), pool.sample(n, random_state=int(rng.integers(1 << 31)))
    labels = [json.dumps(sorted({NAMES[x], NAMES[y]}, key=NAMES.index)) for x, y in zip(a["label"], b["label"])]
    return pd.DataFrame({"text": [f"{s} {t}" for s, t in zip(a["text"], b["text"])], "label": labels})


def pair_rows(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    by_class = {c: g["text"].tolist() for c, g in pool.groupby("label")}
    rows = []
    for i in range(n):
        ca = int(rng.integers(4))
        cb = ca if i % 2 == 0 else int(rng.choice([c for c in range(4) if c != ca]))
        a, b = by_class[ca][rng.integers(len(by_class[ca]))], by_class[cb][rng.integers(len(by_class[cb]))]
        rows.append({"text": a, "other": b, "label": "same" if ca == cb else "different"})
    return pd.DataFrame(rows)


TASKS = {
    "multilabel": (multilabel_rows, ["--data.multi_label", "true", "--data.label_names", "[World, Sports, Business, Sci/Tech]", "--model.max_length", "256"]),
    "pairs": (pair_rows, ["--data.text_pair_column", "other", "--data.label_names", "[different, same]", "--model.max_length", "256"]),
}


def run_task(name: str, seed: int) -> dict:
    make, overrides = TASKS[name]
    rng = np.random.default_rng(seed)
    train_pool, test_pool = _source(seed)
    folder = WORK / f"{name}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    make(train_pool, TRAIN_ROWS, rng).to_csv(folder / "train.csv", index=False)
    make(test_pool, TEST_ROWS, rng).to_csv(folder / "test.csv", index=False)
    t0 = time.perf_counter()
    argv = ["train", "--config", "configs/agnews-minilm.yaml", "--output_dir", str(folder / "run"), "--seed", str(seed), "--overwrite"]
    argv += ["--data.train", str(folder / "train.csv"), "--train.epochs", "1", *overrides]
    subprocess.run([sys.executable, "-m", "textlora", *argv], cwd=ROOT, check=True)
    train_s = time.perf_counter() - t0
    out = folder / "eval"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "textlora",
            "evaluate",
            "--model",
            str(folder / "run"),
            "--data",
            str(folder / "test.csv"),
            "--output-dir",
            str(out),
            "--overwrite",
        ],
        cwd=ROOT,
        check=True,
    )
    m = json.loads((out / "metrics.json").read_text())
    result = {k: m[k] for k in ("accuracy", "micro_f1", "macro_f1", "n") if k in m}
    result |= {
        "train_rows": TRAIN_ROWS,
        "test_rows": TEST_ROWS,
        "epochs": 1,
        "train_s": round(train_s, 1),
        "per_class_f1": {c: round(v["f1"], 4) for c, v in m["per_class"].items()},
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=list(TASKS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[42])
    args = ap.parse_args()
    for name in args.only:
        for seed in args.seeds:
            result = run_task(name, seed)
            results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            results[f"{name}/s{seed}"] = result
            RESULTS.write_text(json.dumps(results, indent=2))
            print(f"{name}/s{seed}: {json.dumps({k: v for k, v in result.items() if k != 'per_class_f1'})}", flush=True)


if __name__ == "__main__":
    main()
