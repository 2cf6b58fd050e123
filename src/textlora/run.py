"""The run directory: what ``train`` writes and every other verb reads. This module is its contract.

A run directory holds the adapter and the classifier head (peft's ``adapter_config.json`` and
``adapter_model.safetensors``), the tokenizer, ``config.yaml`` (the resolved config),
``labels.json``, ``metrics.json``, ``dev.csv`` (the dev split), ``README.md`` (the model card),
``checkpoints/``, ``logs/`` and, written last, ``textlora.json`` (format and version): its
presence marks a complete run. An ONNX export holds ``model.onnx``, the tokenizer,
``config.yaml``, ``labels.json`` and a ``textlora.json`` that names the ONNX backend.

- :func:`write_run` writes one; :func:`open_run` checks one once and returns a :class:`Run`, which
  the verbs pass down (:func:`as_run` lets library functions take either).
- :func:`model_card` is the README.md: the Hub's front matter, then textlora's text.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from textlora.errors import UserError

RUN_FORMAT = 1  # bump when the run directory's layout changes


@dataclass
class Run:
    """An opened run directory (or ONNX export): checked once, its small files read once."""

    path: Path
    config: object  # textlora.config.Config
    labels: list[str]
    meta: dict  # textlora.json

    @property
    def backend(self) -> str:
        """``torch`` for a run directory, ``onnx`` for an ONNX export."""
        return self.meta.get("backend", "torch")

    @property
    def onnx_file(self) -> Path:
        return self.path / self.meta["onnx_file"]

    @functools.cached_property
    def metrics(self) -> dict:
        """metrics.json, read when first asked for ({} for an ONNX export)."""
        path = self.path / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def open_run(path: str | os.PathLike, flag: str = "--model") -> Run:
    """Check that ``path`` is a complete run (or ONNX export) this textlora can read, and read it.

    The verbs call it once, where the user's path comes in, and pass the :class:`Run` down.
    """
    from textlora.config import config_from_dict, read_yaml

    run = Path(path)
    if not run.is_dir():
        raise UserError(f"{flag} {run}: no such run directory")
    if not (run / "textlora.json").is_file():
        raise UserError(f"{flag} {run}: not a complete textlora run directory (missing textlora.json)")
    meta = json.loads((run / "textlora.json").read_text())
    if meta.get("format") != RUN_FORMAT:
        raise UserError(f"{flag} {run}: run format {meta.get('format')!r} is not supported by this textlora (expects {RUN_FORMAT})")
    needed = ["config.yaml", "labels.json", meta["onnx_file"] if meta.get("backend") == "onnx" else "adapter_config.json"]
    missing = [f for f in needed if not (run / f).is_file()]
    if missing:
        raise UserError(f"{flag} {run}: not a complete textlora run directory (missing {', '.join(missing)})")
    return Run(run, config_from_dict(read_yaml(run / "config.yaml")), json.loads((run / "labels.json").read_text()), meta)


def as_run(model: str | os.PathLike | Run) -> Run:
    """``model`` itself when it is an opened :class:`Run`; else the run at that path, opened (for library callers)."""
    return model if isinstance(model, Run) else open_run(model)


def write_run(out: Path, core, tokenizer, config, splits, breakdown, metrics: dict) -> None:
    """Write the run directory ``out`` from the trained model: files replaced atomically, ``textlora.json`` last."""
    from textlora.config import save_config
    from textlora.data import dev_table
    from textlora.fsutil import atomic_dir, atomic_path
    from textlora.version import __version__

    with atomic_dir(out / ".final") as tmp:
        core.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    for f in (out / ".final").iterdir():
        os.replace(f, out / f.name)
    shutil.rmtree(out / ".final", ignore_errors=True)
    files = {
        "labels.json": json.dumps(splits.label_names),
        "metrics.json": json.dumps(metrics, indent=2),
        "README.md": model_card(config, splits, breakdown, metrics),
    }
    for name, text in files.items():
        with atomic_path(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    with atomic_path(out / "config.yaml") as tmp:
        save_config(config, tmp)
    with atomic_path(out / "dev.csv") as tmp:
        dev_table(splits.val_texts, splits.val_labels, config.data, splits.label_names).to_csv(tmp, index=False)
    with atomic_path(out / "textlora.json") as tmp:  # written last: its presence marks a complete run
        tmp.write_text(json.dumps({"format": RUN_FORMAT, "textlora_version": __version__}))


def write_export_meta(run: Run, folder: Path, onnx_file: str, quantize: str | None) -> None:
    """The files that make ``folder`` (holding ``onnx_file`` and the tokenizer) an ONNX export of ``run``."""
    for name in ("config.yaml", "labels.json"):
        shutil.copy(run.path / name, folder / name)
    (folder / "textlora.json").write_text(json.dumps({**run.meta, "backend": "onnx", "onnx_file": onnx_file, "quantize": quantize}))


def is_run_dir(out: Path) -> bool:
    """True when ``out`` holds a run or the checkpoints of one."""
    return out.is_dir() and any((out / n).exists() for n in ("checkpoints", "textlora.json"))


def clear_run(out: Path) -> None:
    """Remove a run's marker, checkpoints and logs (``train --overwrite``, once the inputs have been checked)."""
    (out / "textlora.json").unlink(missing_ok=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    shutil.rmtree(out / "logs", ignore_errors=True)


# --- the model card (README.md) ----------------------------------------------------------


def model_card(config, splits, breakdown, metrics: dict) -> str:
    """A short model card: Hub front matter, base model, data, parameters, metrics, and how to load the run."""
    from textlora.registry import base_model_id, is_local_base

    best = metrics.get("best") or {}
    base = base_model_id(config.model.name)
    local = is_local_base(config.model.name)
    lines = [*_front_matter(config, base, local, best), "# textlora run", "", f"LoRA text classifier on `{base}`, trained by textlora.", ""]
    if local:
        lines += [
            f"**Warning:** the base model is the local folder `{base}`, not a Hub id: this run loads only where that folder exists.",
            "",
        ]
    lines += [
        "## Data",
        f"- training file: `{config.data.train}`"
        + (f", extra training files: {', '.join(f'`{e}`' for e in config.data.extra_train)}" if config.data.extra_train else ""),
        f"- {splits.counts['train_rows']:,} training rows, {splits.counts['val_rows']:,} dev rows " + _dev_source(config),
        f"- labels: {', '.join(f'{i} {n}' for i, n in enumerate(splits.label_names))}",
        "",
        "## Parameters",
        f"- {dict(lora='LoRA', dora='DoRA', vera='VeRA')[config.lora.method]} r={config.lora.r}, alpha={config.lora.alpha:g}, dropout={config.lora.dropout:g}, targets {', '.join(config.lora.target_modules)}, bias {config.lora.bias}, head {config.model.head}",
        f"- trainable: {breakdown.total:,} (LoRA {breakdown.lora:,}, head {breakdown.head:,}, biases {breakdown.bias:,}, other {breakdown.other:,}) "
        f"of a {config.budget.max_trainable_params:,} budget",
        f"- {metrics['steps_done']} steps, batch {config.train.batch_size} x {config.train.grad_accum}, lr {config.train.learning_rate:g}, "
        f"{metrics['precision']}, {metrics['train_seconds']:.0f} s of training",
        "",
        "## Metrics (dev split, best checkpoint)",
    ]
    if best:
        lines += [f"- accuracy {best['accuracy']:.4f}, macro-F1 {best['macro_f1']:.4f}, loss {best['loss']:.4f} (step {best['step']})"]
        lines += [f"- {name}: precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f}" for name, m in best["per_class"].items()]
    if best.get("eval_sets"):
        lines += [
            "",
            "## Metrics on the eval sets (best checkpoint; never trained on)",
            "",
            "| set | file | rows | accuracy | macro-F1 | loss |",
            "|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {n} | `{config.data.eval_sets.get(n, '?')}` | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['loss']:.4f} |"
            for n, m in best["eval_sets"].items()
        ]
    lines += [
        "",
        "## Use",
        "```bash",
        "textlora predict --model THIS_DIR --data texts.csv --output predictions.csv",
        "textlora evaluate --model THIS_DIR --data THIS_DIR/dev.csv",
        "textlora report --model THIS_DIR          # writes report.html: curves, confusion matrix, mistakes",
        "textlora serve --model THIS_DIR           # http://127.0.0.1:8000/",
        "```",
        "The full report, once written: [report.html](report.html).",
        "",
        *_plain_hf_use(config, base),
    ]
    return "\n".join(lines)


def _dev_source(config) -> str:
    """Where the dev rows came from: the given dev file, or a stratified share of the training file."""
    if config.data.dev:
        return f"(the file `{config.data.dev}`; saved as `dev.csv`)"
    return (
        f"(stratified {config.data.val_fraction:.0%} of the training file, seed {config.seed}, "
        "taken before extra rows were added; saved as `dev.csv`)"
    )


def _front_matter(config, base: str, local: bool, best: dict) -> list[str]:
    """The YAML header the Hub renders (as peft writes it: library_name, base_model, pipeline_tag), with the dev metrics."""
    import yaml

    meta = {"library_name": "peft", "pipeline_tag": "text-classification", "tags": ["textlora", config.lora.method, "text-classification"]}
    if not local:  # the Hub accepts only repository ids here
        meta["base_model"] = base
        meta["tags"].append(f"base_model:adapter:{base}")
    if best:
        meta["metrics"] = ["accuracy", "f1"]
        meta["model-index"] = [
            {
                "name": Path(config.output_dir).name,
                "results": [
                    {
                        "task": {"type": "text-classification"},
                        "dataset": {"name": f"dev split of {Path(config.data.train).name}", "type": "custom"},
                        "metrics": [
                            {"type": "accuracy", "value": round(best["accuracy"], 4)},
                            {"type": "f1", "name": "macro-F1", "value": round(best["macro_f1"], 4)},
                        ],
                    }
                ],
            }
        ]
    return ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]


def _plain_hf_use(config, base: str) -> list[str]:
    """How to load the run without textlora: peft for the standard head, ONNX for the others."""
    if config.model.head != "standard" or config.lora.method == "vera":
        what = f"its `{config.model.head}` head" if config.model.head != "standard" else "VeRA"
        return [
            f"Without textlora: plain peft cannot rebuild {what}. Export it to ONNX, which onnxruntime runs on its own:",
            "```bash",
            "textlora export --model THIS_DIR --format onnx --output model-onnx   # model.onnx + tokenizer + labels.json",
            "```",
        ]
    return [
        f"Without textlora, with peft (base `{base}`; peft needs the label count, which the run keeps in `labels.json`):",
        "```python",
        "import json",
        "from peft import AutoPeftModelForSequenceClassification",
        "from transformers import AutoTokenizer",
        'labels = json.load(open("THIS_DIR/labels.json"))',
        'model = AutoPeftModelForSequenceClassification.from_pretrained("THIS_DIR", id2label=dict(enumerate(labels))).merge_and_unload()',
        'tokenizer = AutoTokenizer.from_pretrained("THIS_DIR")',
        "```",
        "Or `textlora export --model THIS_DIR --format hf --output DIR` for a merged folder that "
        '`transformers.pipeline("text-classification", model=DIR)` loads as it is.',
    ]
