"""The CUDA check: the same textlora code on a GPU, timed and scored, in a few minutes.

Run through ``bench/gpu_check.sh`` (which says how). Each check is one ``python -m textlora``
command, timed from outside, so it measures what a user's command costs (imports included). In this
order, shortest first, within one budget of seconds (a check that would outrun it is stopped):

1. 1,000 rows (250 a class) generated from the AG News prompt file;
2. the main job's classifier: MiniLM with the main job's model, LoRA and train settings on its rows
   (the AG News training rows plus the main job's synthetic rows where they exist), one epoch;
3. the same classifier under a 1-GPU ``torchrun`` (DDP over nccl), on 4,000 of the rows;
4. a roberta-base-sized encoder from a local folder (12 layers, 768 wide) with the notebook's LoRA
   settings (r=4, alpha=64 on query/key/value, bias "all") on its top 3 layers, with the prefix
   cache built on the GPU, one epoch;
5. the same encoder with LoRA on all its layers, one epoch.

With ``--assets DIR`` (a folder ``bench/gpu_assets.py`` wrote, for a machine without the model packages
or ``../shared``), MiniLM and the data come from there; the generator is then a SmolLM2-135M-shaped
model with random weights (its time is the real model's time at the same lengths; its rows are noise),
and the roberta-sized encoder is randomly initialised in both cases (its accuracy says only that
training moves it, not what roberta-base scores). Prints one line a check and writes the figures to
``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MAIN_JOB = ROOT / "configs" / "agnews-pipeline.yaml"


def _materialize(assets: Path, work: Path) -> dict:
    """Model folders from the assets: MiniLM back in fp32, a random SmolLM2-shaped generator."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    out = {}
    src = assets / "minilm"
    dst = work / "minilm"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.safetensors" and f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    state = {k: v.float() for k, v in load_file(src / "model.safetensors").items()}
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    out["minilm"] = str(dst)
    lm = work / "lm-random"
    lm.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(assets / "smollm2")
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.save_pretrained(lm)
    for f in (assets / "smollm2").iterdir():
        if f.name not in ("config.json",) and f.is_file():
            (lm / f.name).write_bytes(f.read_bytes())
    out["lm"] = str(lm)
    return out


def _roberta_sized(tokenizer_dir: Path, work: Path) -> str:
    """A randomly initialised roberta-base-shaped encoder (12 x 768) with MiniLM's WordPiece tokenizer."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    folder = work / "roberta-sized"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                           max_position_embeddings=514, pad_token_id=0, bos_token_id=101, eos_token_id=102, type_vocab_size=1)
    RobertaModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        f = tokenizer_dir / name
        if f.is_file():
            (folder / name).write_bytes(f.read_bytes())
    return str(folder)


def _train_config(work: Path, name: str, model: str, data: dict, **changes) -> Path:
    """The main job's model/lora/train sections, with ``changes`` (dotted keys) applied."""
    main = yaml.safe_load(MAIN_JOB.read_text())
    config = {
        "output_dir": str(work / name),
        "seed": 42,
        "model": dict(main["model"], name=model),
        "lora": dict(main["lora"]),
        "train": dict(main["train"]),
        "data": data,
    }
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        if value is None:
            config[section].pop(key, None)
        else:
            config[section][key] = value
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run(label: str, cmd: list[str], timeout: float, log: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    try:
        with log.open("w") as f:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = 124
    seconds = time.perf_counter() - start
    tail = [line for line in log.read_text(errors="replace").replace("\r", "\n").splitlines() if line.strip()]
    return seconds, rc, tail[-1] if tail else ""


def _scores(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    best = next((h for h in m["history"] if h["step"] == m["best"]["step"]), m["best"])
    out = {"dev": round(best["accuracy"], 4), "train_seconds": m.get("train_seconds"), "precision": m.get("precision"),
           "trainable": m.get("trainable_params", {}).get("total")}
    for name, s in (best.get("eval_sets") or {}).items():
        out[name] = round(s["accuracy"], 4)
    if m.get("prefix_cache"):
        out["prefix_cache"] = {k: m["prefix_cache"].get(k) for k in ("used", "split", "texts", "where", "seconds")}
    return out


def _save(path: Path, results: dict) -> None:
    """Written after every check, so a check that outruns the whole script's limit loses nothing before it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--assets", type=Path, help="folder written by bench/gpu_assets.py")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "agnews")
    p.add_argument("--synthetic", type=Path, default=ROOT / "runs" / "agnews-target" / "synthetic" / "train.csv")
    p.add_argument("--work", type=Path, default=Path("/tmp/textlora-gpu-check"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    p.add_argument("--budget", type=float, default=270, help="seconds all checks together may take (a check is stopped when they run out)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these checks: minilm roberta roberta-top3 minilm-torchrun generate")
    p.add_argument("--rows_per_class", type=int, default=250, help="rows generated a class (4 classes)")
    args = p.parse_args(argv)

    import torch

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    try:
        import peft
        import transformers

        info.update(transformers=transformers.__version__, peft=peft.__version__)
    except ImportError as e:
        info["import_error"] = str(e)
    print("machine:", json.dumps(info), flush=True)
    if not torch.cuda.is_available():
        print("no CUDA device: this check is for a GPU machine", file=sys.stderr)

    start = time.perf_counter()
    if args.assets:
        folders = _materialize(args.assets, work)
        data_dir, synthetic = args.assets / "data", args.assets / "data" / "synthetic.csv"
    else:
        from textlora.sources import minilm_dir

        folders = {"minilm": "minilm", "lm": "smollm2"}
        data_dir, synthetic = args.data, args.synthetic
    tokenizer_dir = Path(folders["minilm"]) if args.assets else Path(minilm_dir())
    folders["roberta"] = _roberta_sized(tokenizer_dir, work)
    print(f"setup: {time.perf_counter() - start:.1f} s (model folders in {work})", flush=True)

    data = {"train": str(data_dir / "train.csv"), "label_names": ["World", "Sports", "Business", "Sci/Tech"], "val_fraction": 0.1,
            "eval_sets": {"target": str(data_dir / "target_dev_labelled.csv"), "test_labelled": str(data_dir / "test_labelled.csv")}}
    if synthetic.is_file():
        data["extra_train"] = [str(synthetic)]
    notebook_lora = {"lora.r": 4, "lora.alpha": 64, "lora.target_modules": ["query", "key", "value"], "lora.bias": "all", "train.learning_rate": 5.0e-4}
    # torchrun starts a process group and DDP: 4,000 rows show it works without paying for a full epoch again
    subset = work / "train-4000.csv"
    subset.write_text("".join(Path(data["train"]).read_text().splitlines(keepends=True)[:4001]))
    small = dict(data, train=str(subset), extra_train=[])
    gen = {"model": folders["lm"], "prompts": str(ROOT / "configs" / "prompts" / "agnews.yaml"), "output": str(work / "generated.csv"),
           "rows_per_class": args.rows_per_class, "batch_size": 256, "seed": 42}
    gen_config = work / "generate.yaml"
    gen_config.write_text(yaml.safe_dump(gen, sort_keys=False))
    py = [sys.executable, "-m", "textlora"]
    gen_label = f"generate {4 * args.rows_per_class:,} rows" + (" (random-weight SmolLM2-shaped model)" if args.assets else " (SmolLM2-135M)")
    # shortest first, so a slow machine loses the last check rather than all of them
    checks = [
        (gen_label, "generate", py + ["generate", "--config", str(gen_config), "--overwrite"]),
        ("main job classifier (MiniLM)", "minilm", py + ["train", "--config", str(_train_config(work, "minilm", folders["minilm"], data)), "--overwrite"]),
        ("main job classifier under 1-GPU torchrun, 4,000 rows", "minilm-torchrun",
         [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "textlora", "train",
          "--config", str(_train_config(work, "minilm-torchrun", folders["minilm"], small)), "--overwrite"]),
        ("roberta-base-sized, top 3 layers + prefix cache", "roberta-top3",
         py + ["train", "--config", str(_train_config(work, "roberta-top3", folders["roberta"], data, **notebook_lora, **{"lora.layers": 3})), "--overwrite"]),
        ("roberta-base-sized, notebook LoRA", "roberta", py + ["train", "--config", str(_train_config(work, "roberta", folders["roberta"], data, **notebook_lora)), "--overwrite"]),
    ]
    results = {"machine": info, "checks": []}
    wanted = set(args.only or [name for _, name, _ in checks])
    for label, name, cmd in checks:
        if name not in wanted:
            continue
        left = args.budget - (time.perf_counter() - start)
        if left < 10:
            results["checks"].append({"check": label, "skipped": f"the {args.budget:.0f} s budget is spent"})
            print(json.dumps(results["checks"][-1]), flush=True)
            continue
        seconds, rc, last = _run(label, cmd, left, work / f"{name}.log")
        row = {"check": label, "seconds": round(seconds, 1), "rc": rc}
        if rc != 0:
            row["last_line"] = last[-300:]
        elif name == "generate":
            summary = json.loads((work / "generated.generate.json").read_text())
            row.update({k: summary[k] for k in ("rows_written", "seconds_this_run", "tokens_per_s", "rows_per_s", "precision", "device") if k in summary})
        else:
            row.update(_scores(work / name))
        results["checks"].append(row)
        print(json.dumps(row), flush=True)
        _save(args.out, results)
    return _finish(args.out, results, start)


def _finish(out: Path, results: dict, start: float) -> int:
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    _save(out, results)
    print(f"total: {results['total_seconds']} s; figures in {out}", flush=True)
    return 0 if all(r.get("rc") == 0 for r in results["checks"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
