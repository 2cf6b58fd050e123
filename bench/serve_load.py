"""A bounded load test of `textlora serve` on loopback: N requests at concurrency C, one text each.

    python bench/serve_load.py --model runs/agnews-minilm            # 2,000 requests at concurrency 16
    python bench/serve_load.py --model RUN --requests 500 --concurrency 8

Starts the real server in a subprocess on a free 127.0.0.1 port, sends the requests (texts from
RUN/dev.csv), stops it, prints requests/s, latency p50/p90/p99 and the error count, and writes
bench/results/serve_load.json. Traffic goes to loopback only, and the run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "runs" / "agnews-minilm"))
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--time-limit", type=float, default=600, help="stop sending after this many seconds")
    a = p.parse_args()
    texts = pd.read_csv(Path(a.model) / "dev.csv").iloc[:, 0].astype(str).tolist()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "textlora", "serve", "--model", a.model, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        start = time.perf_counter()

        def one(i: int):
            if time.perf_counter() - start > a.time_limit:
                return None, "skipped"
            body = json.dumps({"texts": [texts[i % len(texts)]]}).encode()
            req = urllib.request.Request(base + "/v1/classify", data=body, headers={"Content-Type": "application/json"})
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    ok = r.status == 200 and len(json.loads(r.read())["predictions"]) == 1
            except OSError as e:
                return time.perf_counter() - t, f"{type(e).__name__}"
            return time.perf_counter() - t, None if ok else "bad answer"

        with ThreadPoolExecutor(a.concurrency) as ex:
            results = list(ex.map(one, range(a.requests)))
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    lat = np.array([r[0] for r in results if r[1] is None]) * 1000
    errors = sum(r[1] is not None for r in results)
    out = {
        "requests": a.requests,
        "concurrency": a.concurrency,
        "errors": int(errors),
        "seconds": wall,
        "requests_per_s": len(lat) / wall,
        "latency_ms": {q: float(np.percentile(lat, int(q[1:]))) for q in ("p50", "p90", "p99")} if len(lat) else {},
    }
    print(json.dumps(out, indent=2))
    path = ROOT / "bench" / "results" / "serve_load.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
