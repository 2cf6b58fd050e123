"""Do target-adapted synthetic rows help? The evidence for the augmentation feature, on the shared AG News rows.

    python bench/synthetic_experiments.py          # ~30 minutes on 2 cores

Steps (each result is saved as soon as it exists, in bench/results/synthetic.json):
1. a fixed dev split: the default preset's seeded 10% of train.csv (2,226 rows), written once;
2. adapt SmolLM2-135M to the unlabelled target texts (perplexity on held-out target texts before/after);
3. generate rows from configs/prompts/agnews.yaml with the adapted model (tokens/s, rows/s);
4. low-resource setting, 100 real rows a class: train without synthetic rows; filter the generated rows
   with that classifier (LAMBADA) and train with them; train with the original project's
   seed_synthetic.csv (12,000 unfiltered GPT-2 rows). Same optimizer steps and dev split for each;
5. full setting: the 20k-row training split for one epoch, without and with the filtered rows
   (filtered by a classifier trained on the full real split).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "agnews"
OUT = ROOT / "bench" / "results"
WORK = OUT / "synthetic"
BASE = ROOT / "configs" / "agnews-minilm.yaml"
RESULTS = OUT / "synthetic.json"


def save(key: str, value) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[key] = value
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"{key}: {json.dumps(value)[:400]}", flush=True)


def done(key: str) -> bool:
    return RESULTS.exists() and key in json.loads(RESULTS.read_text())


def train_run(name: str, train_csv: Path, dev_csv: Path, extra: list[str], overrides: list[str]) -> dict:
    from textlora.config import load_config
    from textlora.training import train

    cfg = load_config(
        BASE,
        ["--output_dir", str(WORK / name), "--data.train", str(train_csv), "--data.dev", str(dev_csv), "--data.extra_train", json.dumps(extra), *overrides],
    )
    run = train(cfg, overwrite=True)
    m = json.loads((run / "metrics.json").read_text())
    return {
        "dev_accuracy": m["best"]["accuracy"],
        "dev_macro_f1": m["best"]["macro_f1"],
        "best_step": m["best"]["step"],
        "train_rows": m["data"]["train_rows"],
        "extra_rows": m["data"]["extra_rows"],
        "train_seconds": m["train_seconds"],
        "run": str(run),
    }


def main() -> None:
    from textlora.augment.adapt import AdaptConfig, adapt
    from textlora.augment.filter import FilterConfig, filter_rows
    from textlora.augment.generate import GenerateConfig, generate
    from textlora.config import load_config
    from textlora.data import load_splits

    WORK.mkdir(parents=True, exist_ok=True)
    cfg = load_config(BASE)
    splits = load_splits(cfg.data, cfg.seed)
    dev, full_train, low = WORK / "dev.csv", WORK / "train_full.csv", WORK / "train_100.csv"
    pd.DataFrame({"text": splits.val_texts, "label": splits.val_labels}).to_csv(dev, index=False)
    tr = pd.DataFrame({"text": splits.train_texts, "label": splits.train_labels})
    tr.to_csv(full_train, index=False)
    tr.groupby("label", group_keys=False).sample(100, random_state=0).to_csv(low, index=False)

    adapted = WORK / "smollm2-adapted"
    if not done("adapt"):
        start = time.perf_counter()
        adapt(load_config(ROOT / "configs" / "agnews-adapt.yaml", ["--output_dir", str(adapted)], cls=AdaptConfig), overwrite=True)
        m = json.loads((adapted / "adapt_metrics.json").read_text())
        save("adapt", {**m, "wall_seconds": time.perf_counter() - start})
    generated = WORK / "generated.csv"
    if not done("generate"):
        generate(
            load_config(ROOT / "configs" / "agnews-generate.yaml", ["--model", str(adapted), "--output", str(generated)], cls=GenerateConfig), overwrite=True
        )
        save("generate", json.loads(generated.with_suffix(".generate.json").read_text()))

    steps = ["--train.max_steps", "300", "--train.eval_strategy", "steps", "--train.eval_steps", "50", "--train.save_total_limit", "1"]
    if not done("low_real_only"):
        save("low_real_only", train_run("low-real", low, dev, [], steps))
    low_filtered = WORK / "generated.filtered-low.csv"
    if not done("filter_low"):
        filter_rows(FilterConfig(input=str(generated), output=str(low_filtered), real=str(full_train), classifier=str(WORK / "low-real")), overwrite=True)
        save("filter_low", json.loads(low_filtered.with_suffix(".report.json").read_text()))
    if not done("low_with_filtered"):
        save("low_with_filtered", train_run("low-filtered", low, dev, [str(low_filtered)], steps))
    if not done("low_with_unfiltered_ours"):
        save("low_with_unfiltered_ours", train_run("low-unfiltered", low, dev, [str(generated)], steps))
    if not done("low_with_seed"):
        save("low_with_seed", train_run("low-seed", low, dev, [str(SHARED / "seed_synthetic.csv")], steps))

    one_epoch = ["--train.epochs", "1"]
    if not done("full_real_only"):
        save("full_real_only", train_run("full-real", full_train, dev, [], one_epoch))
    full_filtered = WORK / "generated.filtered-full.csv"
    if not done("filter_full"):
        filter_rows(FilterConfig(input=str(generated), output=str(full_filtered), real=str(full_train), classifier=str(WORK / "full-real")), overwrite=True)
        save("filter_full", json.loads(full_filtered.with_suffix(".report.json").read_text()))
    if not done("full_with_filtered"):
        save("full_with_filtered", train_run("full-filtered", full_train, dev, [str(full_filtered)], one_epoch))


if __name__ == "__main__":
    main()
