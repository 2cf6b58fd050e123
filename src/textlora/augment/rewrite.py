"""Source-anchored rewriting: labelled source rows with their most source-specific words written
again by a causal LM adapted on the target texts (after CDA2, COLING 2025).

1. **What to mask.** Every word n-gram (n <= ``ngram``) gets a smoothed share of the source domain,
   ``P(source | g)`` from the share of source texts and of target texts that contain it (add-one on
   both), and a score ``1 - H(P)`` (binary entropy): an n-gram seen in one domain only scores near
   1, one common to both near 0. In each row, up to ``max_spans`` non-overlapping occurrences of
   n-grams with ``P(source | g) >= min_source_share``, found in at least ``min_count`` source texts,
   are masked, the highest scores first. An n-gram that tells the classes apart is never masked:
   its class distribution in the source rows (smoothed the same way) must keep at least
   ``1 - max_label_info`` of the entropy of a uniform one, so "boring" stays where "movie" goes
   (without it, a third of the masks on DVD reviews fell on sentiment words, filled at random).
   Rows are cut to their first ``max_words`` words.
2. **How to fill.** Left to right with the row's own prefix: the LM reads the text up to a mask,
   writes as many tokens as the masked words had, then reads the row's text up to the next mask
   (forced tokens in the same sampling loop as ``generate``: ``sampling.sample(forced=...)``), and
   so on; the words after the last mask are kept as they are. A causal LM conditioned on the left
   context is what the pipeline already adapts; infilling with the suffix in the prompt needs a
   model trained for it, which SmolLM2 is not, and continuing from the first mask alone loses the
   words that carry the label.
3. **What to keep.** The label comes from the source row, by name. A row is kept when a
   bag-of-words probe trained on the source rows still gives it its label (``label_filter``), and a
   probe trained to tell source texts from target texts calls it a target text (``domain_filter``).
   The probes are ``textlora.augment.check.Probe``.

Every written row carries its provenance: the source row it came from (``source_row``, its
0-based row in the source file), its original text, and the spans (``[{"masked": ..., "fill":
...}]``, JSON). A summary beside the output says how many rows each step kept.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from textlora.config import check
from textlora.errors import UserError

WORD = re.compile(r"\w+")
PROBE_TEXTS = 4000  # texts a side each probe trains on at most (seeded sample)


@dataclass
class RewriteConfig:
    model: str = "smollm2"  # the LM adapted on the target texts (a folder from `textlora adapt`), or an alias
    source: str | None = None  # labelled source rows (CSV: text, label): the rows to rewrite
    target: str | None = None  # unlabelled target texts (CSV): what "target-like" means
    target_text_column: str = "text"
    output: str | None = None  # .csv of the kept rows with their provenance
    rows_per_class: int = 200  # source rows of each class to rewrite (seeded draw; fewer when a class has fewer)
    ngram: int = 2  # longest n-gram (in words) that may be masked
    min_count: int = 3  # an n-gram is masked only when at least this many source texts contain it
    min_source_share: float = 0.8  # ... and its smoothed P(source | n-gram) reaches this
    max_label_info: float = 0.2  # ... and it tells the classes apart by at most this (1 - entropy / log K of its class distribution)
    max_spans: int = 12  # masked spans a row at most (4 kept no imdb row as target-like, 12 kept 12% of DVD rows)
    max_words: int = 64  # rows are cut to their first this many words (the LM reads up to the last mask)
    label_filter: bool = True  # keep a row only when a probe trained on the source rows gives it its label
    domain_filter: bool = True  # keep a row only when a source-vs-target probe calls it a target text
    batch_size: int = 64
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.0  # the row's own words are forced: a penalty would push the fills away from them
    seed: int = 42
    precision: str = "auto"
    fused: bool = True

    def __post_init__(self) -> None:
        check(self.source is not None, "source", "a CSV of labelled source rows (text, label)", self.source)
        check(self.target is not None, "target", "a CSV of unlabelled target texts", self.target)
        check(self.output is not None, "output", "a .csv file to write", self.output)
        check(type(self.rows_per_class) is int and self.rows_per_class >= 1, "rows_per_class", "an integer >= 1", self.rows_per_class)
        check(type(self.ngram) is int and self.ngram >= 1, "ngram", "an integer >= 1", self.ngram)
        check(type(self.max_spans) is int and self.max_spans >= 1, "max_spans", "an integer >= 1", self.max_spans)
        check(type(self.max_words) is int and self.max_words >= 2, "max_words", "an integer >= 2", self.max_words)
        check(0.5 < self.min_source_share <= 1, "min_source_share", "a number in (0.5, 1]", self.min_source_share)
        check(0 <= self.max_label_info <= 1, "max_label_info", "a number in [0, 1]", self.max_label_info)
        check(self.precision in ("auto", "bf16", "fp32"), "precision", "auto, bf16 or fp32", self.precision)


def ngrams(text: str, n_max: int) -> list[tuple[str, int, int]]:
    """``(n-gram, start char, end char)`` of every run of 1..n_max words, lower-cased."""
    words = [(m.group().lower(), m.start(), m.end()) for m in WORD.finditer(text)]
    out = []
    for n in range(1, n_max + 1):
        for i in range(len(words) - n + 1):
            out.append((" ".join(w for w, _, _ in words[i : i + n]), words[i][1], words[i + n - 1][2]))
    return out


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


class DomainWords:
    """The source share and score of each n-gram, from the share of texts of each domain holding
    it, and how much it tells the source rows' classes apart (``labels``: one per source text)."""

    def __init__(self, source: list[str], target: list[str], n_max: int, labels: list[str] | None = None):
        self.n_max = n_max
        grams = [{g for g, _, _ in ngrams(t, n_max)} for t in source]
        self.src = Counter(g for gs in grams for g in gs)
        self.tgt = Counter(g for t in target for g in {g for g, _, _ in ngrams(t, n_max)})
        self.n_src, self.n_tgt = len(source), len(target)
        self.classes = sorted(set(labels)) if labels else []
        self.by_class = [Counter(g for gs, y in zip(grams, labels) if y == c for g in gs) for c in self.classes] if labels else []
        self.class_sizes = [sum(1 for y in labels if y == c) for c in self.classes] if labels else []

    def label_info(self, g: str) -> float:
        """1 - entropy / log2(K) of P(class | g) over the source rows (class-balanced, add-one): 0 for a
        word spread evenly over the classes, 1 for one seen in a single class only."""
        if len(self.classes) < 2:
            return 0.0
        rates = np.array([(c[g] + 1) / (n + 2) for c, n in zip(self.by_class, self.class_sizes)])
        return 1.0 - _entropy(rates / rates.sum()) / math.log2(len(self.classes))

    def source_share(self, g: str) -> float:
        """Smoothed P(source | g) with the two domains weighted equally (add-one on the counts)."""
        s = (self.src[g] + 1) / (self.n_src + 2)
        t = (self.tgt[g] + 1) / (self.n_tgt + 2)
        return s / (s + t)

    def score(self, g: str) -> float:
        """1 - binary entropy of P(domain | g): 1 for an n-gram of one domain only, 0 for one shared evenly."""
        p = self.source_share(g)
        return 1.0 + p * math.log2(p) + (1 - p) * math.log2(1 - p)

    def spans(self, text: str, cfg: RewriteConfig) -> list[tuple[int, int]]:
        """The (start, end) chars to mask in ``text``: the best-scoring source n-gram occurrences, non-overlapping, in order."""
        found = []
        for g, a, b in ngrams(text, self.n_max):
            if self.src[g] >= cfg.min_count and self.source_share(g) >= cfg.min_source_share and self.label_info(g) <= cfg.max_label_info:
                found.append((self.score(g), -(b - a), a, b))
        chosen: list[tuple[int, int]] = []
        for _, _, a, b in sorted(found, reverse=True):  # best score first; at a tie the shorter n-gram, then the later one
            if len(chosen) == cfg.max_spans:
                break
            if all(b <= c or a >= d for c, d in chosen):
                chosen.append((a, b))
        return sorted(chosen)


def cut_words(text: str, n: int) -> str:
    """``text`` up to the end of its ``n``-th word (whitespace-separated)."""
    words = text.split()
    return " ".join(words[:n])


def plan(text: str, spans: list[tuple[int, int]]) -> tuple[str, list[tuple[str, str]], str]:
    """``(head, [(masked, kept after it)], tail)``: the text before the first mask, each masked span
    (with the space before it) and the kept text up to the next mask, and the words after the last."""
    head = text[: spans[0][0]].rstrip() if spans else text
    parts = []
    for k, (a, b) in enumerate(spans):
        nxt = spans[k + 1][0] if k + 1 < len(spans) else None
        lead = text[:a][len(text[:a].rstrip()) :]  # the space before the span belongs to it
        kept = text[b:nxt].rstrip() if nxt is not None else ""
        parts.append((lead + text[a:b], kept))
    tail = text[spans[-1][1] :] if spans else ""
    return head, parts, tail


def rewrite_key(cfg: RewriteConfig, label_names: list[str] | None = None) -> str:
    from textlora.fsutil import fingerprint
    from textlora.registry import resolve_model_path

    settings = {**asdict(cfg), "label_names": label_names}
    return fingerprint(settings, [cfg.source, cfg.target, resolve_model_path(cfg.model)], paths=("output", "source", "target", "model"))


def is_rewritten(cfg: RewriteConfig, label_names: list[str] | None = None) -> bool:
    out = Path(cfg.output)
    summary = out.with_suffix(".rewrite.json")
    return out.is_file() and summary.is_file() and json.loads(summary.read_text()).get("fingerprint") == rewrite_key(cfg, label_names)


def _read(path: str, columns: list[str], what: str):
    import pandas as pd

    try:
        df = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (OSError, ValueError) as e:
        raise UserError(f"{what} {path}: cannot read it ({e})") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{what} {path}: no column '{missing[0]}' (columns: {', '.join(df.columns)})")
    return df


def _sample(n: int, k: int, rng) -> list[int]:
    return list(range(n)) if n <= k else sorted(rng.choice(n, k, replace=False).tolist())


def _choose(cfg: RewriteConfig, texts: list[str], labels, names: list[str], words: DomainWords, rng) -> tuple[list, int]:
    """Up to ``rows_per_class`` rows of each class that hold a maskable n-gram (seeded draw):
    ``[(source row, label, cut text, spans)]`` and how many rows had none."""
    chosen = []  # (source row, label, cut text, spans)
    no_span = 0
    for name in names:
        taken = 0
        for i in rng.permutation(np.flatnonzero(labels == name)):
            if taken == cfg.rows_per_class:
                break
            text = cut_words(texts[i], cfg.max_words)
            spans = words.spans(text, cfg)
            if spans:
                chosen.append((int(i), name, text, spans))
                taken += 1
            else:
                no_span += 1
    return chosen, no_span


def _filters(cfg: RewriteConfig, frame, steps: dict, source, target: list[str], rng) -> np.ndarray:
    """Which rewritten rows to keep: changed, given their label by a probe of the source rows, and
    called target texts by a source-vs-target probe (each probe's verdict added to ``frame``, each
    step's count to ``steps``)."""
    from textlora.augment.check import Probe

    src_texts = source["text"].tolist()
    keep = np.ones(len(frame), dtype=bool)
    if len(frame):
        keep &= (frame["text"] != frame["original"].map(lambda t: " ".join(t.split()))).to_numpy()  # the LM wrote the masked words again
        steps["changed"] = int(keep.sum())
    if len(frame) and cfg.label_filter:
        probe = Probe().fit(src_texts, source["label"].tolist())
        frame["label_probe"] = probe.predict(frame["text"].tolist())
        keep &= (frame["label_probe"] == frame["label"]).to_numpy()
        steps["label_filter_kept"] = int(keep.sum())
        steps["label_probe_on_originals"] = float(np.mean(np.array(probe.predict(frame["original"].tolist())) == frame["label"].to_numpy()))
    if len(frame) and cfg.domain_filter:
        s_idx, t_idx = _sample(len(src_texts), PROBE_TEXTS, rng), _sample(len(target), PROBE_TEXTS, rng)
        domain = Probe().fit([src_texts[i] for i in s_idx] + [target[i] for i in t_idx], ["source"] * len(s_idx) + ["target"] * len(t_idx))
        frame["domain_probe"] = domain.predict(frame["text"].tolist())
        steps["target_like"] = float(np.mean(frame["domain_probe"] == "target"))
        steps["target_like_originals"] = float(np.mean(np.array(domain.predict(frame["original"].tolist())) == "target"))
        keep &= (frame["domain_probe"] == "target").to_numpy()
        steps["domain_filter_kept"] = int(keep.sum())
    return keep


def rewrite(cfg: RewriteConfig, label_names: list[str] | None = None, reuse: bool = False) -> Path:
    """Rewrite ``rows_per_class`` source rows of each class into the target's words; write the kept
    rows (text, label and provenance) to ``output`` and a summary to ``output`` with suffix ``.rewrite.json``.

    Args:
        cfg: the rewriting settings.
        label_names: the classes in the classifier's order (a source label outside them is an error).
        reuse: keep an output made from the same settings and inputs.
    """
    import pandas as pd

    from textlora.fsutil import atomic_path

    out = Path(cfg.output)
    if reuse and is_rewritten(cfg, label_names):
        print(f"reusing {out}: rewritten from the same settings, rows and model", flush=True)
        return out
    start = time.perf_counter()
    source = _read(cfg.source, ["text", "label"], "rewrite: source")
    target = _read(cfg.target, [cfg.target_text_column], "rewrite: target")[cfg.target_text_column].tolist()
    names = label_names or sorted(source["label"].unique().tolist())
    unknown = sorted(set(source["label"]) - set(names))
    if unknown:
        raise UserError(f"rewrite: source {cfg.source}: label '{unknown[0]}' is not a class ({', '.join(names)})")
    rng = np.random.default_rng([cfg.seed, 31])
    src_texts = source["text"].tolist()
    words = DomainWords(src_texts, target, cfg.ngram, source["label"].tolist())

    chosen, no_span = _choose(cfg, src_texts, source["label"].to_numpy(), names, words, rng)
    rows = _fill(cfg, chosen)

    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values(["label", "source_row"], key=lambda c: c.map(names.index) if c.name == "label" else c, kind="stable").reset_index(drop=True)
    steps = {"rows": len(frame), "rows_without_a_source_ngram": no_span}
    keep = _filters(cfg, frame, steps, source, target, rng)
    kept = frame[keep] if len(frame) else frame
    out.parent.mkdir(parents=True, exist_ok=True)
    cols = ["text", "label", "source_row", "original", "spans", "model", "seed"]
    with atomic_path(out) as tmp:
        (kept[cols] if len(kept) else pd.DataFrame(columns=cols)).to_csv(tmp, index=False)
    if len(frame):  # every rewritten row with the probes' verdicts: what was dropped, and why
        frame.assign(kept=keep).to_csv(out.with_suffix(".all.csv"), index=False)
    per_class = {n: int((kept["label"] == n).sum()) if len(kept) else 0 for n in names}
    summary = {
        **steps,
        "rows_written": len(kept),
        "per_class": per_class,
        "seconds": round(time.perf_counter() - start, 1),
        "fingerprint": rewrite_key(cfg, label_names),
    }
    out.with_suffix(".rewrite.json").write_text(json.dumps(summary, indent=2))
    print(f"rewrite: {len(frame)} source rows rewritten, {len(kept)} kept -> {out}", flush=True)
    return out


def _fill(cfg: RewriteConfig, chosen: list) -> list[dict]:
    """Each chosen row with its masks filled by the LM (``sampling.fill_spans``), batched; batch k
    samples with seed (seed, k), so the same settings give the same rows."""
    import torch

    from textlora.augment.generate import _load_generator
    from textlora.augment.sampling import SamplingSettings, fill_spans

    if not chosen:
        return []
    model, tok, _, device, _ = _load_generator(cfg, None)
    settings = SamplingSettings(top_k=cfg.top_k, top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty)

    def ids(s: str) -> list[int]:
        return tok(s, add_special_tokens=False)["input_ids"] if s else []

    rows = []
    chosen = sorted(chosen, key=lambda c: len(c[2]))  # rows of like length share a batch: less padding
    for k in range(0, len(chosen), cfg.batch_size):
        batch = chosen[k : k + cfg.batch_size]
        layouts = [plan(text, spans) for _, _, text, spans in batch]
        heads = [ids(head) or [tok.eos_token_id] for head, _, _ in layouts]
        plans = [[(max(1, len(ids(masked))), ids(kept)) for masked, kept in parts] for _, parts, _ in layouts]
        generator = torch.Generator(device=device).manual_seed((cfg.seed * 1_000_003 + k // cfg.batch_size) % (2**63))
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        fills = fill_spans(model, heads, plans, settings, pad_id=pad, eos_id=tok.eos_token_id, generator=generator, device=device, fused=cfg.fused)
        for (i, name, text, _), head, plan_, (_, parts, tail), got in zip(batch, heads, plans, layouts, fills):
            body = [t for (_, kept), fill in zip(plan_, got) for t in (*fill, *kept)]
            written = " ".join((tok.decode(head + body, skip_special_tokens=True) + tail).split())  # the tail starts at a word's end: a space or a sign
            rows.append(
                {
                    "text": written,
                    "label": name,
                    "source_row": i,
                    "original": text,
                    "spans": json.dumps(
                        [{"masked": m.strip(), "fill": " ".join(tok.decode(f, skip_special_tokens=True).split())} for (m, _), f in zip(parts, got)]
                    ),
                    "model": cfg.model,
                    "seed": cfg.seed,
                }
            )
    return rows
