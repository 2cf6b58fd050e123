"""Batch and single-text prediction: the fast inference path shared by train, evaluate and predict.

Texts are tokenized once without padding, sorted by length so that each batch pads little,
run under ``torch.inference_mode`` (bf16 autocast where the hardware has it), and the logits are
put back in input order.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from textlora.errors import UserError

PAD_MULTIPLE = 8  # pad batches to a multiple of this: fewer distinct shapes, friendlier kernels


def encode_texts(tokenizer, texts: list, max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length``, unpadded.

    A (text, pair text) tuple is tokenized as a pair ([CLS] a [SEP] b [SEP] for BERT), the longer
    side truncated first. Batches carry input ids and the attention mask only, so token type ids
    stay 0 in training and at prediction alike (and in ONNX exports).
    """
    texts = list(texts)
    if texts and isinstance(texts[0], tuple):
        return tokenizer([a for a, _ in texts], [b for _, b in texts], truncation="longest_first", max_length=max_length)["input_ids"]
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def pad_batch(seqs: list[list[int]], pad_id: int):
    """(input_ids, attention_mask) as int64 tensors, padded on the right to a multiple of 8."""
    import torch

    width = max(len(s) for s in seqs)
    width = -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def resolve_precision(precision: str, device) -> str:
    """Pick bf16/fp16/fp32 for ``precision='auto'``: bf16 on CPUs with native bf16 and on bf16 GPUs."""
    import torch

    if precision != "auto":
        if device.type == "cpu" and precision == "fp16":
            raise UserError("config: train.precision: fp16 is for CUDA devices; use bf16 or fp32 on the CPU")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    cpu_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if cpu_bf16 else "fp32"


def autocast(precision: str, device):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def default_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sorted_batches(lengths: list[int] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches, longest texts first, so that each batch holds texts of similar length."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def predict_logits(
    model, encoded: list[list[int]], pad_id: int, *, batch_size: int = 32, precision: str = "auto", device=None, progress: bool = False
) -> np.ndarray:
    """Logits (float32, shape [N, num_labels]) for pre-tokenized texts, in input order."""
    import torch

    device = device or next(model.parameters()).device
    precision = resolve_precision(precision, device)
    out = None
    was_training = model.training
    model.eval()
    batches = sorted_batches([len(s) for s in encoded], batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="predict", unit="batch", mininterval=2)
    with torch.inference_mode(), autocast(precision, device):
        for idx in batches:
            ids, mask = pad_batch([encoded[i] for i in idx], pad_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu().numpy()
            if out is None:
                out = np.empty((len(encoded), logits.shape[1]), dtype=np.float32)
            out[idx] = logits
    model.train(was_training)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def probabilities(logits: np.ndarray, config) -> np.ndarray:
    """Class probabilities: a softmax over the classes, or one sigmoid a class for a multi-label run."""
    if config.data.multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    return softmax(logits)


def chosen(probs: np.ndarray, config) -> list:
    """Each row's prediction: a class index, or for a multi-label run the list of classes at or above the threshold."""
    if config.data.multi_label:
        from textlora.evaluate import THRESHOLD

        return [np.flatnonzero(p >= THRESHOLD).tolist() for p in probs]
    return probs.argmax(axis=1).tolist()


class Classifier:
    """A loaded run directory, ready to classify texts."""

    def __init__(self, run_dir: str | os.PathLike, *, precision: str = "auto", batch_size: int = 32):
        from textlora.models import load_classifier

        self.model, self.tokenizer, self.label_names, self.config = load_classifier(run_dir, merge=True)
        self.device = default_device()
        self.model.to(self.device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size
        self.max_length = self.config.model.max_length

    def logits(self, texts: list[str], progress: bool = False) -> np.ndarray:
        encoded = encode_texts(self.tokenizer, texts, self.max_length)
        return predict_logits(
            self.model, encoded, self.tokenizer.pad_token_id or 0, batch_size=self.batch_size, precision=self.precision, device=self.device, progress=progress
        )

    def predict_proba(self, texts: list[str], progress: bool = False) -> np.ndarray:
        return probabilities(self.logits(texts, progress=progress), self.config)


def load(run_dir: str | os.PathLike, **kwargs):
    """Load a run directory (LoRA merged into the base weights) or an ONNX export for prediction."""
    from textlora.models import check_run_dir, run_backend

    if run_backend(check_run_dir(run_dir)) == "onnx":
        from textlora.export import OnnxClassifier

        return OnnxClassifier(run_dir, batch_size=kwargs.get("batch_size", 32))
    return Classifier(run_dir, **kwargs)


def _sharded_proba(clf: Classifier, texts: list[str]) -> np.ndarray | None:
    """Probabilities for ``texts``; under torchrun each rank scores every world-th text and
    rank 0 gathers them back into input order (other ranks get None)."""
    from textlora.train import finish_distributed, init_distributed

    dist_info, _ = init_distributed()
    if dist_info.world == 1:
        return clf.predict_proba(texts, progress=True)
    import torch.distributed as dist

    idx = np.arange(dist_info.rank, len(texts), dist_info.world)
    part = clf.predict_proba([texts[i] for i in idx], progress=dist_info.main)
    gathered = [None] * dist_info.world if dist_info.main else None
    dist.gather_object((idx, part), gathered, dst=0)
    probs = None
    if dist_info.main:
        probs = np.empty((len(texts), part.shape[1]), dtype=np.float32)
        for i, p in gathered:
            probs[i] = p
    finish_distributed(dist_info)
    return probs


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
    batch_size: int = 32,
    overwrite: bool = False,
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
    """
    import pandas as pd

    from textlora.data import read_texts
    from textlora.fsutil import atomic_path, check_output_path
    from textlora.models import read_run

    if (data is None) == (text is None):
        raise UserError("predict: give either --data FILE (with --output) or --text TEXT")
    config = read_run(model)[0]
    pair_column = pair_column or config.data.text_pair_column
    if text is not None:
        if not text.strip():
            raise UserError("--text: empty text")
        if bool(config.data.text_pair_column) != (text_pair is not None):
            need = "a sentence-pair run: give --text-pair too" if config.data.text_pair_column else "not a sentence-pair run: --text-pair does not apply"
            raise UserError(f"--model {model}: {need}")
        if text_pair is not None and not text_pair.strip():
            raise UserError("--text-pair: empty text")
        clf = load(model, batch_size=batch_size)
        probs = clf.predict_proba([text if text_pair is None else (text, text_pair)])
        k = chosen(probs, config)[0]
        names = [clf.label_names[j] for j in k] if config.data.multi_label else clf.label_names[k]
        return {"label": k, "label_name": names, "probabilities": {n: float(p) for n, p in zip(clf.label_names, probs[0])}}
    if output is None:
        raise UserError("predict: --output is required with --data")
    out = check_output_path(output, inputs=[data], overwrite=overwrite, flag="--output")
    frame = read_texts(data, text_column, None, require_labels=False, pair_column=pair_column)
    clf = load(model, batch_size=batch_size)
    probs = _sharded_proba(clf, frame.texts)
    if probs is None:  # a rank other than 0 under torchrun: rank 0 writes the output
        return out
    pred = chosen(probs, config)
    ids = frame.ids if frame.ids is not None else np.arange(len(pred))
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
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    return out
