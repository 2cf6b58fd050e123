"""Metrics (accuracy, macro-F1, per-class precision/recall/F1), the confusion matrix, and the evaluate verb."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from textlora.errors import UserError


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, and the confusion matrix (rows = true).

    Macro-F1 is the unweighted mean of the per-class F1 over the classes that occur in ``y_true``
    or ``y_pred``, as scikit-learn's ``f1_score(average="macro")`` computes it (a class that is
    predicted but never true counts with F1 0; a class absent from both does not count).
    """
    k = len(label_names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = (support > 0) | (predicted > 0)  # macro-F1 over the classes in y_true or y_pred (scikit-learn's rule)
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n": int(cm.sum()),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": cm.tolist(),
        "label_names": list(label_names),
    }


THRESHOLD = 0.5  # multi-label: a class is predicted when its sigmoid probability reaches this


def compute_multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """Multi-label metrics from (rows, classes) 0/1 matrices, as scikit-learn computes them.

    ``accuracy`` is subset accuracy (the predicted set equals the true set); ``micro_f1`` pools
    every (row, class) decision; ``macro_f1`` is the unweighted mean of the per-class F1 over all
    classes (scikit-learn's ``f1_score(average="macro")`` on indicator matrices, zero_division=0).
    """
    t, p = np.asarray(y_true) > 0.5, np.asarray(y_pred) > 0.5
    tp, fp, fn = (t & p).sum(0).astype(float), (~t & p).sum(0).astype(float), (t & ~p).sum(0).astype(float)

    def f1(tp, fp, fn):
        return np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)

    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    per_f1 = f1(tp, fp, fn)
    return {
        "accuracy": float((t == p).all(axis=1).mean()) if len(t) else 0.0,
        "micro_f1": float(f1(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))[0]),
        "macro_f1": float(per_f1.mean()),
        "n": int(len(t)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(per_f1[i]), "support": int(t[:, i].sum())}
            for i, name in enumerate(label_names)
        },
        "label_names": list(label_names),
        "threshold": THRESHOLD,
    }


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def metrics_from_logits(y_true: np.ndarray, logits: np.ndarray, label_names: list[str]) -> dict:
    """Metrics of a model's logits: argmax for single-label truths (a vector of class indices),
    sigmoid >= THRESHOLD for multi-label ones (a 0/1 matrix)."""
    if np.asarray(y_true).ndim == 2:
        return compute_multilabel_metrics(y_true, sigmoid(logits) >= THRESHOLD, label_names)
    return compute_metrics(y_true, logits.argmax(axis=1), label_names)


def plot_confusion(metrics: dict, path) -> None:
    """Save the confusion matrix as a PNG (to a path or a binary file object), counts in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics["confusion_matrix"])
    names = metrics["label_names"]
    size = max(4.0, 0.6 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > threshold else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def format_metrics(metrics: dict) -> str:
    multi = "micro_f1" in metrics
    lines = [
        f"accuracy  {metrics['accuracy']:.4f}" + ("   (subset accuracy: every label of a row right)" if multi else ""),
        *([f"micro-F1  {metrics['micro_f1']:.4f}"] if multi else []),
        f"macro-F1  {metrics['macro_f1']:.4f}   (n={metrics['n']})",
        "",
        f"{'class':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}",
    ]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<20} {m['precision']:>9.4f} {m['recall']:>9.4f} {m['f1']:>9.4f} {m['support']:>8}")
    return "\n".join(lines)


def evaluate(
    model: str,
    data: str | list[str],
    output_dir: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = 32,
    overwrite: bool = False,
    pair_column: str | None = None,
) -> dict:
    """Metrics of a trained run on one or more labelled files (e.g. in-domain dev and a target sample).

    Args:
        model: run directory written by ``textlora train``.
        data: labelled CSV/TSV/JSONL/Parquet file(s); labels are class indices or label names.
        output_dir: if given, write metrics.json, confusion_matrix.json and confusion_matrix.png there
            (with several files: metrics.json maps each file to its metrics, and the confusion
            matrices are named after each file's stem).
        text_column: text column (default: the one the model was trained with).
        label_column: label column (default: the one the model was trained with).
        pair_column: second text column of a sentence-pair run (default: the one it was trained with).
        batch_size: texts per forward pass.
        overwrite: replace existing files in ``output_dir``.

    Returns:
        The metrics for a single file; for several, ``{file: metrics}``.
    """
    from textlora.data import encode_labels, read_options, read_texts
    from textlora.fsutil import atomic_path
    from textlora.models import read_run
    from textlora.predict import load

    files = [data] if isinstance(data, str) else list(data)
    if not files:
        raise UserError("--data: no file given")
    stems = [""] if len(files) == 1 else [f".{Path(f).stem}" for f in files]
    if len(set(stems)) != len(stems):
        raise UserError(f"--data: two files share a name ({', '.join(files)}); their outputs would collide")
    names = ["metrics.json"] + [f"confusion_matrix{s}.{ext}" for s in stems for ext in ("json", "png")]
    if output_dir is not None:
        out = Path(output_dir)
        if out.exists() and not out.is_dir():
            raise UserError(f"--output-dir {out}: exists and is not a directory")
        if not out.parent.is_dir():
            raise UserError(f"--output-dir {out}: parent directory {out.parent} does not exist")
        clash = [n for n in names if (out / n).exists()]
        if clash and not overwrite:
            raise UserError(f"--output-dir {out}: {clash[0]} already exists; pass --overwrite to replace it")
    config, label_names = read_run(model)  # check every input before loading any weights
    opts = {**read_options(config.data), "pair_column": pair_column or config.data.text_pair_column}
    frames = [read_texts(f, text_column or config.data.text_column, label_column or config.data.label_column, **opts) for f in files]
    truths = [encode_labels(frame, label_names) for frame in frames]
    clf = load(model, batch_size=batch_size)
    results = {}
    for f, frame, y_true in zip(files, frames, truths):
        logits = clf.logits(frame.texts, progress=len(frame.texts) > 2000)
        results[f] = {**metrics_from_logits(y_true, logits, clf.label_names), "data": str(f)}
    if output_dir is not None:
        out.mkdir(exist_ok=True)
        with atomic_path(out / "metrics.json") as tmp:
            tmp.write_text(json.dumps(results[files[0]] if len(files) == 1 else results, indent=2))
        for stem, m in zip(stems, results.values()):
            if "confusion_matrix" not in m:  # multi-label: per-class scores only
                continue
            with atomic_path(out / f"confusion_matrix{stem}.json") as tmp:
                tmp.write_text(json.dumps({"label_names": m["label_names"], "matrix": m["confusion_matrix"]}, indent=2))
            with atomic_path(out / f"confusion_matrix{stem}.png") as tmp:
                plot_confusion(m, tmp)
    return results[files[0]] if len(files) == 1 else results
