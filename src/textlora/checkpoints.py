"""Checkpoints of a training run (train and adapt): written atomically with checksums, verified before
resume; and the interruption both loops share (SIGINT/SIGTERM saves a checkpoint, then stops).

``OUTPUT_DIR/checkpoints/step-NNNNNNNN/`` holds the trainable weights
(``trainable.safetensors``), the optimizer, scheduler and RNG state (``optim.pt``) and
``state.json`` (the loop's state, the resolved config and the checksums of the other two files).
``--resume last`` takes the newest checkpoint that verifies; ``--resume best`` the best one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from textlora.errors import UserError
from textlora.faults import fault
from textlora.fsutil import atomic_dir, file_digest

# Settings that may change between a checkpoint and its resume; any other difference is refused.
RESUMABLE_CHANGES = {
    "output_dir",
    "train.eval_batch_size",
    "train.logging_steps",
    "train.save_total_limit",
    "train.early_stopping_patience",
    "train.prefix_cache",  # the cache changes how fast, not what is computed
    "train.prefix_cache_memory_gb",
}


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
        fault("checkpoint")
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


def set_rng_state(s: dict) -> None:
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


def restore(ckpt: Path, model, optimizer, scheduler) -> dict:
    """Put a checkpoint's trainable weights, optimizer, scheduler and RNG state back; returns its state.json."""
    import torch

    load_trainable(model, ckpt)
    saved = torch.load(ckpt / "optim.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    return json.loads((ckpt / "state.json").read_text())


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


# --- interruption ------------------------------------------------------------------------


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived and a resumable checkpoint was saved; the CLI exits with 128 + ``signum``."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class Signals:
    """Turns SIGINT/SIGTERM into a flag (``received``) that a training loop checks after each step."""

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
