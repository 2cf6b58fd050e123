"""Human-readable outputs of a run: the model card (README.md in the run directory)."""

from __future__ import annotations


def model_card(config, splits, breakdown, metrics: dict) -> str:
    """A short model card: base model, data, parameters, metrics, and how to load the adapter."""
    best = metrics.get("best") or {}
    lines = [
        "# textlora run",
        "",
        f"LoRA text classifier on `{config.model.name}`, trained by textlora.",
        "",
        "## Data",
        f"- training file: `{config.data.train}`"
        + (f", extra training files: {', '.join(f'`{e}`' for e in config.data.extra_train)}" if config.data.extra_train else ""),
        f"- {splits.counts['train_rows']:,} training rows, {splits.counts['val_rows']:,} dev rows "
        f"(stratified {config.data.val_fraction:.0%} of the training file, seed {config.seed}, taken before extra rows were added; saved as `dev.csv`)",
        f"- labels: {', '.join(f'{i} {n}' for i, n in enumerate(splits.label_names))}",
        "",
        "## Parameters",
        f"- LoRA r={config.lora.r}, alpha={config.lora.alpha:g}, dropout={config.lora.dropout:g}, targets {', '.join(config.lora.target_modules)}, bias {config.lora.bias}",
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
    lines += [
        "",
        "## Use",
        "```bash",
        "textlora predict --model THIS_DIR --data texts.csv --output predictions.csv",
        "textlora evaluate --model THIS_DIR --data THIS_DIR/dev.csv",
        "```",
        "With peft directly (the classifier head is saved with the adapter):",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        f"base = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels={len(splits.label_names)})  # BASE: {config.model.name}",
        "model = PeftModel.from_pretrained(base, THIS_DIR).merge_and_unload()",
        "tokenizer = AutoTokenizer.from_pretrained(THIS_DIR)",
        "```",
        "",
    ]
    return "\n".join(lines)
