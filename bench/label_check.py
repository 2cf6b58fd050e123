"""The pipeline's label check (textlora.augment.check) on generated rows that earlier runs made.

    python bench/label_check.py --task dvd --rows runs/domain-bench/dvd-instruct-s42/synthetic/rows.filtered.csv --name instruct --seeds 42 43

For each seed it rebuilds that seed's split of the task's source rows (the shipped pipeline config:
`dvd` or `agnews`), runs the check on the rows as the pipeline does (the probe trains on the source
training split plus 80% of the rows), and prints the probe's dev accuracy, its accuracy on the
held-out rows, the estimated share of mislabelled rows and the verdict at the default threshold. Set beside what the rows did
to the target accuracy (bench/domain.py), it says whether the check separates rows that help from
rows that hurt. Results are appended to bench/results/label_check.json with the CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from machine import cpu  # bench/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "bench" / "results" / "label_check.json"
TASKS = {"dvd": "configs/amazon-dvd-electronics.yaml", "agnews": "configs/agnews-pipeline.yaml"}


def main() -> None:
    import pandas as pd

    from textlora.augment.check import label_check
    from textlora.config import config_from_dict
    from textlora.pipeline import SyntheticConfig, load_pipeline_config, source_splits

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--rows", required=True, help="a generated (filtered) rows file: text, label (class names)")
    ap.add_argument("--name", required=True, help="what made the rows (e.g. instruct), for the record")
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43])
    ap.add_argument("--max-noise", type=float, default=SyntheticConfig.check_max_noise)
    args = ap.parse_args()
    machine = cpu()
    rows = pd.read_csv(args.rows, keep_default_na=False, dtype={"label": str})
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": []}
    for seed in args.seeds:
        cfg = config_from_dict(copy.deepcopy(load_pipeline_config(str(ROOT / TASKS[args.task])).classifier))
        cfg.data.train = str((ROOT / cfg.data.train).resolve()) if not Path(cfg.data.train).is_absolute() else cfg.data.train
        splits = source_splits(cfg, seed)
        names = splits.label_names
        t0 = time.perf_counter()
        r = label_check(
            (splits.train_texts, [names[k] for k in splits.train_labels]),
            (splits.val_texts, [names[k] for k in splits.val_labels]),
            (rows["text"].tolist(), rows["label"].tolist()),
            args.max_noise,
            seed=seed,
        )
        record = {
            "task": args.task,
            "rows_from": args.name,
            "rows_file": args.rows,
            "rows": len(rows),
            "seed": seed,
            **r,
            "gap": round(r["heldout"] - r["dev"], 4),
            "seconds": round(time.perf_counter() - t0, 1),
            "cpu": machine,
            "when": time.strftime("%Y-%m-%d %H:%M"),
        }
        print(json.dumps({k: v for k, v in record.items() if k != "cpu"}), flush=True)
        saved["runs"] = [x for x in saved["runs"] if (x["task"], x["rows_from"], x["seed"]) != (args.task, args.name, seed)] + [record]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(saved, indent=2))


if __name__ == "__main__":
    main()
