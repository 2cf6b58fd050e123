"""Filter synthetic rows: length and garbage, exact and near duplicates (within the synthetic rows and
against the real training rows), and classifier agreement (LAMBADA), with a report."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textlora.config import check

WORD = re.compile(r"\w+")


@dataclass
class FilterConfig:
    input: str | None = None  # generated rows (text, label: the class name[, provenance])
    output: str | None = None  # the kept rows (.csv or .parquet)
    real: str | None = None  # real training rows: duplicates of these are removed
    text_column: str = "text"  # the text column of `input`
    label_column: str = "label"  # the label column of `input`
    min_words: int = 8  # rows with fewer words are dropped
    max_words: int = 150  # rows with more words are dropped
    min_alpha: float = 0.6  # share of characters that are letters or spaces; less is garbage
    max_repeat: float = 0.3  # most frequent word's share of the words; more is a loop
    near_duplicate: float = 0.7  # Jaccard similarity of word 3-gram shingles at which a row is a near duplicate
    classifier: str | None = None  # run directory of a classifier trained on real rows (LAMBADA filter)
    min_confidence: float = 0.7  # keep rows whose predicted class is the prompt's class with at least this probability
    relabel: bool = False  # instead: take the classifier's label (its class name) when its confidence reaches min_confidence
    seed: int = 42  # seeds the MinHash permutations and the report's samples

    def __post_init__(self) -> None:
        check(self.input is not None, "input", "a file of generated rows", self.input)
        check(self.output is not None, "output", "a file to write", self.output)
        check(0 <= self.min_words <= self.max_words, "min_words/max_words", "0 <= min_words <= max_words", (self.min_words, self.max_words))
        check(0 < self.near_duplicate <= 1, "near_duplicate", "a number in (0, 1]", self.near_duplicate)
        check(0 <= self.min_confidence <= 1, "min_confidence", "a number in [0, 1]", self.min_confidence)


def normalize(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def is_garbage(text: str, min_alpha: float, max_repeat: float) -> bool:
    if not text.strip():
        return True
    alpha = sum(c.isalpha() or c.isspace() for c in text) / len(text)
    words = normalize(text).split()
    if not words:
        return True
    top = Counter(words).most_common(1)[0][1] / len(words)
    return alpha < min_alpha or (len(words) >= 10 and top > max_repeat)


def shingles(text: str, n: int = 3) -> set:
    w = normalize(text).split()
    return {" ".join(w[i : i + n]) for i in range(max(1, len(w) - n + 1))}


class MinHashIndex:
    """MinHash signatures with banded LSH: candidate near-duplicates in ~linear time, checked by exact Jaccard."""

    def __init__(self, num_perm: int = 64, bands: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**61 - 1, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, 2**61 - 1, num_perm, dtype=np.uint64)
        self.bands, self.rows = bands, num_perm // bands
        self.buckets: dict = {}
        self.sets: list[set] = []

    def _signature(self, s: set) -> np.ndarray:
        # a stable hash (Python's str hash changes per process), so that filtering is reproducible
        h = np.array([int.from_bytes(hashlib.blake2b(x.encode(), digest_size=6).digest(), "little") for x in s], dtype=np.uint64)
        return ((np.outer(h, self.a) + self.b) % np.uint64(2**61 - 1)).min(axis=0)

    def query_add(self, s: set, threshold: float, add: bool = True) -> bool:
        """True if a similar set (Jaccard >= threshold) is already indexed; else (optionally) index ``s``."""
        sig = self._signature(s)
        keys = [(i, sig[i * self.rows : (i + 1) * self.rows].tobytes()) for i in range(self.bands)]
        for key in keys:
            for j in self.buckets.get(key, ()):
                other = self.sets[j]
                if len(s & other) / max(len(s | other), 1) >= threshold:
                    return True
        if add:
            self.sets.append(s)
            for key in keys:
                self.buckets.setdefault(key, []).append(len(self.sets) - 1)
        return False


def distinct_n(texts: list[str], n: int) -> float:
    grams, total = set(), 0
    for t in texts:
        w = normalize(t).split()
        g = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
        grams.update(g)
        total += len(g)
    return len(grams) / max(total, 1)


def self_bleu(texts: list[str], sample: int = 100, seed: int = 0) -> float:
    """Mean BLEU-2 (uniform 1-2-gram weights, brevity penalty) of sampled rows against the others: higher = less diverse."""
    rng = random.Random(seed)
    pool = [normalize(t).split() for t in texts]
    pool = [p for p in pool if len(p) >= 2]
    if len(pool) < 2:
        return 0.0
    hyps = rng.sample(range(len(pool)), min(sample, len(pool)))
    refs_all = rng.sample(range(len(pool)), min(200, len(pool)))
    scores = []
    for h in hyps:
        hyp = pool[h]
        refs = [pool[r] for r in refs_all if r != h]
        logp = 0.0
        for n in (1, 2):
            counts = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
            best = Counter()
            for ref in refs:
                rc = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
                for g in counts:
                    best[g] = max(best[g], rc[g])
            clipped = sum(min(c, best[g]) for g, c in counts.items())
            logp += 0.5 * np.log(max(clipped, 1e-9) / max(sum(counts.values()), 1))
        closest = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        bp = 1.0 if len(hyp) > closest else np.exp(1 - closest / max(len(hyp), 1))
        scores.append(bp * np.exp(logp))
    return float(np.mean(scores))


def filter_rows(config: FilterConfig, overwrite: bool = False) -> Path:
    """Filter a generated file and write the kept rows plus ``OUTPUT.report.json`` and ``OUTPUT.report.txt``.

    Labels are class names (as ``generate`` writes them); the classifier filter compares its
    predicted class name with each row's, so the prompt file's class order never matters.

    Args:
        config: the filter settings (``FilterConfig``: input, output, which checks run).
        overwrite: replace an existing output.
    """
    from textlora.data import read_table, read_texts
    from textlora.fsutil import atomic_path, check_output

    out = check_output(config.output, inputs=[config.input, config.real], overwrite=overwrite, flag="output")
    df = read_table(config.input)  # read once: the kept rows are written with every column they came with
    frame = read_texts(config.input, config.text_column, config.label_column, table=df)
    labels = np.array([str(v) for v in frame.labels], dtype=object)
    classes = list(dict.fromkeys(labels))  # in file order: generate writes the rows class by class
    keep = np.ones(len(df), dtype=bool)
    steps = {}

    def record(name: str, mask: np.ndarray) -> None:
        removed = keep & ~mask
        steps[name] = {c: int(removed[labels == c].sum()) for c in classes}
        keep[:] = keep & mask

    words = np.array([len(t.split()) for t in frame.texts])
    record("length", (words >= config.min_words) & (words <= config.max_words))
    record("garbage", np.array([not is_garbage(t, config.min_alpha, config.max_repeat) for t in frame.texts]))
    real_texts = read_texts(config.real, config.text_column, None, require_labels=False).texts if config.real else []
    record("exact_duplicate", _exact_new(frame.texts, real_texts, keep))
    record("near_duplicate", _near_new(frame.texts, real_texts, keep, config))
    if config.classifier:
        agree, labels_out = _classifier_check(config, frame.texts, labels, keep)
        record("classifier_relabel" if config.relabel else "classifier_agreement", agree)
        df[config.label_column] = labels_out
        df["relabelled"] = labels_out != labels
    kept = df[keep]
    with atomic_path(out) as tmp:
        kept.to_csv(tmp, index=False) if out.suffix.lower() != ".parquet" else kept.to_parquet(tmp, index=False)
    report = _report(config, out, df, kept, labels, classes, steps)
    out.with_suffix(".report.json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".report.txt").write_text(format_report(report))
    print(format_report(report))
    return out


def _exact_new(texts: list[str], real_texts: list[str], keep: np.ndarray) -> np.ndarray:
    """False for a row whose normalised text is a real row's or an earlier kept row's."""
    real_norm = {normalize(t) for t in real_texts}
    seen, exact = set(), np.ones(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        n = normalize(t)
        exact[i] = n not in real_norm and n not in seen
        if keep[i] and exact[i]:
            seen.add(n)
    return exact


def _near_new(texts: list[str], real_texts: list[str], keep: np.ndarray, config: FilterConfig) -> np.ndarray:
    """False for a kept row whose 3-gram Jaccard with a real row or an earlier kept row reaches the threshold."""
    index = MinHashIndex(seed=config.seed)
    for t in real_texts:
        index.query_add(shingles(t), 1.1)  # index the real rows (threshold > 1: never a match while adding)
    near = np.ones(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        if keep[i]:
            near[i] = not index.query_add(shingles(t), config.near_duplicate)
    return near


def _classifier_check(config: FilterConfig, texts: list[str], labels: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept by the classifier, labels after relabelling): predicted class names against the rows' names."""
    from textlora.errors import UserError
    from textlora.prediction import load

    clf = load(config.classifier)
    unknown = sorted(set(labels) - set(clf.label_names))
    if unknown:
        raise UserError(f"{config.input}: label '{unknown[0]}' is not a class of --classifier {config.classifier} ({', '.join(clf.label_names)})")
    idx = np.flatnonzero(keep)
    probs = clf.predict_proba([texts[i] for i in idx], progress=True)
    pred = np.array([clf.label_names[k] for k in probs.argmax(1)], dtype=object)
    conf = probs.max(1)
    agree = np.ones(len(texts), dtype=bool)
    labels_out = labels.copy()
    if config.relabel:
        agree[idx] = conf >= config.min_confidence
        labels_out[idx] = pred
    else:
        agree[idx] = (pred == labels[idx]) & (conf >= config.min_confidence)
    return agree, labels_out


def _report(config: FilterConfig, out: Path, df, kept, labels: np.ndarray, classes: list[str], steps: dict) -> dict:
    texts_kept = kept[config.text_column].astype(str).tolist()
    kept_labels = kept[config.label_column].astype(str)
    rng = random.Random(config.seed)
    rows_out = {c: int((kept_labels == c).sum()) for c in classes}
    return {
        "input": config.input,
        "output": str(out),
        "rows_in": int(len(df)),
        "rows_out": int(len(kept)),
        "rows_in_per_class": {c: int((labels == c).sum()) for c in classes},
        "rows_out_per_class": rows_out,
        "classes_with_no_rows": [c for c, n in rows_out.items() if n == 0],
        "removed_by_filter_per_class": steps,
        "diversity": {"distinct_1": distinct_n(texts_kept, 1), "distinct_2": distinct_n(texts_kept, 2), "self_bleu_2": self_bleu(texts_kept, seed=config.seed)},
        "samples": {c: rng.sample(kept[kept_labels == c][config.text_column].tolist(), min(5, rows_out[c])) for c in classes},
        "settings": dict(config.__dict__),
        "label_names": classes,
    }


def format_report(r: dict) -> str:
    lines = [f"{r['rows_in']} rows in, {r['rows_out']} kept ({r['output']})", "removed, by filter and class:"]
    for step, per in r["removed_by_filter_per_class"].items():
        lines.append(f"  {step:<22} " + "  ".join(f"{c}: {n}" for c, n in per.items()))
    lines.append("kept per class: " + "  ".join(f"{c}: {n}" for c, n in r["rows_out_per_class"].items()))
    d = r["diversity"]
    lines.append(f"diversity: distinct-1 {d['distinct_1']:.3f}, distinct-2 {d['distinct_2']:.3f}, self-BLEU-2 {d['self_bleu_2']:.3f}")
    for c, samples in r["samples"].items():
        lines.append(f"samples of class {c}:")
        lines += [f"  - {s[:200]}" for s in samples]
    return "\n".join(lines) + "\n"
