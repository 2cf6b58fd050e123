"""A prediction service (FastAPI on uvicorn) with a small web page.

Requests are queued and classified together: a background task gathers the texts of
concurrent requests (up to ``max_batch`` texts or ``max_wait_ms``) and runs them through the fast
inference path in a worker thread, then hands each request its own slice, in order.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, Field

from textlora.errors import UserError


# Request and response bodies (module level, so that FastAPI can resolve the annotations).
class ClassifyRequest(BaseModel):
    texts: list[str] = Field(min_length=1, description="texts to classify, at most the server's --max-batch")
    pairs: list[str] | None = Field(default=None, description="sentence-pair runs only: the second text of each pair, one per text")


class Prediction(BaseModel):
    label: int  # the most probable class
    label_name: str
    probabilities: dict[str, float]  # softmax over classes; for a multi-label model, one sigmoid a class
    labels: list[int] | None = None  # multi-label models: every class at or above the threshold
    label_names: list[str] | None = None


class ClassifyResponse(BaseModel):
    predictions: list[Prediction]


class Batcher:
    """Collects texts from concurrent requests into batches for one model call."""

    def __init__(self, classify, max_batch: int, max_wait_ms: float):
        self.classify, self.max_batch, self.max_wait = classify, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue | None = None

    async def submit(self, texts: list[str]):
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def run(self) -> None:
        self.queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            n, deadline = len(items[0][0]), loop.time() + self.max_wait
            while n < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:  # what asyncio.wait_for raises (asyncio.TimeoutError is its alias since 3.11)
                    break
                n += len(items[-1][0])
            texts = [t for ts, _ in items for t in ts]
            try:
                probs = await loop.run_in_executor(None, self.classify, texts)
            except Exception as e:  # the requests get the error; the service goes on
                for _, fut in items:
                    fut.set_exception(e)
                continue
            start = 0
            for ts, fut in items:
                fut.set_result(probs[start : start + len(ts)])
                start += len(ts)


API_KEY_ENV = "TEXTLORA_API_KEY"


class _Guard:
    """ASGI middleware in front of the app: a bearer token on every ``/v1/*`` call (when a key is set),
    and a cap on the request body, checked before the body is parsed: by its Content-Length, and while
    it arrives for a chunked body (which is then handed on from memory)."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body = app, max_body_bytes
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key and scope["path"].startswith("/v1/"):
            auth = headers.get(b"authorization", b"")
            token = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self.key):  # constant time
                return await _refuse(send, 401, "this server needs an API token: send 'Authorization: Bearer TOKEN'", [(b"www-authenticate", b"Bearer")])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await _refuse(send, 413, f"the request body is {int(length)} bytes; the limit is {self.max_body}")
        if scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        body, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body.append(message.get("body", b""))
            more = message.get("more_body", False)
            if sum(map(len, body)) > self.max_body:
                return await _refuse(send, 413, f"the request body is over the limit of {self.max_body} bytes")
        whole, handed = b"".join(body), False

        async def replay():
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send, status: int, detail: str, headers: list | None = None) -> None:
    payload = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": payload})


def default_max_body(max_batch: int, max_chars: int) -> int:
    """Room for a full request within the limits: max_batch texts and their pairs of max_chars
    characters, 4 bytes a character, plus 64 KiB of JSON."""
    return 2 * max_batch * max_chars * 4 + 65_536


def _model_info(opened, clf, max_batch: int, max_chars: int, max_body_bytes: int | None) -> dict:
    """GET /v1/model: classes, base model, LoRA settings, parameters, dev metrics, limits, examples."""
    metrics = opened.metrics
    return {
        "label_names": clf.label_names,
        "base_model": clf.config.model.name,
        "max_length": clf.config.model.max_length,
        "lora": {"r": clf.config.lora.r, "alpha": clf.config.lora.alpha, "target_modules": clf.config.lora.target_modules, "bias": clf.config.lora.bias},
        "trainable_params": metrics.get("trainable_params"),
        "metrics": {k: (metrics.get("best") or {}).get(k) for k in ("accuracy", "macro_f1", "loss", "step")},
        "limits": {"max_batch": max_batch, "max_chars": max_chars, "max_body_bytes": max_body_bytes or default_max_body(max_batch, max_chars)},
        "examples": _examples(opened.path, clf.config, clf.label_names),
    }


def _request_texts(req: ClassifyRequest, clf, max_batch: int, max_chars: int) -> list:
    """The texts (or text pairs) of a request, cut to max_chars; 413 or 422 for a request outside the limits."""
    from fastapi import HTTPException

    if len(req.texts) > max_batch:
        raise HTTPException(413, f"{len(req.texts)} texts in one request; the limit is {max_batch}")
    empty = [i for i, t in enumerate(req.texts) if not t.strip()]
    if empty:
        raise HTTPException(422, f"texts[{empty[0]}] is empty")
    texts = [t[:max_chars] for t in req.texts]
    if bool(clf.config.data.text_pair_column) != (req.pairs is not None):
        raise HTTPException(
            422, "this model classifies sentence pairs: send 'pairs' beside 'texts'" if req.pairs is None else "'pairs' is only for sentence-pair models"
        )
    if req.pairs is None:
        return texts
    if len(req.pairs) != len(req.texts):
        raise HTTPException(422, f"{len(req.pairs)} pairs for {len(req.texts)} texts")
    empty = [i for i, t in enumerate(req.pairs) if not t.strip()]
    if empty:
        raise HTTPException(422, f"pairs[{empty[0]}] is empty")
    return [(t, p[:max_chars]) for t, p in zip(texts, req.pairs)]


def _predictions(probs, clf) -> list[dict]:
    """One Prediction a row: the top class, every class's probability, and for multi-label runs the chosen set."""
    from textlora.runtime import chosen

    out = []
    for p, chosen_k in zip(probs, chosen(probs, clf.config)):
        k = int(p.argmax())
        row = {"label": k, "label_name": clf.label_names[k], "probabilities": {n: float(v) for n, v in zip(clf.label_names, p)}}
        if clf.config.data.multi_label:
            row |= {"labels": chosen_k, "label_names": [clf.label_names[j] for j in chosen_k]}
        out.append(row)
    return out


def _examples(run: Path, config, label_names: list[str], per_class: int = 1) -> list[str]:
    """A few texts from the run's dev split (one a class) for the page's example buttons."""
    import pandas as pd

    dev = run / "dev.csv"
    if not dev.is_file():
        return []
    df = pd.read_csv(dev)
    col, lab = config.data.text_column, config.data.label_column
    if col not in df or lab not in df or config.data.text_pair_column:  # the page has one text box: no pair examples
        return []
    picks = df.groupby(lab, sort=True).head(per_class)
    return [str(t)[:300] for t in picks[col].tolist()][: 2 * len(label_names)]


def create_app(
    model, max_batch: int = 64, max_chars: int = 10_000, max_wait_ms: float = 5.0, api_key: str | None = None, max_body_bytes: int | None = None
):
    """The ASGI app for a run directory (or ONNX export).

    Args:
        model: run directory (a path, or a run already opened with textlora.run.open_run).
        max_batch: most texts in one request (more: 413) and in one internal batch.
        max_chars: texts are cut to this many characters (the tokenizer also truncates to model.max_length).
        max_wait_ms: how long the batcher waits for more requests before running a batch.
        api_key: when set, every /v1/* call needs 'Authorization: Bearer API_KEY' (else 401); /healthz and the page stay open.
        max_body_bytes: a larger request body gets 413 before it is parsed (default: default_max_body).
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    from textlora.prediction import load
    from textlora.run import as_run

    opened = as_run(model)  # a path, or the run serve() has opened already
    clf = load(opened)
    info = _model_info(opened, clf, max_batch, max_chars, max_body_bytes)
    batcher = Batcher(clf.predict_proba, max_batch, max_wait_ms)

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(title="textlora", version="1", lifespan=lifespan, description=f"Text classifier: {', '.join(clf.label_names)}")

    @app.post("/v1/classify", response_model=ClassifyResponse)
    async def classify(req: ClassifyRequest):
        probs = await batcher.submit(_request_texts(req, clf, max_batch, max_chars))
        return {"predictions": _predictions(probs, clf)}

    @app.get("/v1/model")
    async def model_info():
        return info

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    page = resources.files("textlora").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    return _Guard(app, api_key, max_body_bytes or default_max_body(max_batch, max_chars))


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 64,
    max_chars: int = 10_000,
    api_key: str | None = None,
    max_body_bytes: int | None = None,
) -> None:
    """Serve a run directory over HTTP: POST /v1/classify, GET /v1/model, GET /healthz, a web page at /.

    Args:
        model: run directory (or ONNX export).
        host: address to bind; loopback by default. Beyond loopback, set an API key.
        port: TCP port.
        max_batch: most texts per request (more get 413) and per internal batch.
        max_chars: texts are cut to this many characters.
        api_key: a bearer token every /v1/* call must send (else 401); default: the environment variable
            TEXTLORA_API_KEY, which keeps it out of the shell history. Without one the API is open.
        max_body_bytes: a larger request body gets 413 before it is parsed (default: room for max_batch
            texts and pairs of max_chars characters).
    """
    import uvicorn

    from textlora.run import as_run

    run = as_run(model)
    if not 1 <= port <= 65535:
        raise UserError(f"--port {port}: expected 1..65535")
    if max_body_bytes is not None and max_body_bytes < 1:
        raise UserError(f"--max-body-bytes {max_body_bytes}: expected a positive number of bytes")
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    app = create_app(run, max_batch=max_batch, max_chars=max_chars, api_key=api_key, max_body_bytes=max_body_bytes)
    print(f"textlora serve: http://{host}:{port}/ (API docs at /docs)", flush=True)
    if api_key:
        print("textlora serve: /v1/* needs 'Authorization: Bearer TOKEN'", flush=True)
    elif host not in ("127.0.0.1", "localhost", "::1"):
        print(f"textlora serve: warning: {host} is not loopback and no API key is set ({API_KEY_ENV} or --api-key): anyone who reaches the port can use it", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
