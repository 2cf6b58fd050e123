"""Self-training: label unlabelled texts with a trained run, keep the confident ones, class-balanced.

The rows written here enter training only through ``data.extra_train``, so they never reach the
dev split; each carries its provenance (teacher run, confidence, source file and id).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from textlora.errors import UserError
from textlora.runtime import BATCH_SIZE


def select(probs: np.ndarray, min_confidence: float, max_per_class: int | None, balance: bool) -> np.ndarray:
    """Indices of the rows to keep, most confident first within each class, in input order.

    Args:
        probs: (N, K) class probabilities.
        min_confidence: a row is a candidate when its top probability is at least this.
        max_per_class: at most this many rows a predicted class (None: no cap).
        balance: every class keeps as many rows as the class with the fewest candidates
            (after the cap), so the pseudo-labels do not shift the class balance.
    """
    pred, conf = probs.argmax(axis=1), probs.max(axis=1)
    per_class = []
    for k in range(probs.shape[1]):
        idx = np.flatnonzero((pred == k) & (conf >= min_confidence))
        idx = idx[np.argsort(-conf[idx], kind="stable")]
        per_class.append(idx[:max_per_class] if max_per_class is not None else idx)
    if balance:
        quota = min(len(idx) for idx in per_class)
        per_class = [idx[:quota] for idx in per_class]
    return np.sort(np.concatenate(per_class))


def _spread(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"n": 0}
    q = np.percentile(values, [0, 10, 50, 90, 100])
    return {"n": int(len(values)), "min": float(q[0]), "p10": float(q[1]), "median": float(q[2]), "p90": float(q[3]), "max": float(q[4])}


def _write_chosen(path, data, text_column, chunk_rows, banned, chosen, names, pred, conf, provenance) -> None:
    """Pass 2: read ``data`` again and write the chosen rows (indices among the texts not excluded), in input order."""
    import pandas as pd

    from textlora.data import read_text_chunks, same_text

    wanted = set(chosen.tolist())
    k, header = 0, True  # k: index among the texts not excluded
    with open(path, "w", encoding="utf-8", newline="") as f:
        for frame in read_text_chunks(data, text_column, chunk_rows=chunk_rows):
            ids = frame.ids if frame.ids is not None else frame.rows
            rows = []
            for text, row_id in zip(frame.texts, ids):
                if same_text(text) in banned:
                    continue
                if k in wanted:
                    rows.append(
                        {"text": text, "label": names[pred[k]], "label_id": int(pred[k]), "confidence": round(float(conf[k]), 6), **provenance, "id": row_id}
                    )
                k += 1
            cols = ["text", "label", "label_id", "confidence", "teacher", "source", "id"]
            pd.DataFrame(rows, columns=cols).to_csv(f, header=header, index=False)
            header = False


def pseudolabel(
    model: str,
    data: str,
    output: str,
    text_column: str = "text",
    min_confidence: float = 0.9,
    max_per_class: int | None = None,
    balance: bool = False,
    exclude: list[str] | None = None,
    batch_size: int = BATCH_SIZE,
    overwrite: bool = False,
    chunk_rows: int = 20_000,
) -> Path:
    """Label the texts of ``data`` with a trained run and write the confident ones as training rows.

    Writes ``output`` (text, label: the class name, label_id, confidence, teacher, source, id) and a report
    ``OUTPUT.report.json`` (rows per class, the confidence spread, classes left with no rows).
    Use the output as ``data.extra_train``: it then trains, and never enters the dev split.

    Args:
        model: run directory of the teacher.
        data: unlabelled CSV/TSV/JSONL/Parquet file with a text column (labels, if any, are ignored).
        output: CSV to write.
        text_column: name of the text column in ``data``.
        min_confidence: keep rows whose top class probability is at least this.
        max_per_class: at most this many rows a class, the most confident first.
        balance: every class keeps as many rows as the class with the fewest.
        exclude: files whose texts must not be labelled (e.g. the eval sets: they are never trained on).
        batch_size: texts per forward pass.
        overwrite: replace an existing output.
        chunk_rows: rows read at a time: the texts are read twice (probabilities, then the chosen
            rows), so that memory stays flat at any input size.
    """
    from textlora.data import texts_in
    from textlora.fsutil import atomic_path, check_output
    from textlora.run import as_run

    if not 0 <= min_confidence <= 1:
        raise UserError(f"--min-confidence: expected a number in [0, 1], found {min_confidence}")
    if max_per_class is not None and max_per_class < 1:
        raise UserError(f"--max-per-class: expected an integer >= 1, found {max_per_class}")
    out = check_output(output, inputs=[data, *(exclude or [])], overwrite=overwrite, flag="--output")
    run = as_run(model)
    saved = run.config
    if saved.data.multi_label or saved.data.text_pair_column:
        raise UserError(
            f"--model {model}: pseudolabel takes single-text, single-label runs; this one is {'multi-label' if saved.data.multi_label else 'a sentence-pair run'}"
        )
    if chunk_rows < 1:
        raise UserError(f"--chunk-rows: expected an integer >= 1, found {chunk_rows}")
    banned = texts_in(exclude or [], text_column)
    probs, n_texts = _probabilities(run, data, text_column, chunk_rows, banned, batch_size)
    chosen = select(probs, min_confidence, max_per_class, balance)
    names = run.labels
    pred, conf = probs.argmax(axis=1), probs.max(axis=1)
    with atomic_path(out) as tmp:
        _write_chosen(tmp, data, text_column, chunk_rows, banned, chosen, names, pred, conf, {"teacher": str(model), "source": str(data)})
    settings = {"teacher": str(model), "data": str(data), "min_confidence": min_confidence, "max_per_class": max_per_class, "balance": balance}
    report = _report(settings, n_texts, names, pred, conf, chosen)
    with atomic_path(out.with_suffix(".report.json")) as tmp:  # beside the rows, named as filter names its report
        tmp.write_text(json.dumps(report, indent=2))
    for n in report["classes_with_no_rows"]:
        print(f"warning: class '{n}' got no pseudo-labels at min_confidence {min_confidence}", flush=True)
    per_class = ", ".join(f"{n} {c:,}" for n, c in report["per_class"].items())
    print(f"{len(chosen):,} of {len(probs):,} texts kept ({per_class})", flush=True)
    return out


def _probabilities(run, data: str, text_column: str, chunk_rows: int, banned: set, batch_size: int) -> tuple[np.ndarray, int]:
    """Pass 1, chunk by chunk: (the class probabilities of every text not excluded, texts read).
    N x K floats stay small at any N; the file's own problems show before any weights load."""
    from textlora.data import read_text_chunks, same_text
    from textlora.prediction import load

    chunks = read_text_chunks(data, text_column, chunk_rows=chunk_rows)
    first = next(chunks)
    clf = load(run, batch_size=batch_size, cached=True)
    probs, n_texts = [], 0
    for frame in itertools.chain([first], chunks):
        texts = [t for t in frame.texts if same_text(t) not in banned]
        n_texts += len(frame.texts)
        if texts:
            probs.append(clf.predict_proba(texts, progress=len(texts) > 2000))
    if not probs:
        raise UserError(f"{data}: every text is in an --exclude file; nothing to label")
    return np.concatenate(probs), n_texts


def _report(settings: dict, n_texts: int, names: list[str], pred: np.ndarray, conf: np.ndarray, chosen: np.ndarray) -> dict:
    """OUTPUT.report.json: rows per class, the confidence spread, classes left with no rows."""
    per_class = {n: int((pred[chosen] == k).sum()) for k, n in enumerate(names)}
    return {
        **{k: settings[k] for k in ("teacher", "data")},
        "texts": n_texts,
        "excluded": n_texts - len(pred),
        **{k: settings[k] for k in ("min_confidence", "max_per_class", "balance")},
        "rows_written": len(chosen),
        "per_class": per_class,
        "predicted_per_class": {n: int((pred == k).sum()) for k, n in enumerate(names)},
        "confidence_all": _spread(conf),
        "confidence_kept": {n: _spread(conf[chosen][pred[chosen] == k]) for k, n in enumerate(names)},
        "classes_with_no_rows": [n for n, c in per_class.items() if c == 0],
    }
