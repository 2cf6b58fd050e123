"""The label check: do the generated rows' labels mean what the source rows' labels mean?

A bag-of-words probe (TF-IDF of words and word pairs, then logistic regression; seconds on a CPU)
trains on the source training split plus most of the generated rows, and is scored on the source
dev split and on the generated rows it did not see. Rows labelled as reliably as the source rows
are predicted about as well as dev; rows whose texts often contradict their labels are not, since
no model can learn labels that the texts do not carry. No target labels are used.

How far the held-out score falls below dev estimates the share of mislabelled rows. If a share
``e`` of the rows carries a wrong label (any other class, alike), a probe that is right on a share
``a`` of correctly labelled texts (its dev accuracy) agrees with ``a (1 - e) + (1 - a) e / (K - 1)``
of them for K classes, so ``e = (a - heldout) / (a - (1 - a) / (K - 1))``. The pipeline drops the
rows when ``e`` exceeds ``max_noise`` (``synthetic.check_max_noise``, 0.25), and the classifier
trains on the source rows alone. Measured (docs/experiments.md, "The label check"): AG News rows from
the main job's prompt file, which raised the target accuracy, came out at 2-4% mislabelled; DVD ->
Electronics rows from instruction prompts, which lowered it, at 29-40%.

The probe is deliberately simple and has no dependency beyond torch: it is a judge of the labels'
consistency, not a classifier to use.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

WORD = re.compile(r"\w+")
MIN_ROWS = 50  # fewer generated rows are too few to judge (a fifth of them are held out)


def features(text: str) -> list[str]:
    """Lower-cased words and adjacent word pairs."""
    words = WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class Probe:
    """TF-IDF (sublinear tf, smoothed idf, L2-normalised rows; features in >= ``min_df`` training
    texts) + multinomial logistic regression with an L2 penalty (sklearn's objective at ``C``),
    fitted by L-BFGS."""

    def __init__(self, C: float = 4.0, min_df: int = 2, max_iter: int = 500):
        self.C, self.min_df, self.max_iter = C, min_df, max_iter

    def _matrix(self, texts: list[str]):
        import torch

        rows, cols, vals = [], [], []
        for i, text in enumerate(texts):
            counts = Counter(f for f in features(text) if f in self.vocab)
            if not counts:
                continue
            idx = np.fromiter((self.vocab[f] for f in counts), dtype=np.int64, count=len(counts))
            w = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * self.idf[idx]
            rows.append(np.full(len(idx), i))
            cols.append(idx)
            vals.append(w / np.linalg.norm(w))
        rows, cols, vals = (np.concatenate(a) if a else np.empty(0) for a in (rows, cols, vals))
        index = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
        return torch.sparse_coo_tensor(index, torch.from_numpy(vals).float(), (len(texts), len(self.vocab)), check_invariants=False).coalesce()

    def fit(self, texts: list[str], labels: list[str]) -> Probe:
        import torch

        df = Counter(f for text in texts for f in set(features(text)))
        self.vocab = {f: k for k, f in enumerate(sorted(f for f, n in df.items() if n >= self.min_df))}
        n = len(texts)
        self.idf = np.array([math.log((1 + n) / (1 + df[f])) + 1.0 for f in self.vocab])
        self.classes = sorted(set(labels))
        y = torch.tensor([self.classes.index(v) for v in labels])
        X = self._matrix(texts)
        self.W = torch.zeros(len(self.vocab), len(self.classes), requires_grad=True)
        self.b = torch.zeros(len(self.classes), requires_grad=True)
        opt = torch.optim.LBFGS([self.W, self.b], max_iter=self.max_iter, line_search_fn="strong_wolfe")
        penalty = 1.0 / (2 * self.C * n)  # C * sum(loss) + |W|^2 / 2, divided by C * n

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(torch.sparse.mm(X, self.W) + self.b, y) + penalty * self.W.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return self

    def predict(self, texts: list[str]) -> list[str]:
        import torch

        with torch.no_grad():
            k = (torch.sparse.mm(self._matrix(texts), self.W) + self.b).argmax(1)
        return [self.classes[i] for i in k.tolist()]


def label_check(
    source: tuple[list[str], list[str]],
    dev: tuple[list[str], list[str]],
    rows: tuple[list[str], list[str]],
    max_noise: float,
    heldout: float = 0.2,
    seed: int = 0,
) -> dict:
    """Train the probe on the source rows plus ``1 - heldout`` of the generated rows (seeded, per
    class), score it on the dev rows and on the held-out generated rows, and estimate the share of
    mislabelled rows from the two (see the module's docstring).

    Each argument is ``(texts, label names)``. Returns the scores, the agreement per class on the
    held-out rows, the estimate ``noise`` and ``passed`` (``noise <= max_noise``); or ``skipped``
    with the reason, where the probe's dev accuracy is too near chance to judge anything.
    """
    texts, labels = rows
    rng = np.random.default_rng([seed, 11])
    out_idx = []
    for name in sorted(set(labels)):
        members = np.flatnonzero(np.array(labels) == name)
        out_idx += list(rng.permutation(members)[: int(round(len(members) * heldout))])
    return _judge(source, dev, rows, [sorted(out_idx)], max_noise)


def label_check_folds(
    source: tuple[list[str], list[str]],
    dev: tuple[list[str], list[str]],
    rows: tuple[list[str], list[str]],
    max_noise: float,
    folds: int = 5,
    seed: int = 0,
) -> dict:
    """:func:`label_check` with every row held out once: ``folds`` probes, each trained on the
    source rows plus the other folds. For a small sample (the pipeline's trial of ~200 rows), where
    a fifth of it would judge on too few rows; the dev accuracy is the folds' mean."""
    labels = rows[1]
    rng = np.random.default_rng([seed, 11])
    parts: list[list[int]] = [[] for _ in range(folds)]
    for name in sorted(set(labels)):  # each class dealt round the folds
        for j, i in enumerate(rng.permutation(np.flatnonzero(np.array(labels) == name))):
            parts[j % folds].append(int(i))
    return _judge(source, dev, rows, [sorted(p) for p in parts if p], max_noise)


def _judge(source, dev, rows, held_parts: list[list[int]], max_noise: float) -> dict:
    """Fit one probe per held-out part (on the source rows and the rows outside it); score dev and
    the held-out rows; estimate the share of mislabelled rows."""
    texts, labels = rows
    dev_scores, right, ho_labels = [], [], []
    for part in held_parts:
        out = set(part)
        keep = [i for i in range(len(texts)) if i not in out]
        probe = Probe().fit(source[0] + [texts[i] for i in keep], source[1] + [labels[i] for i in keep])
        dev_scores.append(float(np.mean(np.array(probe.predict(dev[0])) == np.array(dev[1]))))
        right += (np.array(probe.predict([texts[i] for i in part])) == np.array([labels[i] for i in part])).tolist()
        ho_labels += [labels[i] for i in part]
    dev_acc = float(np.mean(dev_scores))
    right, ho_labels = np.array(right), np.array(ho_labels)
    per_class = {name: round(float(right[ho_labels == name].mean()), 4) for name in sorted(set(ho_labels.tolist()))}
    agreement = float(right.mean())
    k = len(set(source[1]) | set(labels))
    scale = dev_acc - (1 - dev_acc) / (k - 1)  # agreement lost per unit of label noise
    result = {"dev": round(dev_acc, 4), "heldout": round(agreement, 4), "heldout_rows": len(ho_labels), "per_class": per_class, "max_noise": max_noise}
    if scale < 0.1:
        return {**result, "skipped": f"the probe's dev accuracy {dev_acc:.3f} is too near chance for {k} classes to judge the rows"}
    noise = min(max((dev_acc - agreement) / scale, 0.0), 1.0)
    return {**result, "noise": round(noise, 4), "passed": noise <= max_noise}
