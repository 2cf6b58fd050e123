"""Which target texts to ask a person about: query strategies over the current classifier.

A strategy (:func:`choose`) picks ``n`` of the unlabelled texts (indices into the pool), never one already labelled:

- ``random``: uniformly, seeded.
- ``margin``: the smallest gap between the two most probable classes (uncertainty sampling).
- ``entropy``: the largest entropy of the predicted distribution.
- ``kcenter``: greedy k-center (core-set; Sener & Savarese, ICLR 2018) on the L2-normalised
  embeddings: each pick is the text farthest (cosine) from every labelled or already picked text.
- ``combined``: the ``pool_factor`` x n texts of smallest margin, then k-center among them: uncertain
  texts that are not near-copies of each other or of the labelled ones.

Before any classifier exists, only ``random`` and ``kcenter`` apply, the latter on hashed word and
word-pair counts (TF-IDF-like, L2-normalised) in place of the classifier's embeddings.

The strategies are written here rather than taken from small-text, whose strategies work through its
own dataset and classifier wrappers (and it is not on this machine's package index); each is a few
lines of numpy, tested against its definition (tests/test_active.py).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from textlora.errors import UserError

STRATEGIES = ("random", "margin", "entropy", "kcenter", "combined")
NEEDS_MODEL = ("margin", "entropy", "combined")


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """The gap between the two most probable classes (small: uncertain)."""
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2]


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """The entropy of each row's distribution (large: uncertain)."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kcenter(embeddings: np.ndarray, candidates: np.ndarray, labelled: np.ndarray, n: int) -> list[int]:
    """Greedy k-center: ``n`` of ``candidates``, each the one farthest (cosine distance) from its
    nearest labelled or already chosen point. With nothing labelled, the first is the candidate
    nearest the candidates' mean (deterministic)."""
    x = _normalised(embeddings)
    candidates = np.asarray(candidates, dtype=np.int64)
    n = min(n, len(candidates))
    if n == 0:
        return []
    if len(labelled):
        dist = (1.0 - x[candidates] @ x[np.asarray(labelled)].T).min(axis=1)
        chosen: list[int] = []
    else:
        centre = x[candidates].mean(axis=0)
        first = int(np.argmax(x[candidates] @ centre))
        chosen = [int(candidates[first])]
        dist = 1.0 - x[candidates] @ x[chosen[0]]
        dist[first] = -np.inf
    while len(chosen) < n:
        k = int(np.argmax(dist))
        chosen.append(int(candidates[k]))
        dist = np.minimum(dist, 1.0 - x[candidates] @ x[candidates[k]])
        dist[k] = -np.inf
    return chosen


def choose(
    strategy: str,
    n: int,
    pool_size: int,
    labelled: list[int] | np.ndarray = (),
    probs: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    seed: int = 0,
    pool_factor: int = 4,
) -> list[int]:
    """``n`` indices of the pool (``0 .. pool_size-1``) to ask about next, none of ``labelled``, in
    the order the strategy ranks them."""
    if strategy not in STRATEGIES:
        raise UserError(f"--strategy: expected one of {', '.join(STRATEGIES)}, found '{strategy}'")
    if strategy in NEEDS_MODEL and probs is None:
        raise UserError(f"--strategy {strategy}: needs a classifier's probabilities (--model RUN); before the first model, use kcenter or random")
    labelled = np.asarray(sorted(set(int(i) for i in labelled)), dtype=np.int64)
    free = np.setdiff1d(np.arange(pool_size), labelled)
    n = min(n, len(free))
    if strategy == "random":
        return [int(i) for i in np.random.default_rng([seed, 17]).permutation(free)[:n]]
    if strategy == "margin":
        return [int(i) for i in free[np.argsort(margin_scores(probs[free]), kind="stable")[:n]]]
    if strategy == "entropy":
        return [int(i) for i in free[np.argsort(-entropy_scores(probs[free]), kind="stable")[:n]]]
    if embeddings is None:
        raise UserError(f"--strategy {strategy}: needs embeddings")
    if strategy == "kcenter":
        return kcenter(embeddings, free, labelled, n)
    uncertain = free[np.argsort(margin_scores(probs[free]), kind="stable")[: max(n, pool_factor * n)]]
    return kcenter(embeddings, uncertain, labelled, n)


# --- what the strategies look at -------------------------------------------------------------


def hashed_features(texts: list[str], dims: int = 4096) -> np.ndarray:
    """Words and word pairs hashed into ``dims`` counts, sublinear and L2-normalised: a text's
    embedding before any classifier exists (the label check's features, textlora.augment.check)."""
    from textlora.augment.check import features

    x = np.zeros((len(texts), dims), dtype=np.float32)
    for i, text in enumerate(texts):
        for f in features(str(text)):
            x[i, zlib.crc32(f.encode()) % dims] += 1.0
    np.log1p(x, out=x)
    return _normalised(x).astype(np.float32)


def probabilities_and_embeddings(run, texts: list[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A run's class probabilities for ``texts`` and the pooled vectors its classification layer reads
    (:func:`probabilities_and_pooled`), both in input order. When a prefix cache of the run's frozen
    layers holds every text (a pipeline with ``lora.layers`` caches its target texts), the pass runs
    through the top layers alone (``textlora.prediction.Classifier``)."""
    import contextlib

    from textlora.prediction import Classifier
    from textlora.prefix import attached
    from textlora.runtime import encode_texts

    clf = Classifier(run, batch_size=batch_size, cached=True)
    encoded = encode_texts(clf.tokenizer, texts, clf.max_length, clf.config.model.truncation)
    states, split = clf.prefix_states()
    every = states is not None and all(states.holds(ids) for ids in encoded)
    with attached(clf.model, states, split) if every else contextlib.nullcontext():
        return probabilities_and_pooled(clf.model, encoded, clf.tokenizer.pad_token_id or 0, len(clf.label_names), clf.config, clf.precision, clf.device, batch_size)


def probabilities_and_pooled(model, encoded: list, pad_id: int, classes: int, config, precision: str, device, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A model's class probabilities for token ids ``encoded`` and the pooled vectors its
    classification layer reads (captured at the last linear layer with one output a class), in one
    pass over the runtime's length-sorted batches (``textlora.runtime.batched_logits``), in input order."""
    import torch

    from textlora.device import autocast
    from textlora.runtime import batched_logits, probabilities

    k = classes
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == k][-1]
    seen: list = []
    hook = last.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().float().reshape(-1, args[0].shape[-1])))

    def forward(ids, mask):  # logits and the pooled vectors side by side, split below
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        return torch.cat([logits, seen.pop()], dim=1).cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(precision, device):
            both = batched_logits(encoded, pad_id, batch_size, forward)
    finally:
        hook.remove()
        model.train(was_training)
    return probabilities(both[:, :k], config), both[:, k:]


def read_pool(data: str, text_column: str, labels: str | Path | None, classes: list[str] | None) -> tuple[list[str], list[str], dict[str, str]]:
    """The pool (ids, texts) and the answers in ``labels`` so far (id -> label; checked against the pool and the classes)."""
    from textlora.data import read_texts

    frame = read_texts(data, text_column, None, require_labels=False)
    texts = [str(t) for t in frame.texts]
    ids = [str(i) for i in frame.ids] if frame.ids is not None else [str(i) for i in range(len(texts))]
    answered = read_labels(labels, ids, classes, data) if labels and Path(labels).is_file() else {}
    return ids, texts, answered


def rank_pool(data: str, text_column: str, model: str | None, strategy: str | None, labels: str | Path | None, classes: list[str] | None, n: int, seed: int):
    """What the page and ``--select`` share: the pool (ids, texts), the answers in ``labels`` (id ->
    label; checked against the pool and the classes), and the first ``n`` texts the strategy ranks
    among those not answered. Returns (ids, texts, answered, chosen, probabilities or None, the strategy)."""
    strategy = strategy or "kcenter"
    if strategy in NEEDS_MODEL and not model:
        raise UserError(f"--strategy {strategy}: needs --model RUN (a trained classifier); before the first model, use kcenter or random")
    ids, texts, answered = read_pool(data, text_column, labels, classes)
    done = [k for k, i in enumerate(ids) if i in answered]
    probs = emb = None
    if model:
        probs, emb = probabilities_and_embeddings(model, texts)
    elif strategy == "kcenter":
        emb = hashed_features(texts)
    chosen = choose(strategy, min(n, len(texts) - len(done)), len(texts), done, probs, emb, seed=seed)
    return ids, texts, answered, chosen, probs, strategy


# --- the verb, offline ---------------------------------------------------------------------


def read_labels(path: str | Path, ids: list[str], label_names: list[str] | None, texts_file: str) -> dict[str, str]:
    """``id -> label`` from a labels file (``id,text,label``); an empty label is a skip. An id not in
    ``ids`` or a label that is not a class is one line naming the file and row."""
    import pandas as pd

    try:
        df = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the labels file ({str(e).splitlines()[0][:200]})") from None
    for col in ("id", "label"):
        if col not in df.columns:
            raise UserError(f"{path}: no '{col}' column (a labels file has id,text,label)")
    known = set(ids)
    out = {}
    for row, (i, label) in enumerate(zip(df["id"], df["label"]), start=2):  # row 1 is the header
        if i not in known:
            raise UserError(f"{path}: row {row}: id '{i}' is not in {texts_file}")
        if label and label_names is not None and label not in label_names:
            raise UserError(f"{path}: row {row}: label '{label}' is not a class ({', '.join(label_names)})")
        out[i] = label
    return out


def select_texts(
    data: str, select: int, output: str, model: str | None, strategy: str | None, labels: str | None, text_column: str, seed: int, overwrite: bool
) -> Path:
    """``textlora label --select``: the texts to ask about next, to ``output`` (see ``textlora.labelling.label``)."""
    import pandas as pd

    from textlora.fsutil import atomic_path, check_output

    if select < 1:
        raise UserError(f"--select: expected an integer >= 1, found {select}")
    out = check_output(output, inputs=[data, *([labels] if labels else [])], overwrite=overwrite, flag="--output")
    if labels and not Path(labels).is_file():
        raise UserError(f"--labels {labels}: no such file")
    names = None
    if model:
        from textlora.run import as_run

        names = as_run(model).labels
    ids, texts, answered, chosen, probs, strategy = rank_pool(data, text_column, model, strategy, labels, names, select, seed)
    table = pd.DataFrame({"id": [ids[k] for k in chosen], "text": [texts[k] for k in chosen], "label": [""] * len(chosen)})
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    info = {"strategy": strategy, "model": model, "data": str(data), "labels": labels, "already_labelled": len(answered), "chosen": len(chosen)}
    if probs is not None:
        info["margin"] = [round(float(v), 4) for v in margin_scores(probs[chosen])]
    out.with_suffix(".select.json").write_text(json.dumps(info, indent=2))
    print(f"{len(chosen)} of {len(texts) - len(answered):,} unlabelled texts chosen by {strategy}", flush=True)
    return out
