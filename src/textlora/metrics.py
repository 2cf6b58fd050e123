"""Classification metrics, computed as scikit-learn computes them (the tests cross-check them).

Single-label: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.
Multi-label: subset accuracy, micro- and macro-F1 and per-class scores, a class counting as
predicted when its sigmoid probability reaches ``runtime.THRESHOLD``.

Both: the accuracy's standard error, with near-copy texts counted as one unit (:func:`accuracy_se`,
:func:`near_copy_groups`): a machine-written sample can hold templates that a classifier gets right
or wrong as a block, and counting them as independent rows understates how far the accuracy moves.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter

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


NEAR_COPY = 0.3  # TF-IDF cosine at which two texts count as near-copies (bench/target_clusters.py, docs/experiments.md)
GROUP_MAX_ROWS = 20_000  # near-copies are looked for up to here: the pairwise pass grows with rows squared
_WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern


def near_copy_groups(texts: list, threshold: float = NEAR_COPY) -> np.ndarray:
    """A group index per text: two texts are joined when the cosine of their TF-IDF vectors reaches
    ``threshold``, and the groups are the connected components (a text near no other is a group of one).

    The vectors are scikit-learn's ``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)``:
    lowercased words and word pairs, tf ``1 + ln(count)``, idf ``ln((1 + n) / (1 + df)) + 1``, unit
    length (the tests check the groups against scikit-learn's and scipy's). A pair of texts is read
    as one text joined by a space.
    """
    import torch

    n = len(texts)
    vocab: dict[str, int] = {}
    rows, cols, counts = [], [], []
    for i, text in enumerate(texts):
        words = _WORD.findall((text if isinstance(text, str) else " ".join(text)).lower())
        for term, c in Counter(words + [f"{a} {b}" for a, b in zip(words, words[1:])]).items():
            rows.append(i)
            cols.append(vocab.setdefault(term, len(vocab)))
            counts.append(c)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    df = np.bincount(cols, minlength=len(vocab))
    w = (1 + np.log(np.asarray(counts, dtype=np.float64))) * (np.log((1 + n) / (1 + df)) + 1)[cols]
    w /= np.sqrt(np.bincount(rows, weights=w**2, minlength=n))[rows]
    shared = df[cols] > 1  # a term of one text adds nothing to any pair's cosine (it counted in the length)
    rows, w = rows[shared], w[shared]
    terms, cols = np.unique(cols[shared], return_inverse=True)
    order = np.lexsort((cols, rows))  # CSR: by row, then by column
    rows, cols, w = rows[order], cols[order], w[order]
    starts = np.searchsorted(rows, np.arange(n + 1))

    def csr(a: int, b: int):  # texts a..b-1 as a sparse (b - a, terms) matrix
        s, e = starts[a], starts[b]
        index = (torch.from_numpy(starts[a : b + 1] - s), torch.from_numpy(cols[s:e]))
        return torch.sparse_csr_tensor(*index, torch.from_numpy(w[s:e]), (b - a, len(terms)), check_invariants=True)

    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        xt = csr(0, n).to_sparse_coo().t().to_sparse_csr()  # (terms, n)
        for a in range(0, n, 128):  # 128 texts a pass against all (a sparse product: 20,000 texts in ~20 s on 2 cores)
            near = (torch.sparse.mm(csr(a, min(n, a + 128)), xt).to_dense() >= threshold).numpy()
            for i, j in zip(*np.nonzero(near)):
                ri, rj = root(int(i) + a), root(int(j))
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([root(i) for i in range(n)], dtype=np.int64)
    return np.unique(roots, return_inverse=True)[1]


def accuracy_se(correct, groups: np.ndarray | None = None) -> float:
    """The standard error of an accuracy (the mean of ``correct``), each group of ``groups`` one unit.

    Cluster-robust: ``sqrt(k / (k - 1) * sum_g (sum of (correct - accuracy) over g)**2) / n`` over the
    k groups; with every row its own group (``groups=None``) this is the sample SE of a proportion,
    ``sqrt(p (1 - p) / (n - 1))``. NaN with fewer than two units.
    """
    v = np.asarray(correct, dtype=np.float64)
    g = np.arange(len(v)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    k = int(g.max()) + 1 if len(g) else 0
    if k < 2:
        return float("nan")
    sums = np.bincount(g, weights=v - v.mean(), minlength=k)
    return float(np.sqrt(k / (k - 1) * np.sum(sums**2)) / len(v))


def with_standard_error(metrics: dict, correct: np.ndarray, texts: list) -> dict:
    """``metrics`` plus ``accuracy_se`` and ``near_copies`` (groups of more than one text, the rows in
    them, the threshold); near-copies are looked for in files of up to GROUP_MAX_ROWS rows, and
    beyond that every row is its own unit (``near_copies`` is None)."""
    groups = near_copy_groups(texts) if len(texts) <= GROUP_MAX_ROWS else None
    near = None
    if groups is not None:
        sizes = np.bincount(groups)
        near = {"groups": int((sizes > 1).sum()), "rows": int(sizes[sizes > 1].sum()), "threshold": NEAR_COPY}
    return {**metrics, "accuracy_se": accuracy_se(correct, groups), "near_copies": near}
