"""Self-training: label unlabelled texts with a trained run, keep the confident ones, class-balanced.

The rows written here enter training only through ``data.extra_train``, so they never reach the
dev split; each carries its provenance (teacher run, confidence, source file and id).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from textlora.errors import UserError


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


def pseudolabel(
    model: str,
    data: str,
    output: str,
    text_column: str = "text",
    min_confidence: float = 0.9,
    max_per_class: int | None = None,
    balance: bool = False,
    exclude: list[str] | None = None,
    batch_size: int = 32,
    overwrite: bool = False,
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
    """
    import pandas as pd

    from textlora.data import read_texts, same_text, texts_in
    from textlora.fsutil import atomic_path, check_output_path
    from textlora.predict import load
    from textlora.run import open_run

    if not 0 <= min_confidence <= 1:
        raise UserError(f"--min-confidence: expected a number in [0, 1], found {min_confidence}")
    if max_per_class is not None and max_per_class < 1:
        raise UserError(f"--max-per-class: expected an integer >= 1, found {max_per_class}")
    out = check_output_path(output, inputs=[data, *(exclude or [])], overwrite=overwrite, flag="--output")
    run = open_run(model)
    saved = run.config
    if saved.data.multi_label or saved.data.text_pair_column:
        raise UserError(
            f"--model {model}: pseudolabel takes single-text, single-label runs; this one is {'multi-label' if saved.data.multi_label else 'a sentence-pair run'}"
        )
    frame = read_texts(data, text_column, None, require_labels=False)
    banned = texts_in(exclude or [], text_column)
    keep_rows = [i for i, t in enumerate(frame.texts) if same_text(t) not in banned]
    if not keep_rows:
        raise UserError(f"{data}: every text is in an --exclude file; nothing to label")
    texts = [frame.texts[i] for i in keep_rows]
    clf = load(run, batch_size=batch_size)
    probs = clf.predict_proba(texts, progress=True)
    chosen = select(probs, min_confidence, max_per_class, balance)
    names = clf.label_names
    pred, conf = probs.argmax(axis=1), probs.max(axis=1)
    ids = frame.ids if frame.ids is not None else frame.rows
    df = pd.DataFrame(
        {
            "text": [texts[i] for i in chosen],
            "label": [names[pred[i]] for i in chosen],
            "label_id": pred[chosen],
            "confidence": conf[chosen].round(6),
            "teacher": str(model),
            "source": str(data),
            "id": [ids[keep_rows[i]] for i in chosen],
        }
    )
    per_class = {n: int((pred[chosen] == k).sum()) for k, n in enumerate(names)}
    report = {
        "teacher": str(model),
        "data": str(data),
        "texts": len(frame.texts),
        "excluded": len(frame.texts) - len(texts),
        "min_confidence": min_confidence,
        "max_per_class": max_per_class,
        "balance": balance,
        "rows_written": len(df),
        "per_class": per_class,
        "predicted_per_class": {n: int((pred == k).sum()) for k, n in enumerate(names)},
        "confidence_all": _spread(conf),
        "confidence_kept": {n: _spread(conf[chosen][pred[chosen] == k]) for k, n in enumerate(names)},
        "classes_with_no_rows": [n for n, c in per_class.items() if c == 0],
    }
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out.with_name(out.name + ".report.json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    for n in report["classes_with_no_rows"]:
        print(f"warning: class '{n}' got no pseudo-labels at min_confidence {min_confidence}", flush=True)
    print(f"{len(df):,} of {len(texts):,} texts kept ({', '.join(f'{n} {c:,}' for n, c in per_class.items())})", flush=True)
    return out
