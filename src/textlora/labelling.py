"""The labelling page of ``textlora label``: one target text at a time, a button (and a key) per class.

The texts come in the order a query strategy ranks them (``textlora.active``), computed when the
server starts. With ``--model`` and ``--round-size N`` (10), every N new labels start a round in a
background thread (``textlora.rounds``): the run's classifier is trained again on the answers so far
and the texts not yet answered are ranked again; the person goes on answering from the previous
ranking meanwhile, and the progress line says which round the ranking comes from. Each answer is written to the labels file (``id,text,label``; an empty
label is a skip) by rewriting the whole file beside it and renaming it into place, under one lock:
a kill mid-write leaves the previous file whole, two tabs answering at once lose no row and write
none twice (the second answer to a text gets 409), and a restart reads the file and asks only about
texts not yet answered or skipped.

    textlora label --data TARGET.csv --labels labels.csv --model RUN [--goal 50] [--port 8001]

Routes: ``GET /`` (the page), ``GET /v1/next``, ``POST /v1/answer`` ``{id, label}`` (``label``
null: skip), ``POST /v1/undo``, ``GET /healthz``. With an API token (``--api-key`` or
``TEXTLORA_API_KEY``) every ``/v1/*`` call needs it, as ``serve``'s do, and the page asks for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from importlib import resources
from pathlib import Path

from textlora.errors import UserError
from textlora.faults import fault

HANDED_SECONDS = 120  # a text shown in one tab is not shown in another for this long, unless nothing else is left


def label(
    data: str,
    select: int | None = None,
    output: str | None = None,
    model: str | None = None,
    strategy: str | None = None,
    labels: str | None = None,
    classes: list[str] | None = None,
    goal: int = 50,
    round_size: int = 10,
    host: str = "127.0.0.1",
    port: int = 8001,
    api_key: str | None = None,
    text_column: str = "text",
    seed: int = 0,
    overwrite: bool = False,
) -> Path | None:
    """Ask a person to label the target texts that matter most: a web page, or a file for a spreadsheet.

    Without ``--select``: a page (loopback by default) that shows one text at a time, chosen by the
    strategy, with a button per class (keys 1..K, s to skip, u to undo) and a progress line; each
    answer is written to ``--labels`` at once (a kill loses nothing; a restart goes on where it
    stopped). With ``--select N --output FILE``: the N texts to ask about, as ``id,text,label``
    with an empty label column, and ``OUTPUT.select.json``; no page. Either file, filled in, is a
    pipeline's ``target.labelled``.

    Args:
        data: the unlabelled target texts (CSV/TSV/JSONL/Parquet; IDs from an ``id`` column, else the row number).
        select: write this many texts to --output instead of starting the page.
        output: with --select: the CSV to write.
        model: a trained run whose probabilities and embeddings the strategy uses; omit before any
            classifier exists (then kcenter on the texts' words, or random).
        strategy: random | margin | entropy | kcenter | combined (default: kcenter, on the run's pooled vectors with --model, else on hashed words).
        labels: the labels file (``id,text,label``): the page appends to it; with --select, its texts are
            never chosen again. An empty label is a skip.
        classes: the class names, without --model (with it, the run's).
        goal: the page stops asking after this many labels.
        round_size: with --model, retrain and rank again after every this many new labels (0: rank once).
        host: the page's address; loopback by default. Beyond loopback, set an API key.
        port: the page's TCP port.
        api_key: a bearer token every /v1/* call must send (default: the environment variable TEXTLORA_API_KEY).
        text_column: the text column of ``data``.
        seed: seeds the random strategy.
        overwrite: with --select: replace an existing output.
    """
    if select is None:
        import os

        from textlora.serve import API_KEY_ENV

        if not labels:
            raise UserError("--labels: name the file the answers go to (it is created, or continued where it stopped)")
        if output:
            raise UserError("--output: only with --select (the page writes its answers to --labels)")
        if not 1 <= port <= 65535:
            raise UserError(f"--port {port}: expected 1..65535")
        if round_size < 0:
            raise UserError(f"--round-size: expected an integer >= 0, found {round_size}")
        store = open_store(data, labels, model, strategy, classes, goal, text_column, seed, round_size)
        serve_labels(store, host, port, api_key or os.environ.get(API_KEY_ENV) or None)
        return None
    if not output:
        raise UserError("--output: name the CSV that --select writes")
    from textlora.active import select_texts

    return select_texts(data, select, output, model, strategy, labels, text_column, seed, overwrite)


class LabelStore:
    """The labels file and the queue of texts to ask about, behind one lock."""

    def __init__(self, path: Path, ids: list[str], texts: list[str], classes: list[str], queue: list[int], goal: int, answered: dict[str, str]):
        self.path, self.ids, self.texts, self.classes, self.goal = Path(path), ids, texts, classes, goal
        self.index = {i: k for k, i in enumerate(ids)}
        self.rows: list[tuple[str, str]] = list(answered.items())  # (id, label) in file order; "" is a skip
        self.queue = [k for k in queue if ids[k] not in answered]
        self.handed: dict[str, float] = {}
        self.lock = threading.Lock()
        self.strategy = "kcenter"
        self.learner = None  # textlora.rounds.Learner: retrains between rounds (set by the verb with --model)
        self.round_size = 0
        self.model = {"round": 0, "labels": 0, "running": False}  # where the current ranking comes from
        self._thread: threading.Thread | None = None

    def labelled(self) -> int:
        return sum(1 for _, label in self.rows if label)

    def progress(self) -> dict:
        return {"labelled": self.labelled(), "skipped": len(self.rows) - self.labelled(), "goal": self.goal, "model": dict(self.model)}

    # --- labelling rounds -------------------------------------------------------------------

    def maybe_start_round(self) -> None:
        """Start a round in the background when ``round_size`` labels came in since the last one began."""
        with self.lock:
            if self.learner is None or self.model["running"] or self.labelled() - self.model["labels"] < self.round_size:
                return
            answers = {self.index[i]: label for i, label in self.rows}
            self.model = {**self.model, "running": True, "labels": self.labelled()}
            self._thread = threading.Thread(target=self._round, args=(answers,), daemon=True, name="labelling-round")
            self._thread.start()

    def _round(self, answers: dict[int, str]) -> None:
        try:
            result = self.learner.round(answers, max(2 * self.goal, self.goal + 50))
        except Exception as e:  # the page goes on with the ranking it has
            print(f"textlora label: warning: the labelling round failed ({type(e).__name__}: {e}); the ranking stays", flush=True)
            with self.lock:
                self.model = {**self.model, "running": False, "error": str(e)[:200]}
            return
        with self.lock:
            done = {i for i, _ in self.rows}
            self.queue = [k for k in result.order if self.ids[k] not in done]
            self.model = {"round": self.model["round"] + 1, "labels": result.labelled, "running": False, "seconds": result.seconds["total"]}
        print(f"textlora label: round {self.model['round']}: retrained on {result.labelled} labels and ranked the pool again in {result.seconds['total']:.0f} s "
              f"(train {result.seconds['train']:.0f} s, score {result.seconds['score']:.0f} s)", flush=True)  # fmt: skip
        self.maybe_start_round()  # labels that came in meanwhile

    def wait_for_round(self, timeout: float) -> bool:
        """For tests and scripts: wait until no round is running; True when none is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            thread = self._thread
            if thread is None or not thread.is_alive():
                return not self.model["running"]
            thread.join(0.05)
        return False

    def next(self) -> dict:
        with self.lock:
            done = {i for i, _ in self.rows}
            free = [k for k in self.queue if self.ids[k] not in done]
            if self.labelled() >= self.goal or not free:
                return {"id": None, "progress": self.progress(), "classes": self.classes}
            now = time.monotonic()
            fresh = [k for k in free if now - self.handed.get(self.ids[k], -1e9) > HANDED_SECONDS]
            k = (fresh or free)[0]
            self.handed[self.ids[k]] = now
            return {"id": self.ids[k], "text": self.texts[k], "progress": self.progress(), "classes": self.classes}

    def answer(self, text_id: str, label: str | None) -> tuple[int, dict]:
        """(HTTP status, body): 200 written; 404 unknown id; 409 answered already; 422 not a class."""
        if label is not None and label not in self.classes:
            return 422, {"detail": f"label '{label}' is not a class; the classes are: {', '.join(self.classes)}"}
        with self.lock:
            if text_id not in self.index:
                return 404, {"detail": f"id '{text_id}' is not a text of this pool"}
            if any(i == text_id for i, _ in self.rows):
                return 409, {"detail": f"id '{text_id}' is answered already (undo it to change it)"}
            self.rows.append((text_id, label or ""))
            try:
                self._write()
            except BaseException:
                self.rows.pop()
                raise
            self.handed.pop(text_id, None)
            body = {"written": text_id, "progress": self.progress()}
        self.maybe_start_round()
        return 200, body

    def undo(self) -> tuple[int, dict]:
        with self.lock:
            if not self.rows:
                return 409, {"detail": "nothing to undo"}
            text_id, label = self.rows.pop()
            try:
                self._write()
            except BaseException:
                self.rows.append((text_id, label))
                raise
            k = self.index[text_id]
            self.queue = [k] + [q for q in self.queue if q != k]  # asked again next
            self.handed.pop(text_id, None)
            return 200, {"undone": text_id, "label": label, "progress": self.progress()}

    def _write(self) -> None:
        """The whole file, written beside it and renamed into place (``fsutil.atomic_path``)."""
        import csv

        from textlora.fsutil import atomic_path

        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["id", "text", "label"])
                for n, (i, label) in enumerate(self.rows):
                    w.writerow([i, self.texts[self.index[i]], label])
                    if n == len(self.rows) // 2:
                        f.flush()
                        fault("label_write")  # tests: killed half-way through writing the new file


def create_label_app(store: LabelStore, api_key: str | None = None):
    from fastapi import Body, FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse

    from textlora.serve import _Guard

    app = FastAPI(title="textlora label", version="1")
    page = resources.files("textlora").joinpath("static/label.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/next")
    def next_text():  # plain functions run in a thread: the lock may wait on a write
        return store.next()

    body = Body(None)  # the JSON body, read as a dict and checked here

    @app.post("/v1/answer")
    async def answer(a: dict = body):  # {"id": str, "label": str | null (skip)}
        if not isinstance(a, dict) or not isinstance(a.get("id"), str) or not isinstance(a.get("label"), (str, type(None))):
            return JSONResponse({"detail": 'expected {"id": "...", "label": "CLASS" or null}'}, status_code=422)
        status, body = await asyncio.to_thread(store.answer, a["id"], a["label"])  # the lock may wait on a write
        return JSONResponse(body, status_code=status)

    @app.post("/v1/undo")
    def undo():
        status, body = store.undo()
        return JSONResponse(body, status_code=status)

    return _Guard(app, api_key, 1 << 20)


def open_store(
    data: str, labels: str, model: str | None, strategy: str | None, classes: list[str] | None, goal: int, text_column: str, seed: int, round_size: int = 0
) -> LabelStore:
    """Read the pool and the labels file (answers so far), rank the texts, and check what a person will
    be asked. With ``model`` and ``round_size``, the rounds' learner ranks them (from its prefix cache)."""
    from textlora.active import rank_pool, read_pool

    if goal < 1:
        raise UserError(f"--goal: expected an integer >= 1, found {goal}")
    if model:
        from textlora.run import as_run

        names = as_run(model).labels
        if classes and list(classes) != list(names):
            raise UserError(f"--classes: {', '.join(classes)} differ from the run's classes ({', '.join(names)}); leave --classes out with --model")
        classes = names
    if not classes:
        raise UserError("--classes: name the classes (e.g. --classes negative positive), or give --model RUN")
    strategy = strategy or "kcenter"
    n = max(2 * goal, goal + 50)
    learner = None
    if model and round_size:
        from textlora.rounds import Learner

        ids, texts, answered = read_pool(data, text_column, labels, list(classes))
        if len(set(ids)) != len(ids):
            raise UserError(f"{data}: ids repeat; each text needs its own id")
        print("textlora label: loading the run for labelling rounds (the output of its frozen layers is cached once)", flush=True)
        learner = Learner(model, texts, strategy=strategy, seed=seed)
        index = {i: k for k, i in enumerate(ids)}
        queue = learner.round({index[i]: a for i, a in answered.items()}, n, whole=True).order  # after a restart: retrained on the answers so far
    else:
        ids, texts, answered, queue, _, _ = rank_pool(data, text_column, model, strategy, labels, list(classes), n, seed)
    if len(set(ids)) != len(ids):
        raise UserError(f"{data}: ids repeat; each text needs its own id")
    store = LabelStore(Path(labels), ids, texts, list(classes), queue, goal, answered)
    store.strategy, store.learner, store.round_size = strategy, learner, round_size if learner else 0
    store.model["labels"] = store.labelled()  # the ranking so far has seen these
    return store


def serve_labels(store: LabelStore, host: str, port: int, api_key: str | None) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError("the labelling page needs fastapi and uvicorn: pip install -e '.[serve]' (or use --select N --output FILE)") from None

    app = create_label_app(store, api_key)
    p = store.progress()
    print(f"textlora label: http://{host}:{port}/ ({p['labelled']} of {p['goal']} labelled so far; answers go to {store.path})", flush=True)
    if api_key:
        print("textlora label: /v1/* needs 'Authorization: Bearer TOKEN'", flush=True)
    elif host not in ("127.0.0.1", "localhost", "::1"):
        print(f"textlora label: warning: {host} is not loopback and no API key is set: anyone who reaches the port can label", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
