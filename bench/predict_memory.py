"""Peak memory of `textlora predict` against input size: streamed (chunks) and whole-file, in one run.

    python bench/predict_memory.py --rows 8000 80000 800000 [--model RUN]

Each measurement is one `textlora predict` process; its peak RSS is the kernel's (getrusage of the
finished child). The input is N rows (id, text) of ~40-word texts in the tiny model's vocabulary (about AG News length). The
whole-file figure is the same code with `--chunk-rows` above N (what predict did before streaming).
Without `--model` a tiny BERT run is trained first (the test suite's helpers: 2 layers, 16 wide), so
that 800k rows take minutes; the memory measured is then the data path's (reading, tokenizing,
holding texts and outputs), which is what streaming changes. Results: bench/results/predict_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / "runs" / "predict-memory"
RESULTS = ROOT / "bench" / "results" / "predict_memory.json"


def tiny_run() -> Path:
    from tests.conftest import make_texts, pretrain_tiny_bert, write_config

    from textlora.cli import main

    run = WORK / "tiny-run"
    if (run / "textlora.json").is_file():
        return run
    WORK.mkdir(parents=True, exist_ok=True)
    model = pretrain_tiny_bert(WORK / "tiny-bert")
    make_texts(40, seed=1).to_csv(WORK / "train.csv", index=False)
    cfg = write_config(WORK / "c.yaml", model, WORK / "train.csv", run)  # max_length 32: the tiny BERT has 64 positions
    assert main(["train", "--config", str(cfg), "--overwrite"]) == 0
    return run


def make_input(n: int) -> Path:
    import pandas as pd

    path = WORK / f"texts-{n}.csv"
    if not path.is_file():
        from tests.conftest import make_texts

        # texts in the tiny model's vocabulary, ~40 words each (AG News length): four test rows a text
        base = make_texts(1000, seed=5)["text"]
        texts = pd.Series([" ".join(base[(4 * i + j) % len(base)] for j in range(4)) for i in range(len(base))])
        reps = -(-n // len(texts))
        df = pd.DataFrame({"id": range(n), "text": pd.concat([texts] * reps, ignore_index=True)[:n]})
        df.to_csv(path, index=False)
    return path


PEAK = "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); sys.exit(r.returncode) if r.returncode else print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"


def measure(model: Path, data: Path, chunk_rows: int) -> dict:
    """One predict process's peak RSS: a fresh wrapper process reports the maxrss of its only child."""
    out = WORK / "pred.csv"
    t0 = time.perf_counter()
    argv = [
        sys.executable,
        "-m",
        "textlora",
        "predict",
        "--model",
        str(model),
        "--data",
        str(data),
        "--output",
        str(out),
        "--overwrite",
        "--chunk-rows",
        str(chunk_rows),
    ]
    kib = int(subprocess.run([sys.executable, "-c", PEAK, *argv], check=True, capture_output=True, text=True).stdout.strip())
    return {"peak_rss_mib": round(kib / 1024, 1), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", type=int, default=[8000, 80000, 800000])
    ap.add_argument("--model", help="a run directory (default: a tiny run trained here)")
    ap.add_argument("--chunk-rows", type=int, default=20_000)
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else tiny_run()
    results = []
    for n in sorted(args.rows):
        data = make_input(n)
        for mode, chunk in (("streamed", args.chunk_rows), ("whole file", n + 1)):
            results.append({"rows": n, "mode": mode, **measure(model, data, chunk)})
            print(json.dumps(results[-1]), flush=True)
    RESULTS.write_text(json.dumps({"model": str(model), "chunk_rows": args.chunk_rows, "results": results}, indent=2))


if __name__ == "__main__":
    main()
