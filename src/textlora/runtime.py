"""The runtime every verb shares: tokenizing and batching, the inference loop, class
probabilities, the LR schedule, the optimizer step both training loops take, and the distributed
helpers (torchrun/accelerate). Device and precision are chosen in ``textlora.device``.

Near the bottom of the layers: it imports nothing of textlora but ``device`` and the errors.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from textlora.device import autocast, resolve_precision
from textlora.errors import UserError

THRESHOLD = 0.5  # multi-label: a class is predicted when its sigmoid probability reaches this
BATCH_SIZE = 32  # texts per forward pass at inference (evaluate, predict, pseudolabel); small batches stay in cache
PAD_MULTIPLE = 8  # pad batches to a multiple of this: fewer distinct shapes, friendlier kernels


TRUNCATIONS = ("head", "head_tail")
HEAD_SHARE = 0.25  # head_tail: the share of the token budget kept from the start; the rest comes from the end


def encode_texts(tokenizer, texts: list, max_length: int, truncation: str = "head") -> list[list[int]]:
    """Token ids per text, truncated to ``max_length``, unpadded.

    ``truncation``: ``head`` keeps the start of a text that is too long; ``head_tail`` keeps its
    first quarter and its end (where reviews often give their verdict), the model's special tokens
    around them. A (text, pair text) tuple is tokenized as a pair ([CLS] a [SEP] b [SEP] for BERT),
    the longer side truncated first, whatever ``truncation`` says. Batches carry input ids and the
    attention mask only, so token type ids stay 0 in training and at prediction alike (and in ONNX
    exports).
    """
    if truncation not in TRUNCATIONS:
        raise UserError(f"model.truncation: expected one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
    texts = list(texts)
    if texts and isinstance(texts[0], tuple):
        return tokenizer([a for a, _ in texts], [b for _, b in texts], truncation="longest_first", max_length=max_length)["input_ids"]
    if truncation == "head":
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    prefix, suffix = _special_tokens_around(tokenizer)
    budget = max(max_length - prefix - suffix, 1)
    head = int(budget * HEAD_SHARE)
    out = []
    for ids in tokenizer(texts, verbose=False)["input_ids"]:  # whole texts, cut just below: no indexing-error warning
        if len(ids) > prefix + budget + suffix:
            ids = ids[: prefix + head] + ids[len(ids) - (budget - head) - suffix :]
        out.append(ids)
    return out


def _special_tokens_around(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a single text's tokens."""
    full = tokenizer("a")["input_ids"]
    body = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(full) - len(body) + 1):
        if full[start : start + len(body)] == body:
            return start, len(full) - start - len(body)
    return 0, 0


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


def sorted_batches(lengths: list[int] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches, longest texts first, so that each batch holds texts of similar length."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def batched_logits(encoded: list[list[int]], pad_id: int, batch_size: int, forward, progress: bool = False) -> np.ndarray:
    """``forward(input_ids, attention_mask) -> logits`` (numpy) over length-sorted, padded batches; logits back in input order."""
    out = None
    batches = sorted_batches([len(s) for s in encoded], batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="predict", unit="batch", mininterval=2)
    for idx in batches:
        logits = forward(*pad_batch([encoded[i] for i in idx], pad_id))
        if out is None:
            out = np.empty((len(encoded), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    return out


TIE_MARGIN = 0.5  # logits: rows whose two best classes lie closer than this in bf16/fp16 are scored again in fp32


def predict_logits(
    model, encoded: list[list[int]], pad_id: int, *, batch_size: int = BATCH_SIZE, precision: str = "auto",
    device=None,
    progress: bool = False,
    multi_label: bool = False,
    exact=None,
) -> np.ndarray:
    """Logits (float32, shape [N, num_labels]) of a torch model for pre-tokenized texts, in input order.

    This is the one scoring function of textlora: training's evaluations, ``evaluate``, ``predict``,
    ``pseudolabel`` and ``serve`` all score through it, so one model and one file give one answer.
    In bf16 or fp16 a row's logits move with the batch it is padded into and with whether LoRA is
    merged (by ~0.1 on a base-size encoder), which flipped rows near a tie between two paths. So
    rows whose two best logits (multi-label: any logit and 0) lie within ``TIE_MARGIN`` are scored
    again in fp32, where batch and merge move a logit by ~1e-6: their prediction is the fp32 one.
    ``exact``: a context manager factory under which the model takes its exact path for that second
    pass (training passes one that sets the prefix cache aside: its states were stored in bf16).
    """
    import torch

    device = device or next(model.parameters()).device
    precision = resolve_precision(precision, device)
    was_training = model.training
    model.eval()

    def forward(ids, mask):
        return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu().numpy()

    with torch.inference_mode():
        with autocast(precision, device):
            out = batched_logits(encoded, pad_id, batch_size, forward, progress)
        near = near_ties(out, TIE_MARGIN, multi_label) if precision != "fp32" and len(encoded) else np.empty(0, dtype=np.int64)
        if len(near):
            with exact() if exact is not None else contextlib.nullcontext():
                out[near] = batched_logits([encoded[i] for i in near], pad_id, batch_size, forward)
    model.train(was_training)
    return out


def near_ties(logits: np.ndarray, margin: float, multi_label: bool = False) -> np.ndarray:
    """Rows whose prediction a small change of logits could flip: the two best classes within
    ``margin``; for a multi-label run (a sigmoid a class, chosen at 0.5) any logit within ``margin`` of 0."""
    if multi_label or logits.shape[1] == 1:
        return np.flatnonzero((np.abs(logits) < margin).any(axis=1))
    top2 = np.partition(logits, -2, axis=1)[:, -2:]
    return np.flatnonzero(top2[:, 1] - top2[:, 0] < margin)


def optimizer_step(optimizer, scheduler, params, max_grad_norm: float, scaler=None) -> None:
    """The end of a training step, as both training loops (``train`` and ``adapt``) take it:
    unscale (fp16), clip the gradient norm (0: no clipping), step, advance the LR schedule, zero.

    The loops share this and ``textlora.checkpoints`` (checkpoints, signals); their forward passes
    stay their own: the classifier's batches carry labels, eval sets and DDP, the LM's are token
    streams with their own loss and bf16 weights instead of autocast.
    """
    import torch

    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def probabilities(logits: np.ndarray, config) -> np.ndarray:
    """Class probabilities: a softmax over the classes, or one sigmoid a class for a multi-label run."""
    if config.data.multi_label:
        return sigmoid(logits)
    return softmax(logits)


def chosen(probs: np.ndarray, config) -> list:
    """Each row's prediction: a class index, or for a multi-label run the list of classes at or above the threshold."""
    if config.data.multi_label:
        return [np.flatnonzero(p >= THRESHOLD).tolist() for p in probs]
    return probs.argmax(axis=1).tolist()


def make_scheduler(optimizer, kind: str, warmup_ratio: float, total_steps: int):
    """The LR schedule of ``train`` and ``adapt``: linear warmup over ``warmup_ratio`` of the steps, then ``kind``
    (linear or cosine decay, or constant)."""
    from transformers import get_scheduler

    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[kind]
    return get_scheduler(name, optimizer, num_warmup_steps=int(warmup_ratio * total_steps), num_training_steps=total_steps)


# --- distributed -------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def any_flag(self, flag: bool) -> bool:
        """True on every rank if any rank raised ``flag`` (e.g. a signal arrived)."""
        if self.world == 1:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, shared with every rank (e.g. early stopping)."""
        if self.world == 1:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([int(flag)])
        dist.broadcast(t, 0)
        return bool(t.item())


def init_distributed():
    """Start the process group when launched by torchrun/accelerate (WORLD_SIZE > 1)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), None
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        # nccl for the gradients; the per-step flags (any_flag, broadcast_flag) are CPU tensors, which
        # nccl refuses, so CPU tensors go through gloo in the same group
        backend = "cpu:gloo,cuda:nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(rank, world, local_rank), device


def finish_distributed(dist_info: Dist) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


MEGA_BATCH = 50  # length grouping sorts within shuffled windows of this many batches


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Length-grouped batches for one epoch: shuffle, sort within mega-batches, shuffle the batches.

    A pure function of (seed, epoch), which is what makes resume exact.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    window = batch_size * MEGA_BATCH
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
