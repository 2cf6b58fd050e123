"""Does the method help under a domain shift, on more than one task? `textlora pipeline` variants, measured.

    python bench/domain.py --tasks dvd --variants source-only instruct source labelled --seeds 42 43
    python bench/domain.py --tasks agnews --variants file --seeds 42

Tasks are the shipped pipeline configs: `dvd` (configs/amazon-dvd-electronics.yaml: DVD reviews ->
electronics reviews), `agnews` (configs/agnews-pipeline.yaml: AG News -> the competition's target
texts) and `imdb` (the DVD config with ../shared/data/imdb_airline's three files: movie reviews ->
airline reviews). Variants change one thing each:

- `source-only`: no synthetic rows (`--synthetic.enabled false`): the same classifier on the source rows;
- `instruct`, `source`, `labelled`: the automatic prompt modes (`--synthetic.prompts MODE`);
- `rewrite`: labelled source rows rewritten into the target's words by the adapted LM
  (`--synthetic.prompts rewrite`, textlora.augment.rewrite);
- `file`: the config's own prompt setting (AG News: the hand-written prompt file);
- `instruct+st`: instruct plus one self-training round;
- `contrastive`, `mlm`: source-only plus a target objective learnt with the classifier
  (`--train.target_objective`: SimCSE or masked-LM on the target texts, textlora.objectives);
- `source-only+ht`, `instruct+ht`: those two with `--model.truncation head_tail` (a long text keeps its
  first quarter and its end); measured at commit f667ad0 while the DVD config truncated at the head
  (commit 1f61994). The config now keeps head and tail, so they equal the plain variants there.

`--set KEY VALUE --tag TAG` adds one more override to every run (recorded as variant@TAG). Since
commit 31cf828 the pipeline drops generated rows that fail its label check (`synthetic.check`), so a
prompt mode whose rows fail trains on the source rows alone; `--set synthetic.check false --tag
unchecked` measures the rows themselves, as every run before commit 31cf828 did. Each record says what
the check found (`label_check`).

Seeds change the classifier only (split, init, order): the adapted LM and the generated rows of a
variant are shared across seeds, and the LM across variants that adapt alike (`--adapt.output_dir`,
`--generate.output`), as the pipeline's content cache allows. For each run it records dev and target accuracy (with the target's standard
error), every stage's wall time from the pipeline's summary, and, for the label-free choice of a
checkpoint, the epoch that the dev split and the held-out generated rows ("synthetic") would each
choose, with the target accuracy at that epoch (the target only measures). Results are appended to
bench/results/domain.json with the CPU they ran on.
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
RESULTS = ROOT / "bench" / "results" / "domain.json"
WORK = ROOT / "runs" / "domain-bench"
TASKS = {"dvd": "configs/amazon-dvd-electronics.yaml", "agnews": "configs/agnews-pipeline.yaml", "imdb": "configs/amazon-dvd-electronics.yaml"}
IMDB = "../shared/data/imdb_airline"
TASK_FILES = {  # a task that borrows another's config: its own three files
    "imdb": ["--data.train", f"{IMDB}/source_train.csv", "--target.texts", f"{IMDB}/target_unlabelled.csv", "--data.eval_sets.target", f"{IMDB}/target_test.csv"]
}
VARIANTS = {
    "source-only": ["--synthetic.enabled", "false"],
    "instruct": ["--synthetic.prompts", "instruct"],
    "source": ["--synthetic.prompts", "source"],
    "labelled": ["--synthetic.prompts", "labelled"],
    "rewrite": ["--synthetic.prompts", "rewrite"],
    "file": [],
    "instruct+st": ["--synthetic.prompts", "instruct", "--self_training.rounds", "1"],
    "source-only+ht": ["--synthetic.enabled", "false", "--model.truncation", "head_tail"],
    "instruct+ht": ["--synthetic.prompts", "instruct", "--model.truncation", "head_tail"],
    "contrastive": ["--synthetic.enabled", "false", "--train.target_objective", "contrastive"],
    "mlm": ["--synthetic.enabled", "false", "--train.target_objective", "mlm"],
}
SHARED = {"instruct+st": "instruct", "instruct+ht": "instruct"}  # variants that generate exactly what another one does


def selection(run: Path) -> dict:
    """Which epoch the dev split and the held-out generated rows would choose, and the target accuracy there."""
    history = json.loads((run / "metrics.json").read_text())["history"]
    out = {"epochs": [{"epoch": h["epoch"], "dev": h["accuracy"], **{n: s["accuracy"] for n, s in (h.get("eval_sets") or {}).items()}} for h in history]}
    for signal in ("dev", "synthetic"):
        scored = [e for e in out["epochs"] if signal in e]
        if scored and all("target" in e for e in scored):
            best = max(scored, key=lambda e: e[signal])  # the first of equals (training itself now breaks ties by the set's loss)
            out[f"by_{signal}"] = {"epoch": best["epoch"], "target": best["target"]}
    return out


def run_one(task: str, variant: str, seed: int, extra: list[str], tag: str) -> dict:
    name = f"{variant}@{tag}" if tag else variant
    out = WORK / f"{task}-{name}-s{seed}"
    share = WORK / f"{task}-{SHARED.get(variant, variant)}-shared"
    lm = WORK / f"{task}-lm-{'labelled' if variant == 'labelled' else 'target'}"  # only label-conditioned adaptation differs
    argv = [sys.executable, "-m", "textlora", "pipeline", "--config", TASKS[task], "--output_dir", str(out), "--seed", str(seed), *TASK_FILES.get(task, []), *VARIANTS[variant], *extra]
    if "--synthetic.enabled" not in VARIANTS[variant]:  # only source-only variants switch the synthetic rows off
        argv += ["--adapt.output_dir", str(lm), "--generate.output", str(share / "rows.csv")]
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True)
    summary = json.loads((out / "pipeline.json").read_text())
    target = summary["metrics"]["target"]
    record = {
        "task": task,
        "variant": name,
        "overrides": extra,
        "seed": seed,
        "dev": summary["metrics"]["dev"]["accuracy"],
        "target": target["accuracy"],
        "target_se": round(math.sqrt(target["accuracy"] * (1 - target["accuracy"]) / target["n"]), 4),
        "target_n": target["n"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "stages": {s["stage"]: {"seconds": s.get("seconds"), "cached": s["cached"], "rows": s.get("rows")} for s in summary["stages"]},
        "selection": selection(out / "classifier"),
        "label_check": json.loads((out / "stages.json").read_text()).get("filter", {}).get("check"),
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(record), flush=True)
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["dvd"], choices=sorted(TASKS))
    ap.add_argument("--variants", nargs="+", default=["source-only", "instruct"], choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43])
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help="one more pipeline override for every run, e.g. --set train.learning_rate 2e-3")
    ap.add_argument("--tag", default="", help="names the runs of a --set (variant@TAG); required with --set")
    args = ap.parse_args()
    if args.set and not args.tag:
        ap.error("--set needs --tag, so that its runs are told apart from the plain variant's")
    extra = [x for key, value in args.set for x in (f"--{key}", value)]
    machine = cpu()
    print(f"cpu: {machine}", flush=True)
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": []}
    for task in args.tasks:
        for variant in args.variants:
            for seed in args.seeds:
                record = {**run_one(task, variant, seed, extra, args.tag), "cpu": machine}
                saved["runs"] = [
                    r
                    for r in saved["runs"]
                    if (r["task"], r["variant"], r["seed"], r["cpu"]["model_name"]) != (task, record["variant"], seed, machine.get("model_name"))
                ]
                saved["runs"].append(record)
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps(saved, indent=2))
    print(table(saved["runs"]))


def table(runs: list[dict]) -> str:
    """A markdown table: one row a run, stage seconds (cached stages in brackets)."""
    lines = [
        "| task | variant | seed | dev | target ± SE | by dev: epoch / target | by synthetic: epoch / target | stages (s) | CPU |",
        "|---|---|---|---:|---:|---|---|---|---|",
    ]
    for r in runs:
        sel = r["selection"]
        pick = {k: f"{sel[k]['epoch']:g} / {sel[k]['target']:.4f}" if k in sel else "" for k in ("by_dev", "by_synthetic")}
        stages = ", ".join(f"{n} {'[' if s['cached'] else ''}{s['seconds']:.0f}{']' if s['cached'] else ''}" for n, s in r["stages"].items())
        lines.append(
            f"| {r['task']} | {r['variant']} | {r['seed']} | {r['dev']:.4f} | {r['target']:.4f} ± {r['target_se']:.3f} | {pick['by_dev']} | {pick['by_synthetic']} | {stages} | {r['cpu'].get('model_name', '')} ({r['cpu'].get('torch_capability', '')}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
