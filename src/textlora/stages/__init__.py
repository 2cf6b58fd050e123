"""The stage protocol and the one loop that runs a pipeline's stages.

A stage is an object with a ``name`` and three methods:

- ``key(ctx) -> str | None``: its cache key, from its settings and the digests of its inputs
  (never their paths); ``None``: not cached (it runs every time, e.g. ``evaluate``).
- ``run(ctx, resume) -> StageResult``: do the work. ``resume`` is True when the same stage with
  the same key was started before and did not finish (a killed run): the stage continues from
  what it left (a checkpoint, finished batches) rather than starting over.
- ``use(ctx, result)``: hand its result to the stages after it (for a cached result too), e.g.
  the files the classifier trains on. The default does nothing.

and optionally ``present(ctx, result) -> bool``: whether a cached result's outputs are still there
(default True); when they are gone, the stage runs again; and ``skip(ctx) -> str | None``: a reason
not to run at all this time (an earlier stage's verdict), shown in its summary row.

:func:`run_stages` is the loop: for each stage, in list order, the cache in ``stages.json``, the
timing line (``== NAME: SECONDS s``), the summary row, and resume. A new stage is one class and
one entry in the list (``textlora.pipeline.default_stages``); stages hand results to each other as
:class:`StageResult` objects in ``ctx.results``, never by reading each other's files.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class StageResult:
    """What a stage made: rows (for the summary), a one-line note, and ``data`` for later stages
    (JSON-serialisable: it is kept in stages.json, so a cached stage gives the same result)."""

    rows: int | None = None
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # extra columns of the summary row (dev, eval_sets)


class Stage(Protocol):
    name: str

    def key(self, ctx) -> str | None: ...

    def run(self, ctx, resume: bool) -> StageResult: ...

    def use(self, ctx, result: StageResult) -> None: ...


class Record:
    """``OUTPUT_DIR/stages.json``: each stage's cache key, state (started/done), seconds and result."""

    def __init__(self, out: Path, fresh: bool):
        self.path = out / "stages.json"
        self.entries = {} if fresh or not self.path.is_file() else json.loads(self.path.read_text())
        self.summary: list[dict] = []

    def done(self, name: str, key: str) -> dict | None:
        entry = self.entries.get(name)
        return entry if entry and entry.get("key") == key and entry.get("state") == "done" else None

    def started(self, name: str, key: str) -> bool:
        entry = self.entries.get(name)
        return bool(entry and entry.get("key") == key and entry.get("state") == "started")

    def start(self, name: str, key: str | None) -> None:
        if key is not None:
            self.entries[name] = {"key": key, "state": "started"}
            self._write()

    def finish(self, name: str, key: str | None, seconds: float, result: StageResult) -> None:
        if key is not None:
            self.entries[name] = {"key": key, "state": "done", "seconds": seconds, **_stored(result)}
            self._write()

    def report(self, name: str, seconds: float, result: StageResult, cached: bool) -> None:
        """The timing line and the summary row."""
        row = {"stage": name, "cached": cached, "seconds": seconds, "rows": result.rows, "note": result.note, **result.summary}
        self.summary.append(row)
        note = f" ({result.note})" if result.note else ""
        rows = f", {result.rows:,} rows" if result.rows is not None else ""
        print(f"== {name}: {seconds:.0f} s{' (cached)' if cached else ''}{rows}{note}", flush=True)

    def _write(self) -> None:
        from textlora.fsutil import atomic_path

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.entries, indent=2))


def _stored(result: StageResult) -> dict:
    return {"rows": result.rows, "note": result.note, "data": result.data, "summary": result.summary}


def _restored(entry: dict) -> StageResult:
    return StageResult(entry.get("rows"), entry.get("note", ""), entry.get("data") or {}, entry.get("summary") or {})


def run_stages(stages: list, ctx, record: Record) -> None:
    """Run ``stages`` in order over ``ctx`` (which carries ``results``: name -> StageResult)."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique: {names}")
    for stage in stages:
        reason = getattr(stage, "skip", lambda _ctx: None)(ctx)
        if reason:
            record.report(stage.name, 0.0, StageResult(note=f"skipped: {reason}"), cached=False)
            continue
        key = stage.key(ctx)
        entry = record.done(stage.name, key) if key is not None else None
        if entry is not None:
            result = _restored(entry)
            if getattr(stage, "present", lambda _ctx, _r: True)(ctx, result):
                record.report(stage.name, entry.get("seconds", 0.0), result, cached=True)
                _use(stage, ctx, result)
                continue
        resume = key is not None and record.started(stage.name, key)
        record.start(stage.name, key)
        t0 = time.perf_counter()
        result = stage.run(ctx, resume)
        seconds = round(time.perf_counter() - t0, 1)
        record.finish(stage.name, key, seconds, result)
        record.report(stage.name, seconds, result, cached=False)
        _use(stage, ctx, result)


def _use(stage, ctx, result: StageResult) -> None:
    ctx.results[stage.name] = result
    use = getattr(stage, "use", None)
    if use is not None:
        use(ctx, result)
