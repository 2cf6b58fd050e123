"""Target objectives: while the classifier learns the labelled source rows, the same LoRA also learns
from unlabelled target texts (``train.target_objective`` with ``data.target_texts``).

- ``contrastive`` (SimCSE, Gao et al. 2021): each target text passes twice under dropout; the two
  mean-pooled last-layer states of a text are pulled together and pushed away from the other texts
  of its batch (InfoNCE, temperature 0.05). Dropout is the only augmentation, so these passes run
  with at least SimCSE's p = 0.1 in every dropout layer even where ``model.dropout`` turns it off
  for the classification loss (with p = 0 the two views are one, and the loss only pushes texts
  apart). No extra weights; with ``lora.layers`` it runs from the prefix cache (dropout below the
  trained layers is off there, so the noise comes from the trained layers).
- ``mlm`` (UDALM, Karouzos et al. 2021): 15% of each target text's tokens are masked (80% the mask
  token, 10% a random token, 10% kept) and predicted by a masked-LM head made for training (dense,
  GELU, LayerNorm, a decoder tied to the frozen word embeddings). Sentence-transformers checkpoints
  ship without such a head, so it always starts fresh; it is dropped after training, and the run stays
  an ordinary peft adapter. Masked inputs are not the cached ones: its batches run the whole encoder.

The loss of a step is ``(1 - w) * classification + w * target``; ``w`` is ``train.target_weight``, by
default ``m / (n + m)`` for n training rows and m target texts (UDALM's lambda = n / (n + m) on the
classification loss). Target batches are a pure function of (seed, step), so resume stays exact.
Target texts that are also dev or eval-set texts are left out: those only measure.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from textlora.errors import UserError

KINDS = ("none", "contrastive", "mlm")
MIN_TEXTS = 200  # fewer target texts than this: the objective is skipped with a line saying so
TEMPERATURE = 0.05  # SimCSE's
VIEW_DROPOUT = 0.1  # SimCSE's: the least dropout of the contrastive passes
MASK_RATE = 0.15  # BERT's and UDALM's


@dataclass
class TargetObjective:
    """The target texts (token ids), how their batches are drawn, and the loss on one batch."""

    kind: str
    weight: float  # w in (1 - w) * classification + w * target
    encoded: list  # token ids of each target text
    batch_size: int
    seed: int
    head: object = None  # mlm: the masked-LM head (a torch module trained with the LoRA)
    mask_id: int | None = None
    vocab_size: int = 0
    special_ids: list = field(default_factory=list)
    _cycle: tuple = (-1, None)  # (cycle, its batches): the batches of the cycle in use
    _lengths: object = None  # tokens a text, computed with the first batch

    def batch(self, draw: int) -> list:
        """The ``draw``-th target batch (token ids): length-grouped passes over the texts, each pass
        shuffled by (seed, pass), so a batch depends on its number alone."""
        from textlora.runtime import epoch_batches

        if self._cycle[1] is None:
            self._lengths = np.array([len(ids) for ids in self.encoded])
            self._cycle = (0, epoch_batches(self._lengths, self.batch_size, self.seed + 7919, 0))
        per_cycle = len(self._cycle[1])  # the same count every pass
        cycle, j = divmod(draw, per_cycle)
        if cycle != self._cycle[0]:
            self._cycle = (cycle, epoch_batches(self._lengths, self.batch_size, self.seed + 7919, cycle))
        return [self.encoded[i] for i in self._cycle[1][j]]

    def loss(self, model, seqs: list, pad_id: int, device, attachment=None):
        """The target loss of one batch (a scalar tensor), with ``model`` in training mode."""
        from textlora.runtime import pad_batch

        ids, mask = pad_batch(seqs, pad_id)
        ids, mask = ids.to(device), mask.to(device)
        if self.kind == "contrastive":
            with dropout_at_least(model, VIEW_DROPOUT):
                return contrastive_loss(_pooled(model, ids, mask), _pooled(model, ids, mask))
        masked, targets = mask_tokens(ids, mask, self.mask_id, self.vocab_size, self.special_ids)
        whole = attachment.aside() if attachment is not None else contextlib.nullcontext()  # masked texts are not in the prefix cache
        with whole:
            states = model(input_ids=masked, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        return self.head.loss(states, targets)


@contextlib.contextmanager
def dropout_at_least(model, p: float):
    """Every dropout layer of ``model`` at probability ``p`` or more for a while (then as it was)."""
    import torch

    changed = [(m, m.p) for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p < p]
    for m, _ in changed:
        m.p = p
    try:
        yield
    finally:
        for m, old in changed:
            m.p = old


def _pooled(model, ids, mask):
    """Mean of the last layer's states over each text's tokens (how sentence-transformers pool)."""
    states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1].float()
    m = mask.unsqueeze(-1).float()
    return (states * m).sum(1) / m.sum(1).clamp(min=1)


def contrastive_loss(a, b, temperature: float = TEMPERATURE):
    """InfoNCE over a batch: row i of ``a`` must find row i of ``b`` among all rows of ``b``."""
    import torch

    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(a), device=a.device))


def mask_tokens(ids, mask, mask_id: int, vocab_size: int, special_ids: list):
    """BERT's masking: ``MASK_RATE`` of the real (non-special) tokens are chosen; of those 80% become
    the mask token, 10% a random token, 10% stay. Returns (masked ids, targets: -100 where not chosen).
    At least one token a batch is chosen, so the loss is always defined."""
    import torch

    can = mask.bool() & ~torch.isin(ids, torch.as_tensor(special_ids, dtype=ids.dtype, device=ids.device))
    chosen = (torch.rand(ids.shape, device=ids.device) < MASK_RATE) & can
    if not chosen.any() and can.any():
        chosen.view(-1)[torch.nonzero(can.view(-1))[0, 0]] = True
    targets = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, device=ids.device)
    masked = ids.clone()
    masked[chosen & (roll < 0.8)] = mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[swap] = torch.randint(vocab_size, (int(swap.sum()),), device=ids.device)
    return masked, targets


def mlm_head(model):
    """A fresh masked-LM head for ``model`` (dense, GELU, LayerNorm, decoder tied to its word embeddings)."""
    import torch

    class MaskedLMHead(torch.nn.Module):
        def __init__(self, embeddings: torch.nn.Embedding, eps: float):
            super().__init__()
            hidden = embeddings.weight.shape[1]
            self.dense = torch.nn.Linear(hidden, hidden)
            self.norm = torch.nn.LayerNorm(hidden, eps=eps)
            self.bias = torch.nn.Parameter(torch.zeros(embeddings.weight.shape[0]))
            self.embeddings = [embeddings]  # a list: tied, not a submodule (neither trained nor saved here)

        def loss(self, states, targets):
            chosen = targets != -100
            h = self.norm(torch.nn.functional.gelu(self.dense(states[chosen].float())))
            logits = h @ self.embeddings[0].weight.float().T + self.bias
            return torch.nn.functional.cross_entropy(logits, targets[chosen])

    return MaskedLMHead(model.get_input_embeddings(), getattr(model.config, "layer_norm_eps", 1e-12))


def target_texts(data_cfg, splits) -> list[str]:
    """``data.target_texts`` less the texts that the dev split or an eval set holds, each text once."""
    from textlora.data import read_texts, same_text

    frame = read_texts(data_cfg.target_texts, data_cfg.target_text_column, None, require_labels=False)
    held = {same_text(t) for t in splits.val_texts} | {same_text(t) for texts, _ in splits.eval_sets.values() for t in texts}
    seen, out = set(), []
    for t in frame.texts:
        key = same_text(t)
        if key not in held and key not in seen:
            seen.add(key)
            out.append(t)
    return out


def make_objective(config, splits, tokenizer, model) -> tuple[TargetObjective | None, dict | None]:
    """The run's target objective (None when there is none or it is skipped) and what the run's metrics say of it."""
    from textlora.runtime import encode_texts

    kind = config.train.target_objective
    if kind == "none":
        return None, None
    texts = target_texts(config.data, splits)
    if len(texts) < MIN_TEXTS:
        why = f"{len(texts)} target texts in {config.data.target_texts} (after leaving out dev and eval-set texts); it needs at least {MIN_TEXTS}"
        print(f"train.target_objective: {kind} skipped: {why}", flush=True)
        return None, {"kind": kind, "used": False, "why": why}
    n, m = len(splits.train_texts), len(texts)
    weight = m / (n + m) if config.train.target_weight == "auto" else float(config.train.target_weight)
    encoded = encode_texts(tokenizer, texts, config.model.max_length, config.model.truncation)
    obj = TargetObjective(kind, weight, encoded, config.train.target_batch_size, config.seed)
    info = {"kind": kind, "used": True, "texts": m, "weight": round(weight, 4), "batch_size": obj.batch_size}
    if kind == "mlm":
        if tokenizer.mask_token_id is None:
            raise UserError(f"config: train.target_objective: mlm needs a tokenizer with a mask token; {config.model.name}'s has none (use contrastive)")
        obj.head = mlm_head(model)
        obj.mask_id, obj.vocab_size = tokenizer.mask_token_id, model.get_input_embeddings().weight.shape[0]
        obj.special_ids = sorted(set(tokenizer.all_special_ids))
        info["head_params"] = sum(p.numel() for p in obj.head.parameters())
    print(
        f"target objective: {kind} on {m:,} target texts, weight {weight:.3f}, {obj.batch_size} a step"
        + (f"; a masked-LM head of {info['head_params']:,} parameters for training only" if kind == "mlm" else ""),
        flush=True,
    )
    return obj, info
