"""The training recipe: data -> model -> fit -> run directory, with checkpoints and exact resume.

The loop is plain PyTorch so that every cost is visible: texts are tokenized once, batches are
grouped by length and padded to a multiple of 8, bf16 autocast runs where the hardware has it.
Under ``torchrun``/``accelerate launch`` it runs DistributedDataParallel (gloo on CPU, nccl on
GPU); rank 0 alone writes checkpoints, logs and the run directory.

Resume is positional: batches are a pure function of (seed, epoch), so a checkpoint stores
(global step, optimizer, scheduler, RNG) and training continues exactly where it stopped,
with the same learning-rate schedule.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from textlora.checkpoints import Interrupted, Signals, config_differences, load_trainable, pick_checkpoint, restore, save_checkpoint
from textlora.config import Config
from textlora.device import autocast, default_device, fused_adamw, resolve_precision
from textlora.errors import UserError
from textlora.faults import fault
from textlora.fsutil import hold_lock, lock_path
from textlora.metrics import metrics_from_logits
from textlora.resolve import resolve
from textlora.run import clear_run, is_run_dir, write_run
from textlora.runtime import Dist, encode_texts, epoch_batches, finish_distributed, init_distributed, make_scheduler, optimizer_step, pad_batch, predict_logits
from textlora.version import __version__

# --- interruption ------------------------------------------------------------------------


class TrainingInterrupted(Interrupted):
    """SIGINT/SIGTERM arrived; a resumable checkpoint was saved. ``signum`` gives the exit code."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        super().__init__(signum, f"interrupted by signal {signum} at step {step}; saved {checkpoint}; continue with --resume last")


# --- the recipe --------------------------------------------------------------------------


@dataclass
class Fit:
    """What the loop carries between steps; saved in each checkpoint's state.json."""

    global_step: int = 0
    history: list = field(default_factory=list)  # one dict per evaluation
    train_log: list = field(default_factory=list)  # one dict per logging step
    best_metric: float | None = None
    best_checkpoint: str | None = None
    bad_evals: int = 0  # evaluations since the best, for early stopping
    train_seconds: float = 0.0
    window_loss: float = 0.0  # summed loss since the last log line (kept across resume, so logs match)
    window_rows: int = 0
    window_target_loss: float = 0.0  # summed target-objective loss since the last log line
    window_target_steps: int = 0


def metric_value(entry: dict, metric: str) -> float:
    """``accuracy`` etc. of the dev split, or ``SET.accuracy`` etc. of an eval set, from a history entry."""
    if "." in metric:
        name, key = metric.rsplit(".", 1)
        return entry["eval_sets"][name][key]
    return entry[metric]


def _is_better(entry: dict, fit: Fit, metric: str) -> bool:
    """Whether the evaluation ``entry`` beats the best so far by ``metric``. A tie in accuracy or F1
    (frequent on a small set: 25 labelled target rows) goes to the lower loss on the same set."""
    value = metric_value(entry, metric)
    if fit.best_metric is None:
        return True
    if metric.rsplit(".", 1)[-1] == "loss":
        return value < fit.best_metric
    if value != fit.best_metric:
        return value > fit.best_metric
    loss = metric.rsplit(".", 1)[0] + ".loss" if "." in metric else "loss"
    best = next((h for h in fit.history if f"step-{h['step']:08d}" == fit.best_checkpoint), None)
    return best is not None and metric_value(entry, loss) < metric_value(best, loss)


def _setup_optimizer(model, cfg, device):
    import torch

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=0.9)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=fused_adamw(device))


def _evaluate(model, val_encoded, val_labels, pad_id, cfg, precision, device, label_names, exact=None) -> dict:
    import torch

    multi = val_labels.ndim == 2
    logits = predict_logits(model, val_encoded, pad_id, batch_size=cfg.eval_batch_size, precision=precision, device=device, multi_label=multi, exact=exact)
    if multi:  # multi-label
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(val_labels)).item())
    else:
        loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_labels)).item())
    m = metrics_from_logits(val_labels, logits, label_names)
    keep = ("accuracy", "micro_f1", "macro_f1", "n", "per_class", "confusion_matrix")
    return {"loss": loss, **{k: m[k] for k in keep if k in m}}


def _check_output_dir(out: Path, resume: str, overwrite: bool) -> None:
    """Before the lock is taken beside it: the one output rule; a run already there is refused unless resumed or overwritten."""
    from textlora.fsutil import check_output

    hint = "already holds a run; pass --resume last to continue it or --overwrite to start again"
    check_output(out, flag="output_dir", overwrite=overwrite or resume != "none", folder=True, taken=is_run_dir, taken_hint=hint)


@dataclass
class Session:
    """One training run's state, passed from step to step (the recipe's ``self``)."""

    config: Config
    resume: str
    out: Path
    dist: Dist
    device: object  # torch.device
    precision: str
    ckpt: Path | None = None  # the checkpoint to resume from
    # _setup_data
    splits: object = None  # textlora.data.Splits
    tokenizer: object = None
    pad_id: int = 0
    train_enc: list = field(default_factory=list)
    val_enc: list = field(default_factory=list)
    sets_enc: dict = field(default_factory=dict)  # eval set name -> (token ids, labels)
    lengths: np.ndarray | None = None
    # _setup_model
    core: object = None  # the peft model
    model: object = None  # core, or core wrapped in DDP
    breakdown: object = None
    prefix: object = None  # textlora.prefix.PrefixCache, with lora.layers
    prefix_split: int = 0  # the first layer with LoRA: the cache holds what enters it
    prefix_info: dict | None = None  # what the run says of its cache (metrics.json)
    objective: object = None  # textlora.objectives.TargetObjective, with train.target_objective
    objective_info: dict | None = None  # what the run says of it (metrics.json)
    trainables: object = None  # what checkpoints hold and the optimizer steps: the model, plus the objective's head if it has one
    # _setup_schedule
    per_rank: int = 0  # batches each rank takes per epoch
    steps_per_epoch: int = 0
    total_steps: int = 0
    optimizer: object = None
    scheduler: object = None
    scaler: object = None
    fit: Fit = field(default_factory=Fit)
    writer: object = None  # tensorboard, when installed (rank 0)


def train(config: Config, resume: Literal["none", "last", "best"] = "none", overwrite: bool = False) -> Path:
    """Train a LoRA classifier as ``config`` says and write its run directory.

    The recipe, step by step: set up the data (read, split, resolve the config, tokenize), the
    model (base + LoRA, within the budget), the schedule (optimizer, LR, resume state), then fit
    (evaluating and checkpointing as it goes) and write the run directory.

    Args:
        config: the configuration (see ``textlora.config``); ``auto`` settings are resolved here.
        resume: ``none`` starts afresh; ``last`` or ``best`` continue from that checkpoint in
            ``config.output_dir`` with the same optimizer state, LR schedule and step count.
        overwrite: allow starting afresh in an output_dir that already holds a run.

    Returns:
        The run directory.
    """

    if resume not in ("none", "last", "best"):
        raise UserError(f"--resume: expected last, best or none, found {resume!r}")
    dist_info, device = init_distributed()
    device = device or default_device()
    out = Path(config.output_dir)
    _check_output_dir(out, resume, overwrite)
    # held while this call runs, released however it ends (a caller may keep the exception, and with it this frame)
    with hold_lock(lock_path(out), what=f"output_dir {out}") if dist_info.main else contextlib.nullcontext():
        s = Session(config, resume, out, dist_info, device, resolve_precision(config.train.precision, device), pick_checkpoint(out, resume))
        _setup_data(s)
        _setup_model(s)
        _setup_schedule(s)
        _start(s)
        _fit(s)
        if dist_info.main:
            _write_run_dir(s)
        finish_distributed(dist_info)
    return out


def _setup_data(s: Session) -> None:
    """Read and split the data, resolve the config, check it against a resumed checkpoint, tokenize once."""
    from textlora.data import load_splits
    from textlora.models import load_tokenizer

    s.splits = load_splits(s.config.data, s.config.seed)
    saved = json.loads((s.ckpt / "state.json").read_text())["config"] if s.ckpt is not None else None
    if saved is not None and s.config.budget.max_train_minutes is not None and s.config.lora.layers is None:
        s.config.lora.layers = saved["lora"]["layers"]  # the layers the time budget chose when the run started, not a new timing
    s.config = resolve(s.config, s.splits.label_names, s.splits.train_texts, eval_rows=s.splits.scored_rows, fit_time=saved is None)
    if saved is not None:
        diffs = config_differences(saved, s.config.to_dict())
        if diffs:
            raise UserError(f"--resume {s.resume}: checkpoint {s.ckpt.name} was made with a different config ({'; '.join(diffs[:3])})")
    s.tokenizer = load_tokenizer(s.config.model.name)
    s.pad_id = s.tokenizer.pad_token_id if s.tokenizer.pad_token_id is not None else 0
    max_length, truncation = s.config.model.max_length, s.config.model.truncation
    s.train_enc = encode_texts(s.tokenizer, s.splits.train_texts, max_length, truncation)
    s.val_enc = encode_texts(s.tokenizer, s.splits.val_texts, max_length, truncation)
    s.sets_enc = {name: (encode_texts(s.tokenizer, texts, max_length, truncation), labels) for name, (texts, labels) in s.splits.eval_sets.items()}
    s.lengths = np.array([len(ids) for ids in s.train_enc])


def _setup_model(s: Session) -> None:
    """Base model + LoRA within the budget, on the device (wrapped in DDP under torchrun)."""
    import torch

    from textlora.models import build_model, check_budget

    torch.manual_seed(s.config.seed)
    s.core, s.breakdown = build_model(s.config, s.splits.label_names)
    check_budget(s.breakdown, s.config.budget.max_trainable_params)
    if s.config.train.gradient_checkpointing:
        s.core.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        s.core.enable_input_require_grads()
    s.core.to(s.device)
    s.model = s.core
    if s.dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        s.model = DDP(s.core, device_ids=[s.device.index] if s.device.type == "cuda" else None)
    _setup_objective(s)
    _setup_prefix(s)


def _setup_objective(s: Session) -> None:
    """With ``train.target_objective``: the target texts and, for mlm, the training-only head (see textlora.objectives)."""
    import torch

    from textlora.objectives import make_objective

    s.trainables = s.core
    if s.config.train.target_objective != "none" and s.dist.world > 1:
        raise UserError(f"config: train.target_objective: {s.config.train.target_objective} runs in one process; not under torchrun ({s.dist.world} processes)")
    s.objective, s.objective_info = make_objective(s.config, s.splits, s.tokenizer, s.core)
    if s.objective is not None and s.objective.head is not None:
        s.objective.head.to(s.device)
        s.trainables = torch.nn.ModuleDict({"classifier": s.core, "target_head": s.objective.head})


def _setup_prefix(s: Session) -> None:
    """With ``lora.layers``: the frozen layers' output for every text, computed once (or read back) and used by every step and evaluation."""
    from textlora.fsutil import cache_dir
    from textlora.prefix import prefix_cache

    layers, cfg = s.config.lora.layers, s.config.train
    if layers is None:
        return
    s.prefix_split = min(layers)
    if cfg.prefix_cache == "off" or s.prefix_split == 0:
        s.prefix_info = {"used": False, "why": "train.prefix_cache: off" if cfg.prefix_cache == "off" else "LoRA starts at layer 0: nothing is frozen below it"}
        return
    everything = [*s.train_enc, *s.val_enc, *(ids for enc, _ in s.sets_enc.values() for ids in enc)]
    if s.objective is not None and s.objective.kind == "contrastive":  # its passes run from the cache too
        everything += s.objective.encoded
    elif s.config.data.target_texts:
        everything += _target_for_cache(s, everything)
    t0 = time.perf_counter()
    try:
        s.prefix = prefix_cache(
            s.core, everything, s.prefix_split, precision=s.precision, device=s.device, root=cache_dir() / "prefix", max_memory_gb=cfg.prefix_cache_memory_gb
        )
    except (UserError, OSError) as e:  # no room on disk, say: train without it
        s.prefix_info = {"used": False, "why": f"could not be written ({str(e).splitlines()[0][:160]})"}
        print(f"prefix cache off: {s.prefix_info['why']}; the frozen layers run every step", flush=True)
        return
    p = s.prefix
    gb = float(p.lengths.sum()) * s.core.config.hidden_size * (2 if s.precision == "bf16" else 4) / 2**30
    s.prefix_info = {"used": True, "split": s.prefix_split, "texts": len(p.lengths), "gb": round(gb, 3), "where": p.where, "built": p.built}
    s.prefix_info["seconds"] = round(time.perf_counter() - t0, 1)
    if s.dist.main:
        how = "computed" if p.built else "read back"
        print(
            f"prefix cache: the output of layers 0-{s.prefix_split - 1} for {len(p.lengths):,} distinct texts {how} in {s.prefix_info['seconds']:.0f} s "
            f"({gb:.2f} GB, {'in memory' if p.where == 'memory' else 'memory-mapped'}; {p.path})",
            flush=True,
        )


def _target_for_cache(s: Session, everything: list) -> list:
    """``data.target_texts`` encoded, for the prefix cache alone (no objective learns from them): the
    texts a run is later asked about (``predict``, ``pseudolabel``, the labelling page), read back from
    the cache then instead of run through the frozen layers again. Only while the whole cache stays
    within ``train.prefix_cache_memory_gb``: a large target file is left to the whole model."""
    from textlora.objectives import target_texts
    from textlora.runtime import encode_texts

    texts = target_texts(s.config.data, s.splits)
    encoded = encode_texts(s.tokenizer, texts, s.config.model.max_length, s.config.model.truncation)
    width = s.core.config.hidden_size * (2 if s.precision == "bf16" else 4)
    gb = (sum(map(len, everything)) + sum(map(len, encoded))) * width / 2**30
    if gb > s.config.train.prefix_cache_memory_gb:
        if s.dist.main:
            print(f"prefix cache: the {len(texts):,} target texts left out (with them it would take {gb:.1f} GB, above train.prefix_cache_memory_gb)", flush=True)
        return []
    return encoded


def _prefix(s: Session):
    """Inside it, forward passes run from the prefix cache (when there is one)."""
    from textlora.prefix import attached

    return attached(s.core, s.prefix, s.prefix_split) if s.prefix is not None else contextlib.nullcontext()


def _setup_schedule(s: Session) -> None:
    """Steps, optimizer and LR schedule; on resume, their state and the loop's from the checkpoint.

    Each rank takes every world-th batch; an optimizer step is grad_accum micro-batches.
    """
    import torch

    cfg = s.config.train
    s.per_rank = len(epoch_batches(s.lengths, cfg.batch_size, s.config.seed, 0)) // s.dist.world
    if s.per_rank == 0:
        raise UserError(f"train.batch_size {cfg.batch_size}: too large for {len(s.lengths)} training rows on {s.dist.world} process(es)")
    s.steps_per_epoch = math.ceil(s.per_rank / cfg.grad_accum)
    s.total_steps = cfg.max_steps or math.ceil(s.steps_per_epoch * cfg.epochs)
    s.optimizer = _setup_optimizer(s.trainables, cfg, s.device)
    s.scheduler = make_scheduler(s.optimizer, cfg.lr_scheduler, cfg.warmup_ratio, s.total_steps)
    s.scaler = torch.amp.GradScaler("cuda") if s.precision == "fp16" else None
    if s.ckpt is not None:
        state = restore(s.ckpt, s.trainables, s.optimizer, s.scheduler)
        s.fit = Fit(**{k: state[k] for k in Fit.__dataclass_fields__ if k in state})
        if s.resume == "best":  # continue from the best: later history is discarded
            s.fit.history = [h for h in s.fit.history if h["step"] <= s.fit.global_step]
            s.fit.train_log = [h for h in s.fit.train_log if h["step"] <= s.fit.global_step]


def _start(s: Session) -> None:
    """Rank 0: clear an overwritten run, open the logs, print what is about to run."""
    if not s.dist.main:
        return
    if s.ckpt is None:
        clear_run(s.out)
    s.out.mkdir(parents=True, exist_ok=True)
    s.writer = _tensorboard(s.out / "logs")
    cfg, splits = s.config.train, s.splits
    print(
        f"textlora: {len(splits.train_texts):,} train rows, {len(splits.val_texts):,} dev rows, {len(splits.label_names)} classes; "
        f"{s.breakdown.total:,} trainable params; {s.precision} on {s.device}; {s.total_steps} steps ({s.steps_per_epoch}/epoch) x {cfg.batch_size * cfg.grad_accum * s.dist.world} rows"
        + (f"; resuming at step {s.fit.global_step} from {s.ckpt.name}" if s.ckpt else ""),
        flush=True,
    )


def _loss_fn(s: Session):
    """BCE for multi-label runs (one sigmoid a class); else cross-entropy, with class weights and label smoothing as set."""
    import torch

    cfg = s.config.train
    if s.config.data.multi_label:  # class_weights and label_smoothing are refused by the config
        return torch.nn.BCEWithLogitsLoss()
    weights = None
    if cfg.class_weights == "balanced":
        counts = np.bincount(s.splits.train_labels, minlength=len(s.splits.label_names)).astype(np.float32)
        weights = torch.from_numpy(len(s.splits.train_labels) / (len(counts) * np.maximum(counts, 1))).to(s.device)
    return torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)


def _fit(s: Session) -> None:
    """The loop: optimizer steps until the last one, evaluating (and checkpointing) when due; a signal saves and stops."""
    import torch

    cfg, fit = s.config.train, s.fit
    loss_fn = _loss_fn(s)
    labels = torch.from_numpy(s.splits.train_labels)
    s.model.train()
    progress = _progress(s.total_steps, fit.global_step, s.dist.main)
    stop = fit.global_step >= s.total_steps
    try:
        with Signals() as signals:
            t0 = window_t = time.perf_counter()
            while not stop:
                epoch, step_in_epoch = divmod(fit.global_step, s.steps_per_epoch)
                batches = epoch_batches(s.lengths, cfg.batch_size, s.config.seed, epoch)[s.dist.rank :: s.dist.world][: s.per_rank]
                for step in range(step_in_epoch, s.steps_per_epoch):
                    _optimizer_step(s, batches[step * cfg.grad_accum : (step + 1) * cfg.grad_accum], labels, loss_fn)
                    progress.update(1)
                    if fit.global_step % cfg.logging_steps == 0 and s.dist.main:
                        entry = _log_train(s, time.perf_counter() - window_t)
                        progress.set_postfix(loss=f"{entry['loss']:.4f}", rows_s=f"{entry['rows_per_s']:.0f}")
                        window_t = time.perf_counter()
                    last = fit.global_step >= s.total_steps
                    end_of_epoch = step == s.steps_per_epoch - 1
                    if (cfg.eval_strategy == "steps" and fit.global_step % cfg.eval_steps == 0) or (cfg.eval_strategy == "epoch" and end_of_epoch) or last:
                        fit.train_seconds += time.perf_counter() - t0
                        stop = _eval_and_checkpoint(s)
                        t0 = window_t = time.perf_counter()
                    if last or stop:
                        stop = True
                        break
                    if s.dist.any_flag(bool(signals.received)):
                        saved = _checkpoint(s) if s.dist.main else s.out
                        progress.close()
                        s.dist.barrier()
                        raise TrainingInterrupted(signals.received or signal.SIGTERM, fit.global_step, saved)
    finally:  # an error message starts on a line of its own, not after the progress bar
        progress.close()
    if s.writer:
        s.writer.close()


def _optimizer_step(s: Session, micro: list, labels, loss_fn) -> None:
    """Forward and backward over the micro-batches of one step (gradients synced on the last), then one optimizer step."""

    cfg, fit, obj = s.config.train, s.fit, s.objective
    for j, idx in enumerate(micro):
        ids, mask = pad_batch([s.train_enc[i] for i in idx], s.pad_id)
        y = labels[idx].to(s.device)
        sync = j == len(micro) - 1 or s.dist.world == 1
        with s.model.no_sync() if not sync else contextlib.nullcontext():
            with autocast(s.precision, s.device), _prefix(s) as att:
                logits = s.model(input_ids=ids.to(s.device), attention_mask=mask.to(s.device)).logits
                target_loss = obj.loss(s.model, obj.batch(fit.global_step * len(micro) + j), s.pad_id, s.device, att) if obj is not None else None
            loss = loss_fn(logits.float(), y)
            total = loss if target_loss is None else (1 - obj.weight) * loss + obj.weight * target_loss.float()
            total = total / len(micro)
            (s.scaler.scale(total) if s.scaler else total).backward()
        fit.window_loss += loss.item() * len(idx)
        fit.window_rows += len(idx)
        if target_loss is not None:
            fit.window_target_loss += target_loss.item()
            fit.window_target_steps += 1
    fault("step")
    optimizer_step(s.optimizer, s.scheduler, s.trainables.parameters(), cfg.max_grad_norm, s.scaler)
    fit.global_step += 1


def _log_train(s: Session, seconds: float) -> dict:
    """One train_log entry (loss and speed since the last one), also sent to tensorboard."""
    fit = s.fit
    entry = {
        "step": fit.global_step,
        "epoch": round(fit.global_step / s.steps_per_epoch, 4),
        "loss": fit.window_loss / max(fit.window_rows, 1),
        "lr": s.scheduler.get_last_lr()[0],
        "rows_per_s": fit.window_rows * s.dist.world / max(seconds, 1e-9),
    }
    if fit.window_target_steps:
        entry["target_loss"] = fit.window_target_loss / fit.window_target_steps
    fit.window_target_loss, fit.window_target_steps = 0.0, 0
    fit.train_log.append(entry)
    _log_scalars(s.writer, "train", entry)
    fit.window_loss, fit.window_rows = 0.0, 0
    return entry


def _checkpoint(s: Session) -> Path:
    state = {**s.fit.__dict__, "config": s.config.to_dict(), "textlora_version": __version__}
    return save_checkpoint(s.out, s.trainables, s.optimizer, s.scheduler, state, s.config.train.save_total_limit)


def _eval_and_checkpoint(s: Session) -> bool:
    """Evaluate on the dev split and the eval sets, checkpoint (rank 0), and decide on early stopping. Returns stop?"""
    cfg, fit = s.config.train, s.fit
    stop = False
    if s.dist.main:
        fault("eval")
        names = s.splits.label_names
        with _prefix(s) as att:
            exact = att.aside if att is not None else None  # rows near a tie are scored again without the bf16-stored cache
            m = _evaluate(s.core, s.val_enc, s.splits.val_labels, s.pad_id, cfg, s.precision, s.device, names, exact)
            sets = {n: _evaluate(s.core, enc, labels, s.pad_id, cfg, s.precision, s.device, names, exact) for n, (enc, labels) in s.sets_enc.items()}
        entry = {"step": fit.global_step, "epoch": round(fit.global_step / s.steps_per_epoch, 4), **m}
        if sets:
            entry["eval_sets"] = sets
        fit.history.append(entry)
        _log_scalars(s.writer, "eval", {k: entry[k] for k in ("loss", "accuracy", "macro_f1")}, fit.global_step)
        for n, sm in sets.items():
            _log_scalars(s.writer, f"eval_{n}", {k: sm[k] for k in ("loss", "accuracy", "macro_f1")}, fit.global_step)
        name = f"step-{fit.global_step:08d}"
        value = metric_value(entry, cfg.metric_for_best)
        improved = fit.best_metric is None or value != fit.best_metric  # early stopping waits for the metric itself to move
        if _is_better(entry, fit, cfg.metric_for_best):
            fit.best_metric, fit.best_checkpoint = value, name
            fit.bad_evals = 0 if improved else fit.bad_evals + 1
        else:
            fit.bad_evals += 1
        print(
            f"\nstep {fit.global_step}: dev loss {m['loss']:.4f}, {'subset accuracy' if 'micro_f1' in m else 'accuracy'} {m['accuracy']:.4f}, "
            + (f"micro-F1 {m['micro_f1']:.4f}, " if "micro_f1" in m else "")
            + f"macro-F1 {m['macro_f1']:.4f}"
            + "".join(f"; {n} accuracy {sm['accuracy']:.4f} (n={sm['n']}), macro-F1 {sm['macro_f1']:.4f}" for n, sm in sets.items())
            + (" (best)" if fit.best_checkpoint == name else ""),
            flush=True,
        )
        _checkpoint(s)
        stop = cfg.early_stopping_patience > 0 and fit.bad_evals >= cfg.early_stopping_patience
        if stop:
            print(f"early stopping: no improvement of {cfg.metric_for_best} in {fit.bad_evals} evaluations", flush=True)
    return s.dist.broadcast_flag(stop)


def _tensorboard(logdir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(logdir))


def _log_scalars(writer, prefix: str, entry: dict, step: int | None = None) -> None:
    if writer is None:
        return
    step = entry.get("step", step) if step is None else step
    for k, v in entry.items():
        if k not in ("step", "epoch") and isinstance(v, (int, float)):
            writer.add_scalar(f"{prefix}/{k}", v, step)


def _progress(total: int, initial: int, enabled: bool):
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, mininterval=1 if sys.stderr.isatty() else 30)


def _write_run_dir(s: Session) -> None:
    """Load the best checkpoint's weights and write the self-contained run directory (see textlora.run)."""
    fit = s.fit
    if fit.best_checkpoint:
        load_trainable(s.trainables, s.out / "checkpoints" / fit.best_checkpoint)
    best = next((h for h in fit.history if f"step-{h['step']:08d}" == fit.best_checkpoint), None)
    metrics = {
        "best": best,
        "metric_for_best": s.config.train.metric_for_best,
        "history": fit.history,
        "train_log": fit.train_log,
        "total_steps": s.total_steps,
        "steps_done": fit.global_step,
        "train_seconds": round(fit.train_seconds, 2),
        "precision": s.precision,
        "trainable_params": s.breakdown.as_dict(),
        "data": s.splits.counts,
        "prefix_cache": s.prefix_info,
    }
    if s.objective_info is not None:
        metrics["target_objective"] = s.objective_info
    write_run(s.out, s.core, s.tokenizer, s.config, s.splits, s.breakdown, metrics)
