"""Fault injection for the crash-safety tests: ``TEXTLORA_FAULT=POINT:N`` in the environment.

The N-th time this process reaches POINT, it fails there. Unset (the normal case), nothing happens.

| POINT | where | what happens |
|---|---|---|
| ``step`` | training, after backward, before the optimizer step | SIGKILL |
| ``eval`` | training, during an evaluation | SIGKILL |
| ``checkpoint`` | half-way through writing a checkpoint | SIGKILL |
| ``adapt_step`` | adapt, after backward, before the optimizer step | SIGKILL |
| ``prefix`` | training with ``lora.layers``, before each batch of the prefix cache is computed | SIGKILL |
| ``enospc`` | an atomic file or folder write (``fsutil``) | ``OSError(ENOSPC)``, as a full disk |

tests/test_crash.py uses it to show that a killed run resumes exactly and that a full disk leaves
the previous checkpoint or output intact.
"""

from __future__ import annotations

import os

_SEEN: dict[str, int] = {}


def fault(point: str) -> None:
    """Fail here if ``TEXTLORA_FAULT`` asks for the current visit to ``point`` (see the table above)."""
    spec = os.environ.get("TEXTLORA_FAULT")
    if not spec or not spec.startswith(point + ":"):
        return
    _SEEN[point] = _SEEN.get(point, 0) + 1
    if _SEEN[point] != int(spec.split(":")[1]):
        return
    if point == "enospc":
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
