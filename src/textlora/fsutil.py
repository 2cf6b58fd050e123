"""Atomic file and directory writes, and output-path checks."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from textlora.errors import UserError
from textlora.faults import fault


@contextlib.contextmanager
def _no_space_is_one_line(final: Path) -> Iterator[None]:
    """A full disk (ENOSPC, EDQUOT) while writing ``final`` becomes one UserError line; the previous version is untouched."""
    import errno

    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"{final}: no space left on device while writing it; the previous version (if any) is intact") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp file path beside ``final``; on success fsync it and rename it into place.

    An exception (or a kill) leaves no partial file under the final name.
    """
    final = Path(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        with _no_space_is_one_line(final):
            yield tmp
            fault("enospc")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp directory beside ``final``; on success fsync its files and rename it into place.

    An existing ``final`` directory is replaced only once the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        with _no_space_is_one_line(final):
            yield tmp
            fault("enospc")
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
        _fsync_dir(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output(
    output: str | os.PathLike,
    *,
    flag: str,
    overwrite: bool,
    inputs: list = (),
    folder: bool = False,
    taken=None,
    taken_hint: str = "already exists; pass --overwrite to replace it",
) -> Path:
    """The one check of a path a verb will write, made before any work; each refusal is one line naming ``flag``.

    Refused: the output is one of ``inputs``; a folder where a file goes (or, with ``folder``, a file
    where a folder goes); a parent path that is a file or is not writable; an output that is already
    there (``taken(out)``, by default: it exists) unless ``overwrite`` (the message ends in ``taken_hint``). A missing parent folder is
    created, so that config paths such as ``runs/NAME`` work in a fresh checkout.
    """
    out = Path(output)
    for inp in inputs:
        if inp is not None and out.resolve() == Path(inp).resolve():
            raise UserError(f"{flag} {out}: is the same file as the input; choose another output path")
    if out.exists() and out.is_dir() != folder:
        raise UserError(f"{flag} {out}: exists and is a {'file' if folder else 'folder'}; expected a {'folder' if folder else 'file'}")
    parent = out.parent if str(out.parent) else Path(".")
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{flag} {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise UserError(f"{flag} {out}: folder {existing} is not writable")
    if (taken(out) if taken else out.exists()) and not overwrite:
        raise UserError(f"{flag} {out}: {taken_hint}")
    parent.mkdir(parents=True, exist_ok=True)
    return out


def cache_dir() -> Path:
    """Where textlora keeps converted or unpacked models: $TEXTLORA_CACHE, else ~/.cache/textlora."""
    root = os.environ.get("TEXTLORA_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "textlora")
    return Path(root)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (names and bytes, in sorted order)."""
    import hashlib

    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def fingerprint(settings: dict, inputs: list, paths: tuple[str, ...] = ()) -> str:
    """A step's cache key: its settings and the content of its input files/folders, in order.

    ``paths`` names the settings that only say where inputs and outputs are (output folder, input
    files): they are left out, so the same inputs named by another path (a relative path, another
    checkout) give the same key, and changed content a new one.
    """
    import hashlib
    import json

    kept = {k: v for k, v in settings.items() if k not in paths}
    digests = [file_digest(p) if p is not None and Path(p).exists() else None for p in inputs]
    return hashlib.sha256(json.dumps({"settings": kept, "inputs": digests}, sort_keys=True, default=str).encode()).hexdigest()[:16]


def lock_path(out: Path) -> Path:
    """The lock file of an output folder (a run, an adapted LM): beside it, so that taking it creates nothing inside."""
    return out.parent / f".{out.name}.lock"


def hold_lock(path: str | os.PathLike, what: str):
    """Take an exclusive lock on ``path`` for as long as the returned file stays open.

    The lock is ``flock``'s: the kernel drops it when its process ends, however it ends, so a lock
    file left by a killed process never blocks. Another live holder is a UserError naming its pid.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"{what} is in use by another textlora process (pid {pid}); wait for it to finish or choose another") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
