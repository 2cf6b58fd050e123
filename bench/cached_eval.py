"""`textlora evaluate` of a top-k run with and without the prefix cache that its training left, in one run.

Scores the run on the given labelled files twice: once with the caches under ``$TEXTLORA_CACHE``
(the texts its training cached run through the top layers alone) and once with an empty cache folder
(the same unpacked models linked in, no prefix caches: every text through the whole model, as before). Prints each pass's seconds, the ratio, and whether
the two passes agree (accuracy per file), and appends them to bench/results/cached_eval.json with the CPU.

    python bench/cached_eval.py --model runs/agnews-mpnet-top3-src-s42 \\
        --data ../shared/data/agnews/test_labelled.csv ../shared/data/agnews/target_dev_labelled.csv \\
        --predict ../shared/data/agnews/target_unlabelled.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(model: str, files: list[str]) -> tuple[float, dict, int]:
    from textlora.evaluation import evaluate
    from textlora.prediction import Classifier

    scored = []
    real = Classifier.logits

    def counting(self, texts, progress=False):  # how many texts came from the cache
        out = real(self, texts, progress)
        scored.append(self.from_cache)
        return out

    Classifier.logits = counting
    try:
        t0 = time.perf_counter()
        results = evaluate(model, files)
        seconds = time.perf_counter() - t0
    finally:
        Classifier.logits = real
    results = {files[0]: results} if len(files) == 1 else results
    return seconds, {Path(f).name: round(m["accuracy"], 4) for f, m in results.items()}, scored[-1] if scored else 0


def cache_texts(model: str, path: str) -> tuple[float, int]:
    """Seconds to cache ``path``'s texts for ``model``'s frozen layers (as training with data.target_texts does)."""
    from textlora.data import read_texts
    from textlora.fsutil import cache_dir
    from textlora.prediction import Classifier
    from textlora.prefix import prefix_cache
    from textlora.runtime import encode_texts

    clf = Classifier(model, cached=True)
    _, split = clf.prefix_states()
    texts = read_texts(path, clf.config.data.text_column, None, require_labels=False).texts
    encoded = encode_texts(clf.tokenizer, texts, clf.max_length, clf.config.model.truncation)
    t0 = time.perf_counter()
    prefix_cache(clf.model, encoded, split, precision=clf.precision, device=clf.device, root=cache_dir() / "prefix", max_memory_gb=4.0)
    return time.perf_counter() - t0, len(texts)


def timed_predict(model: str, path: str, out: Path) -> float:
    from textlora.prediction import predict

    t0 = time.perf_counter()
    predict(model, data=path, output=str(out), overwrite=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a run trained with lora.layers")
    ap.add_argument("--data", nargs="+", required=True, help="labelled files")
    ap.add_argument("--predict", help="unlabelled texts to cache and predict (optional)")
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "cached_eval.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    import peft  # noqa: F401  (imports paid before either timed pass)
    import transformers  # noqa: F401
    from machine import append_result, cpu

    import textlora.evaluation  # noqa: F401
    import textlora.prediction  # noqa: F401
    from textlora.device import machine

    cached_s, cached_acc, hits = timed(args.model, args.data)
    work = Path(tempfile.mkdtemp())
    if args.predict:
        caching_s, n = cache_texts(args.model, args.predict)
        predict_cached_s = timed_predict(args.model, args.predict, work / "cached.csv")
    from textlora.fsutil import cache_dir

    real = cache_dir()
    with tempfile.TemporaryDirectory() as empty:
        for entry in real.iterdir():  # the unpacked models are linked, not unpacked again; only the prefix caches are missing
            if entry.name != "prefix":
                (Path(empty) / entry.name).symlink_to(entry)
        before = os.environ.get("TEXTLORA_CACHE")
        os.environ["TEXTLORA_CACHE"] = empty  # no cache to read: the whole model for every text
        try:
            whole_s, whole_acc, _ = timed(args.model, args.data)
            predict_whole_s = timed_predict(args.model, args.predict, work / "whole.csv") if args.predict else None
        finally:
            if before is None:
                os.environ.pop("TEXTLORA_CACHE")
            else:
                os.environ["TEXTLORA_CACHE"] = before
    print(f"with the prefix cache: {cached_s:.1f} s ({hits:,} texts read from it); whole model: {whole_s:.1f} s; ratio {whole_s / cached_s:.2f}x")
    print(f"accuracy with / without: {cached_acc} / {whole_acc}; {'the same' if cached_acc == whole_acc else 'DIFFERENT'}")
    extra = {}
    if args.predict:
        import pandas as pd

        same = float((pd.read_csv(work / "cached.csv")["Label"] == pd.read_csv(work / "whole.csv")["Label"]).mean())
        extra = {
            "predict_file": args.predict,
            "predict_texts": n,
            "caching_seconds": round(caching_s, 1),
            "predict_cached_seconds": round(predict_cached_s, 1),
            "predict_whole_seconds": round(predict_whole_s, 1),
            "labels_agree": same,
        }
        print(
            f"predict {n:,} texts: caching them {caching_s:.1f} s (once, in training), then predict {predict_cached_s:.1f} s; whole model {predict_whole_s:.1f} s; labels agree on {same:.2%}"
        )
    info = machine()
    entry = {
        "cpu": cpu(),
        "torch_capability": info["torch_capability"],
        "threads": info["threads"],
        "model": args.model,
        "files": args.data,
        "cached_seconds": round(cached_s, 1),
        "whole_seconds": round(whole_s, 1),
        "texts_from_cache": hits,
        "ratio": round(whole_s / cached_s, 2),
        "accuracy_cached": cached_acc,
        "accuracy_whole": whole_acc,
        **extra,
    }
    append_result(args.output, entry)


if __name__ == "__main__":
    main()
