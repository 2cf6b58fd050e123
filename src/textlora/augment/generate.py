"""Generate labelled rows from per-class prompts with a (target-adapted) causal LM.

Rows are numbered class by class; row i's prompt and length come from a generator seeded with
(seed, i), and batch k (rows k*B .. k*B+B-1) samples with seed (seed, k). Finished batches are
appended to ``OUTPUT.partial.csv`` (one file a process under torchrun), so an interrupted run
continues where it stopped and produces exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textlora.config import check
from textlora.errors import UserError


@dataclass
class GenerateConfig:
    model: str = "smollm2"  # the adapted folder from `textlora adapt`, "smollm2", gpt2, ...
    prompts: str | None = None  # YAML: classes: {name: [prompt, ...]}; each row's label is its class *name*
    output: str | None = None  # .csv or .parquet
    rows_per_class: int = 250  # rows generated for each class of the prompt file
    batch_size: int = 256  # rows sampled together; 256 ran ~1.15x faster than 128 on 2 cores
    top_k: int = 50  # sample among the k most likely tokens
    top_p: float = 0.95  # ... and among those, the smallest set holding this much probability
    repetition_penalty: float = 1.3  # > 1 makes tokens already in the row less likely
    length_mean: float = 45  # new tokens per row ~ normal(mean, std), clamped to [length_min, length_max]
    length_std: float = 12  # spread of the new tokens per row
    length_min: int = 1  # fewest new tokens a row
    length_max: int = 128  # most new tokens a row
    keep_prompt: bool = False  # the row's text starts with its prompt (else only the new tokens)
    stop_at_eos: bool = True  # False: EOS is never sampled, so every row runs to its drawn length
    seed: int = 42  # batch k samples with seed (seed, k): the same rows however the run is split or resumed
    precision: str = "auto"  # auto (bf16 weights where the hardware has bf16) | bf16 | fp32
    fused: bool = True  # Llama-family models (SmolLM2) run a fused forward; False: transformers' forward

    def __post_init__(self) -> None:
        check(self.prompts is not None, "prompts", "a prompt file (YAML: classes: {name: [prompt, ...]})", self.prompts)
        check(self.output is not None, "output", "a .csv or .parquet file to write", self.output)
        check(self.precision in ("auto", "bf16", "fp32"), "precision", "auto, bf16 or fp32", self.precision)
        check(self.rows_per_class >= 1, "rows_per_class", "an integer >= 1", self.rows_per_class)
        check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        check(self.top_k >= 0, "top_k", "an integer >= 0", self.top_k)
        check(0 < self.top_p <= 1, "top_p", "a number in (0, 1]", self.top_p)
        check(self.repetition_penalty > 0, "repetition_penalty", "a number > 0", self.repetition_penalty)
        check(1 <= self.length_min <= self.length_max, "length_min/length_max", "1 <= length_min <= length_max", (self.length_min, self.length_max))


def read_prompts(path: str, label_names: list[str] | None = None) -> dict[str, list[str]]:
    """{class name: prompts}; every class needs at least one non-empty prompt.

    With ``label_names`` (the classifier's classes), the file must name exactly those classes, in
    any order, and the result is in ``label_names`` order: a reordered file plans the same rows.
    """
    from textlora.config import read_yaml

    raw = read_yaml(path)
    classes = raw.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise UserError(f"prompts {path}: expected a 'classes' mapping of class name -> list of prompts")
    out = {}
    for name, prompts in classes.items():
        prompts = [str(p) for p in (prompts or []) if str(p).strip()] if isinstance(prompts, list) else []
        if not prompts:
            raise UserError(f"prompts {path}: class '{name}' has no prompts")
        out[str(name)] = prompts
    if label_names:
        missing = [n for n in label_names if n not in out]
        if missing:
            raise UserError(f"prompts {path}: no prompts for class '{missing[0]}' (classes in the file: {', '.join(out)})")
        unknown = [n for n in out if n not in label_names]
        if unknown:
            raise UserError(f"prompts {path}: class '{unknown[0]}' is not a class of the training data (classes: {', '.join(label_names)})")
        out = {n: out[n] for n in label_names}
    return out


def plan_rows(prompts: dict[str, list[str]], cfg: GenerateConfig) -> list[dict]:
    """Every row's class (by name), prompt and length, each drawn from a generator seeded with (seed, row)."""
    rows = []
    for k, (name, plist) in enumerate(prompts.items()):
        for j in range(cfg.rows_per_class):
            i = k * cfg.rows_per_class + j
            rng = np.random.default_rng([cfg.seed, i])
            length = int(np.clip(round(rng.normal(cfg.length_mean, cfg.length_std)), cfg.length_min, cfg.length_max))
            rows.append({"row": i, "label": name, "prompt": plist[int(rng.integers(len(plist)))], "max_new_tokens": length})
    return rows


def _generate_batch(model, tok, batch: list[dict], cfg: GenerateConfig, batch_index: int, device) -> tuple[list[str], int]:
    """(texts, new tokens) for one batch; batch k samples from a generator seeded with (seed, k)."""
    import torch

    from textlora.augment.sampling import SamplingSettings, sample

    generator = torch.Generator(device=device).manual_seed((cfg.seed * 1_000_003 + batch_index) % (2**63))
    prompts = [tok(r["prompt"])["input_ids"] or [tok.eos_token_id] for r in batch]
    settings = SamplingSettings(top_k=cfg.top_k, top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty)
    new = sample(
        model,
        prompts,
        [r["max_new_tokens"] for r in batch],
        settings,
        pad_id=tok.pad_token_id,
        eos_id=tok.eos_token_id,
        generator=generator,
        device=device,
        fused=cfg.fused,
        stop_at_eos=cfg.stop_at_eos,
    )
    texts = []
    for r, ids in zip(batch, new):
        text = tok.decode(ids, skip_special_tokens=True)
        if cfg.keep_prompt:
            text = r["prompt"] + text
        texts.append(" ".join(text.split()))
    return texts, sum(len(ids) for ids in new)


def generate_key(config: GenerateConfig, label_names: list[str] | None = None) -> str:
    """The cache key of a generation: its settings and the content of its prompt file and model (not their paths)."""
    from dataclasses import asdict

    from textlora.fsutil import fingerprint
    from textlora.registry import resolve_model_path

    settings = {**asdict(config), "label_names": label_names, "labels": "names"}
    return fingerprint(settings, [config.prompts, resolve_model_path(config.model)], paths=("output", "prompts", "model"))


def is_generated(config: GenerateConfig, label_names: list[str] | None = None) -> bool:
    """True when ``output`` holds rows generated from the same settings, prompts and model."""
    out = Path(config.output)
    summary = out.with_suffix(".generate.json")
    return out.is_file() and summary.is_file() and json.loads(summary.read_text()).get("fingerprint") == generate_key(config, label_names)


def generate(config: GenerateConfig, overwrite: bool = False, label_names: list[str] | None = None, reuse: bool = False) -> Path:
    """Generate ``rows_per_class`` labelled rows per class from the prompt file, batched, resumable.

    Each row's ``label`` is its prompt's class name, so the rows train by name whatever order the
    prompt file lists the classes in (``label_names``, when given, fixes that order and must match
    the file's classes). Writes text, label and provenance (prompt, seed, batch, model) to ``output`` and a
    summary to ``output`` with suffix ``.generate.json``; a class that yields no text is reported.
    With ``reuse``, an output generated from the same settings, prompts and model files is kept
    as it is (a changed setting or input redoes it). Under torchrun the batches are shared out
    (process r takes every world-th batch) and process 0 writes one file in row order: the same
    rows as one process writes, since batch k samples with seed (seed, k) wherever it runs.

    Args:
        config: the generation settings (``GenerateConfig``: prompts, output, model, sampling).
        overwrite: replace an existing output.
        label_names: the classes, in the classifier's order; the prompt file must list exactly these.
        reuse: keep an existing output made from the same settings and inputs; redo it otherwise.
    """
    from textlora.fsutil import check_output
    from textlora.runtime import finish_distributed, init_distributed

    out = check_output(config.output, flag="output", overwrite=overwrite or reuse, inputs=[config.prompts])
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise UserError(f"output {out}: expected a .csv or .parquet file")
    key = generate_key(config, label_names)  # batch_size is in the key too: batch k seeds its rows
    if reuse and is_generated(config, label_names):
        print(f"reusing {out}: generated from the same settings, prompts and model", flush=True)
        return out
    prompts = read_prompts(config.prompts, label_names)
    rows = plan_rows(prompts, config)
    dist_info, dist_device = init_distributed()
    done = _resume_partials(out, key, dist_info)
    n_batches = -(-len(rows) // config.batch_size)
    todo = [k for k in range(n_batches) if k not in done and k % dist_info.world == dist_info.rank]
    if done and dist_info.main:
        print(f"continuing {out}: {len(done)} of {n_batches} batches already generated", flush=True)
    model, tok, precision, device, load_seconds = _load_generator(config, dist_device)
    run = _run_batches(model, tok, rows, config, device, todo, _partial(out, dist_info.rank))
    dist_info.barrier()  # every process's batches are on disk
    if dist_info.main:
        _write_rows(out, key, prompts, rows, run | {"load_seconds": load_seconds, "precision": precision, "device": str(device)}, dist_info.world)
    finish_distributed(dist_info)
    return out


def _partial(out: Path, rank: int) -> Path:
    """Process ``rank``'s file of finished batches (one process: ``OUTPUT.partial.csv``)."""
    return out.with_name(out.name + (".partial.csv" if rank == 0 else f".partial-{rank}.csv"))


def _partials(out: Path) -> list[Path]:
    """Every process's file of finished batches, whatever the number of processes that wrote them."""
    return sorted(out.parent.glob(out.name + ".partial*.csv"))


def _stamp(out: Path) -> Path:
    """The key the partial files were made under: they continue only under the same settings."""
    return out.with_name(out.name + ".partial.key")


def _resume_partials(out: Path, key: str, dist_info) -> set[int]:
    """The batches already in the partial files of this very generation (same key); process 0
    discards partial files made with other settings or inputs first."""
    import pandas as pd

    if dist_info.main:
        stale = _partials(out) if not _stamp(out).is_file() or _stamp(out).read_text() != key else []
        if stale:
            print(f"discarding {', '.join(p.name for p in stale)}: made with other settings or inputs", flush=True)
        for p in stale:
            p.unlink()
        _stamp(out).write_text(key)
    dist_info.barrier()
    return {int(b) for p in _partials(out) for b in pd.read_csv(p, usecols=["batch"])["batch"]}


def _load_generator(config: GenerateConfig, dist_device):
    """(model in eval mode on its device, tokenizer, precision, device, seconds to load)."""
    import torch

    from textlora.augment.lm import load_causal_lm
    from textlora.device import default_device, resolve_precision

    start = time.perf_counter()
    device = dist_device or default_device()
    model, tok = load_causal_lm(config.model)
    precision = resolve_precision(config.precision, device)
    model.to(device=device, dtype=torch.bfloat16 if precision == "bf16" else torch.float32).eval()
    return model, tok, precision, device, time.perf_counter() - start


def _run_batches(model, tok, rows: list[dict], config: GenerateConfig, device, todo: list[int], partial: Path) -> dict:
    """Generate the batches ``todo``, appending each to ``partial`` as it finishes; their timings."""
    import pandas as pd
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="generate", unit="batch", mininterval=5)
    start, new_tokens, first_batch, n_rows = time.perf_counter(), 0, None, 0
    for k in todo:
        batch = rows[k * config.batch_size : (k + 1) * config.batch_size]
        texts, n_new = _generate_batch(model, tok, batch, config, k, device)
        new_tokens, n_rows = new_tokens + n_new, n_rows + len(batch)
        first_batch = first_batch or time.perf_counter() - start
        df = pd.DataFrame([{**r, "text": t, "seed": config.seed, "batch": k, "model": config.model} for r, t in zip(batch, texts)])
        df.to_csv(partial, mode="a", header=not partial.is_file(), index=False)
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "new_tokens": new_tokens, "rows": n_rows, "first_batch_seconds": first_batch}


def _write_rows(out: Path, key: str, prompts: dict, rows: list[dict], run: dict, world: int) -> None:
    """Process 0: every partial file into ``output`` in row order (empty texts dropped), the summary
    beside it, and the partial files removed."""
    import pandas as pd

    from textlora.fsutil import atomic_path

    partials = _partials(out)
    full = pd.concat([pd.read_csv(p, keep_default_na=False) for p in partials]).sort_values("row", kind="stable")
    kept = full[full["text"].astype(str).str.strip() != ""]
    cols = ["text", "label", "prompt", "seed", "batch", "row", "model", "max_new_tokens"]
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".parquet":
            kept[cols].to_parquet(tmp, index=False)
        else:
            kept[cols].to_csv(tmp, index=False)
    per_class = {name: int((kept["label"].astype(str) == name).sum()) for name in prompts}
    seconds = run["seconds"]
    summary = {
        "rows_planned": len(rows),
        "rows_written": len(kept),
        "per_class": per_class,
        "empty_dropped": int(len(full) - len(kept)),
        "classes_with_no_rows": [n for n, c in per_class.items() if c == 0],
        "processes": world,
        "seconds_this_run": seconds,
        "load_seconds": run["load_seconds"],
        "first_batch_seconds": run["first_batch_seconds"],
        "precision": run["precision"],
        "device": run["device"],
        "new_tokens_this_run": run["new_tokens"],  # process 0's (each process generates about as many)
        "tokens_per_s": run["new_tokens"] / max(seconds, 1e-9),
        "rows_per_s": run["rows"] / max(seconds, 1e-9),
        "fingerprint": key,
    }
    out.with_suffix(".generate.json").write_text(json.dumps(summary, indent=2))
    for p in partials:
        p.unlink()
    _stamp(out).unlink(missing_ok=True)
    for name in summary["classes_with_no_rows"]:
        print(f"warning: class '{name}' yielded no text", flush=True)
    print(f"wrote {len(kept)} rows to {out} ({summary['tokens_per_s']:.1f} new tokens/s, {summary['rows_per_s']:.2f} rows/s, process 0 of {world})")
