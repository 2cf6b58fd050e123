"""Classification heads: the model's own, or a small one on the encoder's token states.

``standard`` keeps what ``AutoModelForSequenceClassification`` builds (roberta-base's is a
768x768 dense layer plus the output layer: 592k parameters, most of a 1M budget). The others
replace it with a head that reads the encoder's last token states directly:

- ``linear``: one linear layer on the first token ([CLS] / <s>);
- ``mlp``: the first token, a ``head_hidden``-wide tanh layer, then the output layer;
- ``mean``: one linear layer on the mean of the token states under the attention mask, the
  pooling sentence-transformers models (such as all-MiniLM-L6-v2) were trained with.

The replacement keeps the name ``classifier``, so peft trains it in full and saves it with the
adapter, and a run directory rebuilds it from ``model.head`` in its config.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from textlora.errors import UserError

HEADS = ("standard", "linear", "mlp", "mean")


class _MaskSlot:
    """The current batch's attention mask, set by a pre-forward hook on the model.

    peft deep-copies the head it trains; the slot is shared, not copied, so every copy sees the
    mask. One forward at a time per model (training, predict and the server's batcher all are).
    """

    def __init__(self) -> None:
        self.mask = None

    def __deepcopy__(self, memo):
        return self


class PooledHead(nn.Module):
    def __init__(self, kind: str, hidden: int, num_labels: int, head_hidden: int, dropout: float, slot: _MaskSlot) -> None:
        super().__init__()
        self.kind, self.slot = kind, slot
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, head_hidden) if kind == "mlp" else None
        self.out_proj = nn.Linear(head_hidden if kind == "mlp" else hidden, num_labels)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if self.kind == "mean":
            mask = self.slot.mask
            if mask is None:
                x = states.mean(dim=1)
            else:
                m = mask[:, : states.shape[1]].unsqueeze(-1).to(states.dtype)
                x = (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
        else:
            x = states[:, 0]
        if self.dense is not None:
            x = torch.tanh(self.dense(self.dropout(x)))
        return self.out_proj(self.dropout(x))


def head_params(kind: str, hidden: int, num_labels: int, head_hidden: int) -> int:
    """Trainable parameters of a non-standard head."""
    if kind == "mlp":
        return hidden * head_hidden + head_hidden + head_hidden * num_labels + num_labels
    return hidden * num_labels + num_labels


def declared_pooling(path: str) -> str | None:
    """``mean`` or ``cls`` when a sentence-transformers folder says how it pools, else None."""
    cfg = Path(path) / "1_Pooling" / "config.json"
    if not cfg.is_file():
        return None
    try:
        modes = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return None
    if modes.get("pooling_mode_mean_tokens"):
        return "mean"
    return "cls" if modes.get("pooling_mode_cls_token") else None


def classifier_input_dims(model) -> int:
    """How many dimensions the classifier's input has (2: pooled vectors, 3: token states)."""
    seen = []
    handle = model.classifier.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dim()))
    try:
        with torch.no_grad():
            model(input_ids=torch.full((1, 4), 1, dtype=torch.long), attention_mask=torch.ones(1, 4, dtype=torch.long))
    finally:
        handle.remove()
    return seen[0]


def install_head(model, kind: str, head_hidden: int, model_name: str):
    """Replace ``model.classifier`` with a ``kind`` head reading the token states (in place; returns model)."""
    if kind == "standard":
        return model
    if not isinstance(getattr(model, "classifier", None), nn.Module):
        raise UserError(f"model.head {kind}: model '{model_name}' has no 'classifier' module to replace; use model.head: standard")
    base = getattr(model, model.base_model_prefix, None)
    if not isinstance(base, nn.Module):
        raise UserError(f"model.head {kind}: cannot find the encoder of model '{model_name}'; use model.head: standard")
    if classifier_input_dims(model) == 2:  # BERT-like: a pooler sits between the tokens and the classifier
        if getattr(base, "pooler", None) is None:
            raise UserError(f"model.head {kind}: cannot reach the token states of model '{model_name}'; use model.head: standard")
        base.pooler = nn.Identity()
    cfg = model.config
    dropout = getattr(cfg, "classifier_dropout", None)
    dropout = getattr(cfg, "hidden_dropout_prob", 0.1) if dropout is None else dropout
    slot = _MaskSlot()
    model.classifier = PooledHead(kind, cfg.hidden_size, cfg.num_labels, head_hidden, dropout, slot)

    def capture_mask(_module, args, kwargs):
        slot.mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    base.register_forward_pre_hook(capture_mask, with_kwargs=True)  # the encoder, which its parent calls as a module
    if classifier_input_dims(model) != 3:
        raise UserError(f"model.head {kind}: the classifier of model '{model_name}' does not see token states; use model.head: standard")
    return model
