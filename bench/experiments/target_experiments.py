"""What moves target-domain accuracy? Each method measured on in-domain dev AND the labelled target sample.

    python bench/target_experiments.py --list
    python bench/target_experiments.py --only base pseudo synth --seeds 42 43

Every run trains the offline default recipe (configs/agnews-minilm.yaml: MiniLM-L6 + LoRA r=8, 2
epochs) on the 20,040-row seeded split of the shared train.csv, plus the experiment's extra rows,
and is measured on the seed's in-domain dev split (2,226 rows) and on
../shared/data/agnews/target_dev_labelled.csv (288 machine-written target texts; never trained on;
its texts are also excluded from LM adaptation and pseudo-labelling). Results are saved as each
run ends in bench/results/target.json: accuracies, the sample's standard error, and the wall
time of every stage. Runs share the adapted LM and the generated rows (cached by `--reuse`).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "agnews"
SAMPLE = DATA / "target_dev_labelled.csv"
WORK = ROOT / "runs" / "target-bench"
RESULTS = ROOT / "bench" / "results" / "target.json"
SYN = WORK / "synthetic"


def sh(*args: str) -> float:
    """Run a textlora verb in a fresh process; return its wall time in seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "textlora", *args], cwd=ROOT, check=True)
    return round(time.perf_counter() - t0, 1)


def adapt(stages: dict) -> Path:
    out = WORK / "smollm2-target"
    stages["adapt_s"] = sh("adapt", "--config", "configs/agnews-adapt.yaml", "--output_dir", str(out), "--exclude", f"[{SAMPLE}]", "--reuse")
    return out


# Rows as long as the target texts (mean ~50 words, ~65 SmolLM2 tokens): EOS is never sampled, so
# each row runs to its drawn length (the default rows stop at EOS, at ~22 words on average).
LONG = {"stop_at_eos": "false", "length_mean": "64", "length_std": "24"}


GIVEN_ROWS: dict[int, Path] = {}  # --rows FILE: use these generated rows (for the default settings) instead of generating


def generate(stages: dict, rows_per_class: int, settings: dict | None = None) -> Path:
    if not settings and rows_per_class in GIVEN_ROWS:
        stages["generate_s"] = "given (--rows)"
        return GIVEN_ROWS[rows_per_class]
    if rows_per_class == 4000 and not settings:  # the 2,000-a-class rows plus 2,000 a class more, sampled with another seed
        import pandas as pd

        first = generate(stages, 2000)
        before = stages["generate_s"]
        more = generate(stages, 2000, {"seed": "7"})
        stages["generate_s"] = [before, stages["generate_s"]]
        out = SYN / "smollm2-4000.csv"
        pd.concat([pd.read_csv(f, keep_default_na=False) for f in (first, more)]).to_csv(out, index=False)
        return out
    lm = adapt(stages)
    settings = settings or {}
    suffix = "-long" if settings == LONG else "".join(f"-{k}{v}" for k, v in settings.items())
    out = SYN / f"smollm2-{rows_per_class}{suffix}.csv"
    extra = [a for k, v in settings.items() for a in (f"--{k}", v)]
    stages["generate_s"] = sh(
        "generate",
        "--config",
        "configs/agnews-generate.yaml",
        "--model",
        str(lm),
        "--output",
        str(out),
        "--rows_per_class",
        str(rows_per_class),
        "--reuse",
        *extra,
    )
    return out


def filtered(
    stages: dict,
    rows_per_class: int,
    classifier: Path | None = None,
    keep_prompt: bool = False,
    relabel: bool = False,
    min_conf: float = 0.7,
    settings: dict | None = None,
) -> Path:
    import pandas as pd

    src = generate(stages, rows_per_class, settings)
    if keep_prompt:  # the same sampled continuations with their prompt in front (generation is seeded per batch)
        df = pd.read_csv(src, keep_default_na=False)
        df["text"] = [" ".join((p + t).split()) if t[:1] in (",", ".", "'", ";", ":") else f"{p} {t}" for p, t in zip(df["prompt"], df["text"])]
        src = src.with_name(src.stem + "-keep.csv")
        df.to_csv(src, index=False)
    tag = ("-keep" if keep_prompt else "") + (f"-{'relabel' if relabel else 'agree'}{min_conf:g}" if classifier else "")
    out = SYN / f"{src.stem.removesuffix('-keep')}{tag}.filtered.csv"
    extra = ["--classifier", str(classifier), "--relabel", str(relabel).lower(), "--min_confidence", str(min_conf)] if classifier else []
    stages["filter_s"] = sh("filter", "--config", "configs/agnews-filter.yaml", "--input", str(src), "--output", str(out), "--overwrite", *extra)
    return out


def pseudo(stages: dict, teacher: Path, min_conf: float = 0.9, cap: int | None = None) -> Path:
    out = WORK / "pseudo" / f"{teacher.name}-c{min_conf:g}{f'-cap{cap}' if cap else ''}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["--min-confidence", str(min_conf), "--balance", "--exclude", str(SAMPLE), "--overwrite"] + (["--max-per-class", str(cap)] if cap else [])
    stages["pseudolabel_s"] = sh("pseudolabel", "--model", str(teacher), "--data", str(DATA / "target_unlabelled.csv"), "--output", str(out), *args)
    return out


def train(name: str, seed: int, extra: list[Path], stages: dict, overrides: list[str] = ()) -> dict:
    run = WORK / f"{name}-s{seed}"
    stages["train_s"] = sh(
        "train",
        "--config",
        "configs/agnews-minilm.yaml",
        "--output_dir",
        str(run),
        "--seed",
        str(seed),
        "--data.extra_train",
        json.dumps([str(e) for e in extra]),
        "--data.eval_sets",
        json.dumps({"target": str(SAMPLE)}),
        "--overwrite",
        *overrides,
    )
    return summarize(run)


def summarize(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    best, t = m["best"], m["best"]["eval_sets"]["target"]
    return {
        "dev_accuracy": best["accuracy"],
        "target_accuracy": t["accuracy"],
        "target_se": math.sqrt(t["accuracy"] * (1 - t["accuracy"]) / t["n"]),
        "target_macro_f1": t["macro_f1"],
        "per_epoch": [(h["accuracy"], h["eval_sets"]["target"]["accuracy"]) for h in m["history"]],
        "train_rows": m["data"]["train_rows"],
        "extra_rows": m["data"]["extra_rows"],
        "run": str(run.relative_to(ROOT)),
    }


def teacher(seed: int, name: str = "base") -> Path:
    """The run of experiment ``name`` for this seed (trained first if missing)."""
    run = WORK / f"{name}-s{seed}"
    if not (run / "textlora.json").is_file():
        run_experiment(name, seed)
    return run


EXPERIMENTS = {
    "base": lambda seed, st: train("base", seed, [], st),
    "seed-synthetic": lambda seed, st: train("seed-synthetic", seed, [DATA / "seed_synthetic.csv"], st),
    "pseudo": lambda seed, st: train("pseudo", seed, [pseudo(st, teacher(seed))], st),
    "pseudo-c0.7-cap1500": lambda seed, st: train("pseudo-c0.7-cap1500", seed, [pseudo(st, teacher(seed), 0.7, 1500)], st),
    "synth": lambda seed, st: train("synth", seed, [filtered(st, 1000)], st),
    "synth-keep": lambda seed, st: train("synth-keep", seed, [filtered(st, 1000, keep_prompt=True)], st),
    "synth-agree": lambda seed, st: train("synth-agree", seed, [filtered(st, 1000, classifier=teacher(seed))], st),
    "synth-relabel": lambda seed, st: train("synth-relabel", seed, [filtered(st, 1000, classifier=teacher(seed), relabel=True)], st),
    "synth-long": lambda seed, st: train("synth-long", seed, [filtered(st, 1000, settings=LONG)], st),
    "synth-2000": lambda seed, st: train("synth-2000", seed, [filtered(st, 2000)], st),
    "synth-4000": lambda seed, st: train("synth-4000", seed, [filtered(st, 4000)], st),
    # our rows and the original project's 12,000 GPT-2 rows together
    "synth+seed-synthetic": lambda seed, st: train("synth+seed-synthetic", seed, [filtered(st, 1000), DATA / "seed_synthetic.csv"], st),
    "synth+pseudo": lambda seed, st: train("synth+pseudo", seed, [filtered(st, 1000), pseudo(st, teacher(seed))], st),
    # one self-training round on top of the synthetic rows: the synth run labels the target texts
    "synth-keep+selftrain": lambda seed, st: train(
        "synth-keep+selftrain", seed, [filtered(st, 1000, keep_prompt=True), pseudo(st, teacher(seed, "synth-keep"))], st
    ),
    "synth+selftrain": lambda seed, st: train("synth+selftrain", seed, [filtered(st, 1000), pseudo(st, teacher(seed, "synth"))], st),
}


def run_experiment(name: str, seed: int) -> dict:
    stages: dict = {}
    result = EXPERIMENTS[name](seed, stages)
    result["stages"] = stages
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[f"{name}/s{seed}"] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"{name}/s{seed}: dev {result['dev_accuracy']:.4f}, target {result['target_accuracy']:.4f} +- {result['target_se']:.4f}; {stages}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=list(EXPERIMENTS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[42])
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--rows", type=Path, help="generated rows (1,000 a class, default settings) to filter instead of generating them")
    args = ap.parse_args()
    if args.rows:
        GIVEN_ROWS[1000] = args.rows.resolve()
    if args.list:
        print("\n".join(EXPERIMENTS))
        return
    for name in args.only:
        for seed in args.seeds:
            run_experiment(name, seed)


if __name__ == "__main__":
    main()
