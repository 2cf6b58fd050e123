"""Loaded models and the predict verb.

:class:`Classifier` (a run directory, LoRA merged) and :class:`OnnxClassifier` (an ONNX export)
share one interface: ``logits``, ``predict_proba``, ``label_names``, ``config``, ``run``. :func:`load`
opens a run once and returns the right one. Batching, precision and the inference loop live in
``textlora.runtime``.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np

from textlora.device import default_device, onnx_providers, resolve_precision
from textlora.errors import UserError
from textlora.run import Run, as_run
from textlora.runtime import (
    BATCH_SIZE,
    batched_logits,
    chosen,
    encode_texts,
    finish_distributed,
    init_distributed,
    predict_logits,
    probabilities,
)


class _Loaded:
    """What both classifiers share: the opened run, and its config and class names read from it."""

    run: Run

    @property
    def config(self):
        return self.run.config

    @property
    def label_names(self) -> list[str]:
        return self.run.labels

    def predict_proba(self, texts: list, progress: bool = False) -> np.ndarray:
        return probabilities(self.logits(texts, progress=progress), self.config)


class Classifier(_Loaded):
    """A run directory loaded for prediction (LoRA merged into the base weights).

    ``cached``: a run trained with ``lora.layers`` scores the texts whose frozen-prefix states an
    earlier cache holds (its dev split, eval sets, target texts: ``textlora.prefix``) through its
    top layers alone, and every other text through the whole model; the answers are those of the
    whole model to bf16 precision (rows near a tie are scored again in fp32 without the cache).
    """

    def __init__(self, run: str | os.PathLike | Run, *, precision: str = "auto", batch_size: int = BATCH_SIZE, cached: bool = False):
        from textlora.models import load_model

        self.run = as_run(run)
        self.model, self.tokenizer = load_model(self.run, merge=True)
        self.device = default_device()
        self.model.to(self.device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size
        self.max_length = self.config.model.max_length
        self.cached = cached
        self._prefix = None  # (CachedStates or None, split), found on first use
        self.from_cache = 0  # texts scored from the prefix cache so far

    def _score(self, encoded, progress: bool = False, exact=None) -> np.ndarray:
        return predict_logits(
            self.model, encoded, self.tokenizer.pad_token_id or 0, batch_size=self.batch_size, precision=self.precision, device=self.device, progress=progress,
            multi_label=self.config.data.multi_label, exact=exact,
        )

    def prefix_states(self):
        """(the cached states this run's frozen layers match, or None; the first trained layer)."""
        if self._prefix is None:
            self._prefix = (None, 0)
            layers = self.config.lora.layers
            if self.cached and layers is not None and self.config.train.prefix_cache != "off":
                from textlora.fsutil import cache_dir
                from textlora.models import layer_indices
                from textlora.prefix import cached_states

                split = min(layer_indices(layers, self.model.config.num_hidden_layers))
                if split > 0:
                    self.model.requires_grad_(False)  # inference: what the cache key hashes is every frozen weight below split
                    self._prefix = (cached_states(self.model, split, self.precision, cache_dir() / "prefix"), split)
        return self._prefix

    def logits(self, texts: list, progress: bool = False) -> np.ndarray:
        encoded = encode_texts(self.tokenizer, texts, self.max_length, self.config.model.truncation)
        states, split = self.prefix_states()
        if states is None:
            return self._score(encoded, progress)
        from textlora.prefix import attached

        hit = np.fromiter((states.holds(ids) for ids in encoded), dtype=bool, count=len(encoded))
        parts = {}
        if hit.any():
            with attached(self.model, states, split) as att:
                parts[True] = self._score([encoded[i] for i in np.flatnonzero(hit)], progress, exact=att.aside)
        if not hit.all():
            parts[False] = self._score([encoded[i] for i in np.flatnonzero(~hit)], progress)
        width = next(iter(parts.values())).shape[1]
        out = np.empty((len(encoded), width), dtype=np.float32)
        for h, logits in parts.items():
            out[hit if h else ~hit] = logits
        self.from_cache += int(hit.sum())
        return out


class OnnxClassifier(_Loaded):
    """An ONNX export (``textlora export --format onnx``) run by onnxruntime, with :class:`Classifier`'s interface."""

    def __init__(self, run: str | os.PathLike | Run, batch_size: int = BATCH_SIZE):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.run = as_run(run)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.run.onnx_file), options, providers=onnx_providers())
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.run.path))
        self.batch_size = batch_size
        self.max_length = self.config.model.max_length

    def logits(self, texts: list, progress: bool = False) -> np.ndarray:
        def forward(ids, mask):
            return self.session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]

        encoded = encode_texts(self.tokenizer, texts, self.max_length, self.config.model.truncation)
        return batched_logits(encoded, self.tokenizer.pad_token_id or 0, self.batch_size, forward, progress)


def load(run: str | os.PathLike | Run, **kwargs) -> Classifier | OnnxClassifier:
    """Open a run directory or an ONNX export (checked once) and load it for prediction."""
    run = as_run(run)
    if run.backend == "onnx":
        return OnnxClassifier(run, batch_size=kwargs.get("batch_size", BATCH_SIZE))  # no prefix cache: an export is one graph
    return Classifier(run, **kwargs)


def _sharded_proba(clf: Classifier, texts: list[str], dist_info) -> np.ndarray | None:
    """Probabilities for ``texts``; under torchrun each rank scores every world-th text and
    rank 0 gathers them back into input order (other ranks get None)."""
    if dist_info.world == 1:
        return clf.predict_proba(texts, progress=len(texts) > 2000)
    import torch.distributed as dist

    idx = np.arange(dist_info.rank, len(texts), dist_info.world)
    part = clf.predict_proba([texts[i] for i in idx], progress=dist_info.main and len(texts) > 2000)
    gathered = [None] * dist_info.world if dist_info.main else None
    dist.gather_object((idx, part), gathered, dst=0)
    probs = None
    if dist_info.main:
        probs = np.empty((len(texts), part.shape[1]), dtype=np.float32)
        for i, p in gathered:
            probs[i] = p
    return probs


def _prediction_table(clf, config, probs: np.ndarray, ids, with_names: bool, with_probs: bool):
    """One chunk's output rows: ID,Label (multi-label: ID,Labels as JSON lists), optional names and probabilities."""
    import pandas as pd

    pred = chosen(probs, config)
    if config.data.multi_label:  # one row per input: its labels as a JSON list (possibly empty)
        df = pd.DataFrame({"ID": ids, "Labels": [json.dumps(k) for k in pred]})
        if with_names:
            df["LabelNames"] = [json.dumps([clf.label_names[j] for j in k]) for k in pred]
    else:
        df = pd.DataFrame({"ID": ids, "Label": pred})
        if with_names:
            df["LabelName"] = [clf.label_names[k] for k in pred]
    if with_probs:
        for j, name in enumerate(clf.label_names):
            df[f"P({name})"] = probs[:, j].round(6)
    return df


def predict(
    model: str,
    data: str | None = None,
    output: str | None = None,
    text: str | None = None,
    text_column: str = "text",
    text_pair: str | None = None,
    pair_column: str | None = None,
    with_names: bool = False,
    with_probs: bool = False,
    batch_size: int = BATCH_SIZE,
    overwrite: bool = False,
    chunk_rows: int = 20_000,
) -> dict | Path:
    """Predict labels for a file (written as an ``ID,Label`` CSV) or for one ``text`` (returned).

    Args:
        model: run directory written by ``textlora train``.
        data: CSV/TSV/JSONL/Parquet file with a text column; IDs come from its ``id`` column, else the row index.
        output: CSV to write; refused if it is the input or exists (unless ``overwrite``).
        text: classify this one text instead of a file, and print label and probabilities.
        text_column: name of the text column in ``data``.
        text_pair: the second text of ``text``, for a sentence-pair run.
        pair_column: the second text column in ``data`` of a sentence-pair run (default: the run's).
        with_names: add a ``LabelName`` column.
        with_probs: add one ``P(<label name>)`` column per class.
        batch_size: texts per forward pass.
        overwrite: replace an existing output file.
        chunk_rows: rows read, tokenized and predicted at a time (sorted by length within a chunk,
            written in input order as they finish), so that memory stays flat at any input size.
    """

    from textlora.data import read_text_chunks
    from textlora.fsutil import atomic_path, check_output

    if (data is None) == (text is None):
        raise UserError("predict: give either --data FILE (with --output) or --text TEXT")
    run = as_run(model)
    config = run.config
    pair_column = pair_column or config.data.text_pair_column
    if text is not None:
        if not text.strip():
            raise UserError("--text: empty text")
        if bool(config.data.text_pair_column) != (text_pair is not None):
            need = "a sentence-pair run: give --text-pair too" if config.data.text_pair_column else "not a sentence-pair run: --text-pair does not apply"
            raise UserError(f"--model {model}: {need}")
        if text_pair is not None and not text_pair.strip():
            raise UserError("--text-pair: empty text")
        clf = load(run, batch_size=batch_size)
        probs = clf.predict_proba([text if text_pair is None else (text, text_pair)])
        k = chosen(probs, config)[0]
        names = [clf.label_names[j] for j in k] if config.data.multi_label else clf.label_names[k]
        return {"label": k, "label_name": names, "probabilities": {n: float(p) for n, p in zip(clf.label_names, probs[0])}}
    if output is None:
        raise UserError("predict: --output is required with --data")
    if chunk_rows < 1:
        raise UserError(f"--chunk-rows: expected an integer >= 1, found {chunk_rows}")
    out = check_output(output, inputs=[data], overwrite=overwrite, flag="--output")
    chunks = read_text_chunks(data, text_column, chunk_rows=chunk_rows, pair_column=pair_column)
    first = next(chunks)  # the file's problems (missing, no text column, empty) before any weights load
    clf = load(run, batch_size=batch_size, cached=True)
    dist_info, _ = init_distributed()

    def stream(f) -> None:
        start = 0
        for k, frame in enumerate(itertools.chain([first], chunks)):
            probs = _sharded_proba(clf, frame.texts, dist_info)
            if f is not None:  # rank 0 (or the only process) writes, chunk by chunk, in input order
                ids = frame.ids if frame.ids is not None else np.arange(start, start + len(frame.texts))
                _prediction_table(clf, config, probs, ids, with_names, with_probs).to_csv(f, header=k == 0, index=False)
            start += len(frame.texts)

    if dist_info.main:
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            stream(f)
    else:
        stream(None)
    finish_distributed(dist_info)
    return out
