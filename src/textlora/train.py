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

import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textlora.config import Config
from textlora.errors import UserError
from textlora.fsutil import atomic_dir, file_digest, hold_lock
from textlora.metrics import metrics_from_logits
from textlora.resolve import resolve
from textlora.run import clear_run, is_run_dir, write_run
from textlora.runtime import autocast, encode_texts, finish_distributed, init_distributed, make_scheduler, pad_batch, predict_logits, resolve_precision
from textlora.version import __version__

MEGA_BATCH = 50  # length grouping sorts within shuffled windows of this many batches
# Settings that may change between a checkpoint and its resume; any other difference is refused.
RESUMABLE_CHANGES = {
    "output_dir",
    "train.eval_batch_size",
    "train.logging_steps",
    "train.save_total_limit",
    "train.early_stopping_patience",
}


# --- batching ----------------------------------------------------------------------------


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Length-grouped batches for one epoch: shuffle, sort within mega-batches, shuffle the batches.

    A pure function of (seed, epoch), which is what makes resume exact.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    window = batch_size * MEGA_BATCH
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# --- interruption ------------------------------------------------------------------------


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a resumable checkpoint was saved. ``signum`` gives the exit code."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        super().__init__(f"interrupted by signal {signum} at step {step}; saved {checkpoint}; continue with --resume last")
        self.signum = signum


class _Signals:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each optimizer step."""

    def __init__(self):
        self.received = 0

    def __enter__(self):
        import signal
        import threading

        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)


_FAULTS: dict[str, int] = {}


def _fault(point: str) -> None:
    """Test hook: TEXTLORA_FAULT=point:N kills this process with SIGKILL at the N-th ``point``.

    Points: ``step`` (after backward, before the optimizer step), ``eval`` (during an
    evaluation) and ``checkpoint`` (half-way through writing a checkpoint).
    """
    spec = os.environ.get("TEXTLORA_FAULT")
    if not spec or not spec.startswith(point + ":"):
        return
    _FAULTS[point] = _FAULTS.get(point, 0) + 1
    if _FAULTS[point] == int(spec.split(":")[1]):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


# --- checkpoints -------------------------------------------------------------------------


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    a, b = _flat(saved), _flat(current)
    keys = sorted(set(a) | set(b))
    return [f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}" for k in keys if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES]


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a checkpoint is complete once its state.json exists)."""
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    for stale in root.glob(".step-*"):  # temp dirs of checkpoint writes that were killed half-way
        shutil.rmtree(stale, ignore_errors=True)
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def trainable_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(output_dir: Path, model, optimizer, scheduler, state: dict, keep: int) -> Path:
    """Write a checkpoint atomically (temp dir, fsync, rename), then prune old ones (never the best)."""
    import torch
    from safetensors.torch import save_file

    final = output_dir / "checkpoints" / f"step-{state['global_step']:08d}"
    with atomic_dir(final) as tmp:
        save_file({n: t.contiguous() for n, t in trainable_state(model).items()}, str(tmp / "trainable.safetensors"))
        _fault("checkpoint")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()}, tmp / "optim.pt")
        sums = {name: file_digest(tmp / name) for name in ("trainable.safetensors", "optim.pt")}
        (tmp / "state.json").write_text(json.dumps({**state, "checksums": sums}, indent=1))
    best = state.get("best_checkpoint")
    for old in list_checkpoints(output_dir)[:-keep]:
        if old.name != best:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _rng_state() -> dict:
    import random

    import torch

    return {"torch": torch.get_rng_state(), "python": random.getstate(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    import random

    import torch

    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def load_trainable(model, ckpt: Path) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing or set(weights) - set(params):
        raise UserError(f"checkpoint {ckpt}: its weights do not match this model (e.g. {(missing or sorted(set(weights) - set(params)))[0]})")
    import torch

    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t)


def checkpoint_damage(ckpt: Path) -> str | None:
    """What is wrong with a checkpoint's files (a missing file or a checksum mismatch), or None."""
    try:
        sums = json.loads((ckpt / "state.json").read_text()).get("checksums", {})
    except (OSError, ValueError):
        return "state.json is unreadable"
    for name, digest in sums.items():
        if not (ckpt / name).is_file():
            return f"{name} is missing"
        if file_digest(ckpt / name) != digest:
            return f"{name} does not match its checksum"
    return None


def pick_checkpoint(output_dir: Path, resume: str) -> Path | None:
    """The checkpoint to resume from: ``last`` is the newest undamaged one (a damaged newer one is
    skipped with a warning); ``best`` must be undamaged."""
    if resume == "none":
        return None
    ckpts = list_checkpoints(output_dir)
    if not ckpts:
        raise UserError(f"--resume {resume}: no complete checkpoint in {output_dir / 'checkpoints'}")
    if resume == "last":
        for ckpt in reversed(ckpts):
            damage = checkpoint_damage(ckpt)
            if damage is None:
                return ckpt
            print(f"warning: checkpoint {ckpt.name} is damaged ({damage}); trying an older one", flush=True)
        raise UserError(f"--resume last: every checkpoint in {output_dir / 'checkpoints'} is damaged; start again with --overwrite")
    best = None
    for ckpt in reversed(ckpts):  # the newest readable state names the best checkpoint
        try:
            best = json.loads((ckpt / "state.json").read_text()).get("best_checkpoint")
            break
        except (OSError, ValueError):
            continue
    if best is None or not (output_dir / "checkpoints" / best).is_dir():
        raise UserError(f"--resume best: the best checkpoint recorded in {ckpts[-1]} is missing")
    damage = checkpoint_damage(output_dir / "checkpoints" / best)
    if damage:
        raise UserError(f"--resume best: checkpoint {best} is damaged ({damage}); use --resume last")
    return output_dir / "checkpoints" / best


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


def metric_value(entry: dict, metric: str) -> float:
    """``accuracy`` etc. of the dev split, or ``SET.accuracy`` etc. of an eval set, from a history entry."""
    if "." in metric:
        name, key = metric.rsplit(".", 1)
        return entry["eval_sets"][name][key]
    return entry[metric]


def _is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def _setup_optimizer(model, cfg):
    import torch

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=0.9)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=False)


def _evaluate(model, val_encoded, val_labels, pad_id, cfg, precision, device, label_names) -> dict:
    import torch

    logits = predict_logits(model, val_encoded, pad_id, batch_size=cfg.eval_batch_size, precision=precision, device=device)
    if val_labels.ndim == 2:  # multi-label
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(val_labels)).item())
    else:
        loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_labels)).item())
    m = metrics_from_logits(val_labels, logits, label_names)
    keep = ("accuracy", "micro_f1", "macro_f1", "n", "per_class", "confusion_matrix")
    return {"loss": loss, **{k: m[k] for k in keep if k in m}}


def lock_path(out: Path) -> Path:
    """The lock file of a run directory: beside it, so that taking it creates nothing inside."""
    return out.parent / f".{out.name}.lock"


def _check_output_dir(out: Path, resume: str, overwrite: bool) -> None:
    if resume != "none":
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out}: exists and is not a directory")
    if is_run_dir(out) and not overwrite:
        raise UserError(f"output_dir {out}: already holds a run; pass --resume last to continue it or --overwrite to start again")


def train(config: Config, resume: str = "none", overwrite: bool = False) -> Path:
    """Train a LoRA classifier as ``config`` says and write its run directory.

    Args:
        config: the resolved configuration (see ``textlora.config``).
        resume: ``none`` starts afresh; ``last`` or ``best`` continue from that checkpoint in
            ``config.output_dir`` with the same optimizer state, LR schedule and step count.
        overwrite: allow starting afresh in an output_dir that already holds a run.

    Returns:
        The run directory.
    """
    import torch

    from textlora.data import load_splits
    from textlora.models import build_model, check_budget, load_tokenizer

    if resume not in ("none", "last", "best"):
        raise UserError(f"--resume: expected last, best or none, found {resume!r}")
    dist_info, device = init_distributed()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = config.train
    out = Path(config.output_dir)
    lock = hold_lock(lock_path(out), what=f"output_dir {out}") if dist_info.main else None  # held until this process ends
    _check_output_dir(out, resume, overwrite)
    ckpt = pick_checkpoint(out, resume)
    precision = resolve_precision(cfg.precision, device)

    # _setup_data: read, split, tokenize once
    splits = load_splits(config.data, config.seed)
    config = resolve(config, splits.label_names, splits.train_texts)
    if ckpt is not None:
        saved = json.loads((ckpt / "state.json").read_text())["config"]
        diffs = config_differences(saved, config.to_dict())
        if diffs:
            raise UserError(f"--resume {resume}: checkpoint {ckpt.name} was made with a different config ({'; '.join(diffs[:3])})")
    tokenizer = load_tokenizer(config.model.name)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_enc = encode_texts(tokenizer, splits.train_texts, config.model.max_length)
    val_enc = encode_texts(tokenizer, splits.val_texts, config.model.max_length)
    sets_enc = {name: (encode_texts(tokenizer, texts, config.model.max_length), labels) for name, (texts, labels) in splits.eval_sets.items()}
    lengths = np.array([len(s) for s in train_enc])

    # _setup_model
    torch.manual_seed(config.seed)
    model, breakdown = build_model(config, splits.label_names)
    check_budget(breakdown, config.budget.max_trainable_params)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.to(device)
    core = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    # schedule: each rank takes every world-th batch; an optimizer step is grad_accum micro-batches
    per_rank = len(epoch_batches(lengths, cfg.batch_size, config.seed, 0)) // dist_info.world
    if per_rank == 0:
        raise UserError(f"train.batch_size {cfg.batch_size}: too large for {len(lengths)} training rows on {dist_info.world} process(es)")
    steps_per_epoch = math.ceil(per_rank / cfg.grad_accum)
    total_steps = cfg.max_steps or math.ceil(steps_per_epoch * cfg.epochs)
    optimizer = _setup_optimizer(core, cfg)
    scheduler = make_scheduler(optimizer, cfg.lr_scheduler, cfg.warmup_ratio, total_steps)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    fit = Fit()
    if ckpt is not None:
        load_trainable(core, ckpt)
        extra = torch.load(ckpt / "optim.pt", weights_only=False)
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        _set_rng_state(extra["rng"])
        state = json.loads((ckpt / "state.json").read_text())
        fit = Fit(**{k: state[k] for k in Fit.__dataclass_fields__})
        if resume == "best":  # continue from the best: later history is discarded
            fit.history = [h for h in fit.history if h["step"] <= fit.global_step]
            fit.train_log = [h for h in fit.train_log if h["step"] <= fit.global_step]

    writer = None
    if dist_info.main:
        if ckpt is None:
            clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        writer = _tensorboard(out / "logs")
        print(
            f"textlora: {len(splits.train_texts):,} train rows, {len(splits.val_texts):,} dev rows, {len(splits.label_names)} classes; "
            f"{breakdown.total:,} trainable params; {precision} on {device}; {total_steps} steps ({steps_per_epoch}/epoch) x {cfg.batch_size * cfg.grad_accum * dist_info.world} rows"
            + (f"; resuming at step {fit.global_step} from {ckpt.name}" if ckpt else ""),
            flush=True,
        )

    # _fit
    weights = None
    if config.data.multi_label:  # one sigmoid a class (class_weights and label_smoothing are refused by the config)
        loss_fn = torch.nn.BCEWithLogitsLoss()
    elif cfg.class_weights == "balanced":
        counts = np.bincount(splits.train_labels, minlength=len(splits.label_names)).astype(np.float32)
        weights = torch.from_numpy(len(splits.train_labels) / (len(counts) * np.maximum(counts, 1))).to(device)
    if not config.data.multi_label:
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    labels_t = torch.from_numpy(splits.train_labels)
    model.train()
    progress = _progress(total_steps, fit.global_step, dist_info.main)
    stop = fit.global_step >= total_steps
    try:
        with _Signals() as signals:
            t0 = time.perf_counter()
            window_t = time.perf_counter()
            while not stop:
                epoch, step_in_epoch = divmod(fit.global_step, steps_per_epoch)
                batches = epoch_batches(lengths, cfg.batch_size, config.seed, epoch)[dist_info.rank :: dist_info.world][:per_rank]
                for step in range(step_in_epoch, steps_per_epoch):
                    micro = batches[step * cfg.grad_accum : (step + 1) * cfg.grad_accum]
                    for j, idx in enumerate(micro):
                        ids, mask = pad_batch([train_enc[i] for i in idx], pad_id)
                        y = labels_t[idx].to(device)
                        sync = j == len(micro) - 1 or dist_info.world == 1
                        ctx = model.no_sync() if not sync else _null()
                        with ctx:
                            with autocast(precision, device):
                                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                            loss = loss_fn(logits.float(), y) / len(micro)
                            (scaler.scale(loss) if scaler else loss).backward()
                        fit.window_loss += loss.item() * len(micro) * len(idx)
                        fit.window_rows += len(idx)
                    _fault("step")
                    if scaler:
                        scaler.unscale_(optimizer)
                    if cfg.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(core.parameters(), cfg.max_grad_norm)
                    if scaler:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    fit.global_step += 1
                    progress.update(1)
                    if fit.global_step % cfg.logging_steps == 0 and dist_info.main:
                        rate = fit.window_rows * dist_info.world / max(time.perf_counter() - window_t, 1e-9)
                        entry = {
                            "step": fit.global_step,
                            "epoch": round(fit.global_step / steps_per_epoch, 4),
                            "loss": fit.window_loss / max(fit.window_rows, 1),
                            "lr": scheduler.get_last_lr()[0],
                            "rows_per_s": rate,
                        }
                        fit.train_log.append(entry)
                        _log_scalars(writer, "train", entry)
                        progress.set_postfix(loss=f"{entry['loss']:.4f}", rows_s=f"{rate:.0f}")
                        fit.window_loss, fit.window_rows, window_t = 0.0, 0, time.perf_counter()
                    end_of_epoch = step == steps_per_epoch - 1
                    last = fit.global_step >= total_steps
                    due = (cfg.eval_strategy == "steps" and fit.global_step % cfg.eval_steps == 0) or (cfg.eval_strategy == "epoch" and end_of_epoch) or last
                    if due:
                        fit.train_seconds += time.perf_counter() - t0
                        stop = _eval_and_checkpoint(
                            core,
                            fit,
                            out,
                            optimizer,
                            scheduler,
                            config,
                            dist_info,
                            writer,
                            val_enc,
                            sets_enc,
                            splits,
                            pad_id,
                            precision,
                            device,
                            steps_per_epoch,
                        )
                        t0 = time.perf_counter()
                        window_t = time.perf_counter()
                    if last or stop:
                        stop = True
                        break
                    if dist_info.any_flag(bool(signals.received)):
                        saved = (
                            save_checkpoint(
                                out,
                                core,
                                optimizer,
                                scheduler,
                                {**fit.__dict__, "config": config.to_dict(), "textlora_version": __version__},
                                cfg.save_total_limit,
                            )
                            if dist_info.main
                            else out
                        )
                        progress.close()
                        dist_info.barrier()
                        raise TrainingInterrupted(signals.received or signal.SIGTERM, fit.global_step, saved)
    finally:  # an error message starts on a line of its own, not after the progress bar
        progress.close()
    if dist_info.main:
        if writer:
            writer.close()
        _write_run_dir(core, tokenizer, config, splits, breakdown, fit, out, precision, total_steps)
    finish_distributed(dist_info)
    if lock is not None:
        lock.close()
    return out


def _null():
    import contextlib

    return contextlib.nullcontext()


def _eval_and_checkpoint(
    core, fit, out, optimizer, scheduler, config, dist_info, writer, val_enc, sets_enc, splits, pad_id, precision, device, steps_per_epoch
) -> bool:
    """Evaluate on the dev split and the eval sets, checkpoint (rank 0), and decide on early stopping. Returns stop?"""
    cfg = config.train
    stop = False
    if dist_info.main:
        _fault("eval")
        m = _evaluate(core, val_enc, splits.val_labels, pad_id, cfg, precision, device, splits.label_names)
        sets = {n: _evaluate(core, enc, labels, pad_id, cfg, precision, device, splits.label_names) for n, (enc, labels) in sets_enc.items()}
        entry = {"step": fit.global_step, "epoch": round(fit.global_step / steps_per_epoch, 4), **m}
        if sets:
            entry["eval_sets"] = sets
        fit.history.append(entry)
        _log_scalars(writer, "eval", {k: entry[k] for k in ("loss", "accuracy", "macro_f1")}, fit.global_step)
        for n, sm in sets.items():
            _log_scalars(writer, f"eval_{n}", {k: sm[k] for k in ("loss", "accuracy", "macro_f1")}, fit.global_step)
        name = f"step-{fit.global_step:08d}"
        value = metric_value(entry, cfg.metric_for_best)
        if _is_better(value, fit.best_metric, cfg.metric_for_best):
            fit.best_metric, fit.best_checkpoint, fit.bad_evals = value, name, 0
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
        state = {**fit.__dict__, "config": config.to_dict(), "textlora_version": __version__}
        save_checkpoint(out, core, optimizer, scheduler, state, cfg.save_total_limit)
        stop = cfg.early_stopping_patience > 0 and fit.bad_evals >= cfg.early_stopping_patience
        if stop:
            print(f"early stopping: no improvement of {cfg.metric_for_best} in {fit.bad_evals} evaluations", flush=True)
    return dist_info.broadcast_flag(stop)


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


def _write_run_dir(core, tokenizer, config, splits, breakdown, fit, out: Path, precision: str, total_steps: int) -> None:
    """Load the best checkpoint's weights and write the self-contained run directory (see textlora.run)."""
    if fit.best_checkpoint:
        load_trainable(core, out / "checkpoints" / fit.best_checkpoint)
    best = next((h for h in fit.history if f"step-{h['step']:08d}" == fit.best_checkpoint), None)
    metrics = {
        "best": best,
        "metric_for_best": config.train.metric_for_best,
        "history": fit.history,
        "train_log": fit.train_log,
        "total_steps": total_steps,
        "steps_done": fit.global_step,
        "train_seconds": round(fit.train_seconds, 2),
        "precision": precision,
        "trainable_params": breakdown.as_dict(),
        "data": splits.counts,
    }
    write_run(out, core, tokenizer, config, splits, breakdown, metrics)
