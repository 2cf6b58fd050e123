"""Top-k LoRA's cached frozen prefix: the hidden states that enter the first trained layer, computed
once per text and reused by every epoch, evaluation, seed and rerun.

With LoRA (and trained biases) only in the top layers of an encoder and dropout off below them, the
states that enter layer ``split`` depend on the text alone. :func:`prefix_cache` computes them once
(in bf16 where the CPU has it, else fp32), keeps them on disk under the cache folder, keyed by the
token ids, the model's weights and the split, so that another seed (another split of the same rows)
or a rerun reads them back instead of paying for them again; a file that does not match its
manifest (truncated, another model) is rebuilt with a line that says so, never used. The folder
stays under ``$TEXTLORA_PREFIX_CACHE_GB`` (20): a new cache drops the least recently used others
(each use touches its manifest), never one whose lock another process holds or one used in the last
minute; any cache may be deleted by hand, and is computed again when next needed.
A new text set (a self-training round's rows, a labelling round's) copies the states of the texts
that an earlier cache of the same weights holds (each cache keeps its token lists) and computes only
the others.

:func:`attached` then runs a model from the cache: the encoder's layer list is cut to the layers from
``split`` up, and the states of each batch are looked up by each row's token ids and put in front of
the first kept layer. Every forward pass inside it (training steps, ``predict_logits``) skips the
frozen prefix; the embeddings still run (a lookup), so nothing else changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textlora.errors import UserError

MANIFEST = "manifest.json"
DATA = "states.bin"
TOKENS = "tokens.bin"  # every sequence's token ids (int32), in the file's order: what a later cache may copy from
LENGTHS = "lengths.bin"  # tokens a sequence (int64)
LIMIT_ENV = "TEXTLORA_PREFIX_CACHE_GB"
DEFAULT_LIMIT_GB = 20.0
GRACE_S = 60  # a cache used this recently is never dropped: another process may be about to read it


@dataclass
class PrefixCache:
    """The states of each distinct token sequence: rows ``offsets[i]:offsets[i] + lengths[i]`` of ``data`` ([tokens, hidden])."""

    index: dict  # token ids (as bytes) -> sequence number
    offsets: np.ndarray
    lengths: np.ndarray
    data: object  # torch tensor [total tokens, hidden] (in memory, or over a memory-mapped file)
    where: str  # memory | disk (memory-mapped)
    path: Path
    built: bool  # computed in this call (False: read back)

    def states(self, ids, mask):
        """[batch, width, hidden] float32 states for a padded batch, zeros at the padding."""
        import torch

        width = ids.shape[1]
        out = torch.zeros((ids.shape[0], width, self.data.shape[1]), dtype=torch.float32)
        for r in range(ids.shape[0]):
            n = int(mask[r].sum())
            j = self.index.get(_key(ids[r, :n]))
            if j is None:
                raise KeyError("a text that the prefix cache does not hold")
            o = int(self.offsets[j])
            out[r, :n] = self.data[o : o + n].float()
        return out


def _key(ids) -> bytes:
    return np.asarray(ids, dtype=np.int32).tobytes()


def layer_list(model):
    """(parent module, attribute name, the ModuleList of transformer blocks) of an encoder, as its registry family names them."""
    import torch

    from textlora.registry import family_of

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    family = family_of(base)
    attr = family.layers if family else "layer"
    for module in base.modules():
        for child_name, child in module.named_children():
            if child_name == attr and isinstance(child, torch.nn.ModuleList):
                return module, child_name, child
    raise UserError(f"lora.layers: cannot find the transformer blocks ('{attr}') of model type '{getattr(base.config, 'model_type', '?')}'")


def model_key(model, split: int, dtype: str) -> str:
    """What the states depend on besides the texts: the frozen weights outside the kept layers
    (embeddings, the layers below ``split``), the split and the dtype."""
    h = hashlib.sha256(f"layout 3 (sequences sorted, token list kept)|{split}|{dtype}".encode())  # a new layout never reads an old file
    _, _, layers = layer_list(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kept = {id(p) for layer in list(layers)[split:] for p in layer.parameters()}
    encoder = base.base_model_prefix + "."  # the encoder's own weights: not the head (nor peft's frozen copy of it) nor the pooler
    for name, p in base.named_parameters():
        if name.startswith(encoder) and ".pooler." not in name and id(p) not in kept and not p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


def prefix_key(model_digest: str, sequences: list[bytes]) -> str:
    """The cache key: :func:`model_key` and the token sequences."""
    h = hashlib.sha256(model_digest.encode())
    for s in sorted(sequences):
        h.update(len(s).to_bytes(4, "little"))
        h.update(s)
    return h.hexdigest()[:20]


def prefix_cache(model, encoded: list[list[int]], split: int, *, precision: str, device, root: Path, max_memory_gb: float, batch_size: int = 64) -> PrefixCache:
    """The states entering layer ``split`` for every distinct sequence of ``encoded``, from ``root`` when a
    matching cache is there, else computed (and written there). Held in memory up to ``max_memory_gb``, else memory-mapped."""
    import torch

    distinct = sorted({_key(ids) for ids in encoded})  # sorted: the file's layout must not depend on the split's order (another seed reads it)
    store = "bf16" if precision == "bf16" else "fp32"
    digest = model_key(model, split, store)
    key = prefix_key(digest, distinct)
    folder = Path(root) / key
    hidden = model.config.hidden_size
    lengths = np.array([len(s) // 4 for s in distinct], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    itemsize = 2 if store == "bf16" else 4
    expected = int(lengths.sum()) * hidden * itemsize
    problem = _check(folder, key, len(distinct), expected)
    built = problem is not None
    if built:
        import shutil

        size_limit_gb()  # a bad limit is one line before any state is computed

        from textlora.fsutil import hold_lock

        with hold_lock(Path(root) / f".{key}.lock", what=f"prefix cache {folder}"):
            problem = _check(folder, key, len(distinct), expected)  # another process may have made it meanwhile
            if problem is not None:
                if problem != "none there":
                    print(f"prefix cache {folder}: {problem}; rebuilding it", flush=True)
                for stale in Path(root).glob(f".{key}.*.tmp"):  # left by a killed build
                    shutil.rmtree(stale, ignore_errors=True)
                _build(model, distinct, lengths, offsets, split, folder, key, store, hidden, precision, device, batch_size, digest, Path(root))
        evict(Path(root), keep=folder)
    else:
        _touch(folder)
    dtype = torch.bfloat16 if store == "bf16" else torch.float32
    in_memory = expected <= max_memory_gb * 2**30
    raw = (
        np.fromfile(folder / DATA, dtype=np.uint16 if store == "bf16" else np.float32)
        if in_memory
        else np.memmap(folder / DATA, mode="r", dtype=np.uint16 if store == "bf16" else np.float32)
    )
    data = torch.from_numpy(np.asarray(raw)).view(dtype).reshape(-1, hidden) if in_memory else _MappedRows(raw, hidden, dtype)
    index = {s: i for i, s in enumerate(distinct)}
    return PrefixCache(index, offsets, lengths, data, "memory" if in_memory else "disk", folder, built)


class _MappedRows:
    """Rows of a memory-mapped states file, read on demand (the page cache keeps what is hot)."""

    def __init__(self, raw, hidden: int, dtype):
        self.raw, self.hidden, self.dtype = raw, hidden, dtype
        self.shape = (len(raw) // hidden, hidden)

    def __getitem__(self, rows: slice):
        import torch

        part = np.array(self.raw[rows.start * self.hidden : rows.stop * self.hidden])
        return torch.from_numpy(part).view(self.dtype).reshape(-1, self.hidden)


def _touch(folder: Path) -> None:
    """Mark a cache as used now (what :func:`evict` orders by)."""
    import os

    with contextlib.suppress(OSError):
        os.utime(folder / MANIFEST)


def size_limit_gb() -> float:
    """``$TEXTLORA_PREFIX_CACHE_GB``, else 20."""
    import os

    raw = os.environ.get(LIMIT_ENV, "").strip()
    if not raw:
        return DEFAULT_LIMIT_GB
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UserError(f"{LIMIT_ENV}: expected a number of GB >= 0, found '{raw}'")
    return value


def evict(root: Path, keep: Path) -> None:
    """Drop the least recently used caches under ``root`` until the folder is under :func:`size_limit_gb`;
    never ``keep``, one used in the last ``GRACE_S`` seconds, or one whose lock another process holds."""
    import shutil
    import time

    from textlora.fsutil import hold_lock

    limit = size_limit_gb() * 2**30
    caches = []
    for manifest in root.glob(f"*/{MANIFEST}"):
        with contextlib.suppress(OSError):
            caches.append((manifest.stat().st_mtime, sum(f.stat().st_size for f in manifest.parent.iterdir()), manifest.parent))
    total = sum(size for _, size, _ in caches)
    dropped, freed = 0, 0
    for used, size, folder in sorted(caches, key=lambda c: c[0]):
        if total <= limit:
            break
        if folder == keep or time.time() - used < GRACE_S:
            continue
        lock = root / f".{folder.name}.lock"
        try:
            held = hold_lock(lock, what=f"prefix cache {folder}")
        except UserError:
            continue  # in use by another process
        with held:
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
        total, freed, dropped = total - size, freed + size, dropped + 1
    if dropped:
        print(f"prefix cache: removed {dropped} least recently used cache{'s' * (dropped > 1)} ({freed / 2**20:.2f} MB) to stay under {LIMIT_ENV}={limit / 2**30:g}", flush=True)


def _check(folder: Path, key: str, n: int, expected_bytes: int) -> str | None:
    """None when ``folder`` holds this very cache, whole; else what is wrong with it."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return "none there"
    try:
        m = json.loads(manifest.read_text())
    except ValueError:
        return "its manifest is unreadable"
    if m.get("key") != key or m.get("sequences") != n:
        return "it was made for other texts or another model"
    size = (folder / DATA).stat().st_size if (folder / DATA).is_file() else -1
    if size != expected_bytes:
        return f"its states file has {size:,} bytes, not {expected_bytes:,} (truncated)"
    return None


def _donors(root: Path, digest: str, store: str, hidden: int, skip: Path) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """The whole caches under ``root`` made by the same frozen weights, split and dtype (another text
    set: a self-training round's, a labelling round's): (sequence -> number, offsets, states) each."""
    found = []
    for manifest in sorted(root.glob(f"*/{MANIFEST}")):
        folder = manifest.parent
        try:
            m = json.loads(manifest.read_text())
        except ValueError:
            continue
        if folder == skip or m.get("model") != digest or m.get("dtype") != store or m.get("hidden") != hidden or not (folder / TOKENS).is_file():
            continue
        itemsize = 2 if store == "bf16" else 4
        if (folder / DATA).stat().st_size != m["tokens"] * hidden * itemsize:
            continue  # truncated: never read
        lengths = np.fromfile(folder / LENGTHS, dtype=np.int64)
        tokens = np.fromfile(folder / TOKENS, dtype=np.int32)
        if len(lengths) != m["sequences"] or int(lengths.sum()) != len(tokens):
            continue
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        index = {tokens[o : o + n].tobytes(): i for i, (o, n) in enumerate(zip(offsets, lengths))}
        states = np.memmap(folder / DATA, mode="r", dtype=np.uint16 if store == "bf16" else np.float32).reshape(-1, hidden)
        found.append((index, offsets, states))
    return found


class CachedStates:
    """The states that earlier caches of the same frozen weights hold, read only (never written):
    what ``evaluate``, ``predict`` and ``pseudolabel`` use to score the texts a run's training has
    already seen (its dev split, eval sets, target texts) through the top layers alone. Has
    :class:`PrefixCache`'s ``states`` for :func:`attached`, and ``holds`` to split a batch of texts."""

    def __init__(self, donors: list[tuple[dict, np.ndarray, np.ndarray]], dtype: str):
        self.donors, self.dtype = donors, dtype
        self.used: set[int] = set()  # donors read from so far (each touched once: textlora.prefix.evict orders by use)
        self.index: dict[bytes, tuple[int, int]] = {}
        for d, (index, _offsets, _states) in enumerate(donors):
            for k, j in index.items():
                self.index.setdefault(k, (d, j))

    def holds(self, ids) -> bool:
        return _key(ids) in self.index

    def states(self, ids, mask):
        """[batch, width, hidden] float32 states for a padded batch, zeros at the padding."""
        import torch

        hidden = self.donors[0][2].shape[1]
        out = torch.zeros((ids.shape[0], ids.shape[1], hidden), dtype=torch.float32)
        for r in range(ids.shape[0]):
            n = int(mask[r].sum())
            d, j = self.index[_key(ids[r, :n])]
            if d not in self.used:
                self.used.add(d)
                _touch(Path(self.donors[d][2].filename).parent)
            _, offsets, states = self.donors[d]
            part = torch.from_numpy(np.array(states[offsets[j] : offsets[j] + n]))
            out[r, :n] = (part.view(torch.bfloat16) if self.dtype == "bf16" else part).float()
        return out


def cached_states(model, split: int, precision: str, root: Path) -> CachedStates | None:
    """The states entering layer ``split`` that caches under ``root`` hold for ``model``'s frozen weights
    (None when none match: another model, split or dtype). Nothing is computed or written."""
    store = "bf16" if precision == "bf16" else "fp32"
    if not Path(root).is_dir():
        return None
    donors = _donors(Path(root), model_key(model, split, store), store, model.config.hidden_size, skip=Path(root))
    return CachedStates(donors, store) if donors else None


def _build(
    model, distinct, lengths, offsets, split, folder: Path, key: str, store: str, hidden: int, precision: str, device, batch_size: int, digest: str, root: Path
) -> None:
    """Run the model up to layer ``split`` over every sequence and write the states (atomically, with
    their manifest and token list). States of a sequence that an earlier cache of the same weights
    holds are copied from it, not computed: a new text set pays for its new texts only."""
    import torch
    from tqdm.auto import tqdm

    from textlora.device import autocast
    from textlora.faults import fault
    from textlora.fsutil import atomic_dir
    from textlora.runtime import pad_batch, sorted_batches

    seqs = [np.frombuffer(s, dtype=np.int32).tolist() for s in distinct]
    _, _, layers = layer_list(model)
    captured = {}

    class _Stop(Exception):
        pass

    def grab(_module, args, kwargs):
        captured["h"] = args[0] if args else kwargs["hidden_states"]
        raise _Stop

    was_training = model.training
    model.eval()
    handle = layers[split].register_forward_pre_hook(grab, with_kwargs=True)
    total = int(lengths.sum())
    try:
        with atomic_dir(folder) as tmp:
            out = np.memmap(tmp / DATA, mode="w+", dtype=np.uint16 if store == "bf16" else np.float32, shape=(total, hidden))
            todo = np.ones(len(distinct), dtype=bool)
            for index, d_offsets, states in _donors(root, digest, store, hidden, skip=folder):
                before = int(todo.sum())
                for i in np.flatnonzero(todo):
                    j = index.get(distinct[i])
                    if j is not None:
                        out[offsets[i] : offsets[i] + lengths[i]] = states[d_offsets[j] : d_offsets[j] + lengths[i]]
                        todo[i] = False
                if todo.sum() < before:
                    _touch(Path(states.filename).parent)  # copied from: used
            reused = len(distinct) - int(todo.sum())
            if reused:
                print(f"prefix cache: {reused:,} of {len(distinct):,} texts read from earlier caches of the same model; computing {int(todo.sum()):,}", flush=True)
            missing = np.flatnonzero(todo)
            with torch.inference_mode(), autocast(precision, device):
                for part in tqdm(sorted_batches(lengths[missing], batch_size), desc="prefix cache", unit="batch", mininterval=5):
                    idx = missing[part]
                    fault("prefix")
                    ids, mask = pad_batch([seqs[i] for i in idx], 0)
                    try:
                        model(input_ids=ids.to(device), attention_mask=mask.to(device))
                    except _Stop:
                        pass
                    h = captured.pop("h").to(torch.bfloat16 if store == "bf16" else torch.float32).cpu()
                    raw = h.view(torch.int16).numpy().view(np.uint16) if store == "bf16" else h.numpy()
                    for r, i in enumerate(idx):
                        out[offsets[i] : offsets[i] + lengths[i]] = raw[r, : lengths[i]]
            out.flush()
            del out
            np.concatenate([np.frombuffer(x, dtype=np.int32) for x in distinct] or [np.empty(0, np.int32)]).astype(np.int32).tofile(tmp / TOKENS)
            lengths.astype(np.int64).tofile(tmp / LENGTHS)
            manifest = {"key": key, "model": digest, "sequences": len(distinct), "tokens": total, "hidden": hidden, "dtype": store, "split": split, "reused": reused}
            (tmp / MANIFEST).write_text(json.dumps(manifest))
    finally:
        handle.remove()
        model.train(was_training)


class _Attachment:
    """What :func:`attached` yields: ``aside()`` runs the whole model again for a while (the exact path)."""

    def __init__(self, parent, attr: str, full, kept):
        self.parent, self.attr, self.full, self.kept, self.on = parent, attr, full, kept, True

    @contextlib.contextmanager
    def aside(self):
        """The whole layer list and no injected states: for a pass that must not use the cache (its
        states are stored in bf16, so the fp32 pass over rows near a tie computes them afresh)."""
        setattr(self.parent, self.attr, self.full)
        self.on = False
        try:
            yield
        finally:
            self.on = True
            setattr(self.parent, self.attr, self.kept)


@contextlib.contextmanager
def attached(model, cache: PrefixCache, split: int):
    """Inside it, ``model`` runs from ``cache``: layers below ``split`` are skipped and their output is
    looked up by token ids. Yields an object whose ``aside()`` runs the whole model again for a while."""
    import torch

    parent, attr, layers = layer_list(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kept = torch.nn.ModuleList(list(layers)[split:])
    att = _Attachment(parent, attr, layers, kept)
    batch = {}

    def capture(_module, args, kwargs):
        batch["ids"] = kwargs.get("input_ids", args[0] if args else None)
        batch["mask"] = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    def inject(_module, args, kwargs):
        if not att.on:
            return None
        ids, mask = batch["ids"], batch["mask"]
        h = args[0] if args else kwargs["hidden_states"]
        states = cache.states(ids.cpu(), mask.cpu()).to(device=h.device, dtype=h.dtype)
        if args:
            return (states, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": states}

    hooks = [base.register_forward_pre_hook(capture, with_kwargs=True), kept[0].register_forward_pre_hook(inject, with_kwargs=True)]
    setattr(parent, attr, kept)
    try:
        yield att
    finally:
        setattr(parent, attr, layers)
        for h in hooks:
            h.remove()
