"""Classification metrics, computed as scikit-learn computes them (the tests cross-check them).

Single-label: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.
Multi-label: subset accuracy, micro- and macro-F1 and per-class scores, a class counting as
predicted when its sigmoid probability reaches ``runtime.THRESHOLD``.
"""

from __future__ import annotations

import numpy as np

from textlora.runtime import THRESHOLD, sigmoid


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


def predicted(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """The decisions of a model's logits: the argmax class of each row, or for a multi-label run a
    (rows, classes) boolean matrix of the classes whose sigmoid reaches THRESHOLD."""
    return sigmoid(logits) >= THRESHOLD if multi_label else logits.argmax(axis=1)


def metrics_from_logits(y_true: np.ndarray, logits: np.ndarray, label_names: list[str]) -> dict:
    """Metrics of a model's logits for single-label truths (a vector of class indices) or
    multi-label ones (a 0/1 matrix), from the decisions :func:`predicted` makes."""
    multi = np.asarray(y_true).ndim == 2
    pred = predicted(logits, multi)
    return compute_multilabel_metrics(y_true, pred, label_names) if multi else compute_metrics(y_true, pred, label_names)
