"""Resolving a config: every setting left to textlora (``auto``, a percentile) becomes a value, once.

:func:`resolve` runs before the model is built; ``models.build_model`` takes its result and never
plans. The resolved config is what a run saves in config.yaml and its checkpoints.
"""

from __future__ import annotations

import copy

import numpy as np

from textlora.runtime import encode_texts


def resolve(config, label_names: list[str], train_texts: list):
    """A copy of ``config`` with nothing left to resolve (``config`` itself is not modified).

    - ``lora: auto`` and ``model.head: auto``: the budget planner's choice for this model's shapes
      and this number of classes (the model is built from its config, without weights);
    - ``model.max_length_percentile``: ``model.max_length`` becomes that percentile of the
      training texts' token lengths (a multiple of 8, at most the configured ``max_length``);
    - ``model.max_length: auto``: the 90th percentile of the training texts' token lengths (a
      multiple of 8, at most 512 and the model's position limit).
    """
    from textlora.budget import planned
    from textlora.models import load_base_model, load_tokenizer

    config = copy.deepcopy(config)
    if config.lora.auto or config.model.head == "auto":
        config = planned(config, load_base_model(config.model.name, label_names, weights=False, multi_label=config.data.multi_label))
    if config.model.max_length == "auto":
        config.model.max_length = length_from_percentile(load_tokenizer(config.model.name), train_texts, auto_length_cap(config.model.name), AUTO_PERCENTILE)
    if config.model.max_length_percentile is not None:
        tokenizer = load_tokenizer(config.model.name)
        config.model.max_length = length_from_percentile(tokenizer, train_texts, config.model.max_length, config.model.max_length_percentile)
        config.model.max_length_percentile = None
    return config


AUTO_PERCENTILE = 90  # `max_length: auto` covers 90% of the texts whole; the rest are truncated
AUTO_MAX = 512  # and never more tokens than this


def auto_length_cap(model_name: str) -> int:
    """The most tokens ``max_length: auto`` may choose for a model: 512, or its position limit if smaller."""
    from textlora.models import load_tokenizer

    limit = getattr(load_tokenizer(model_name), "model_max_length", AUTO_MAX) or AUTO_MAX
    return int(min(AUTO_MAX, limit))


def length_from_percentile(tokenizer, texts: list[str], cap: int, percentile: float) -> int:
    """The ``percentile`` of the texts' token lengths, rounded up to a multiple of 8, at most ``cap``."""
    sample = texts[:: max(1, len(texts) // 5000)]  # a few thousand texts give the percentile well
    lengths = [len(ids) for ids in encode_texts(tokenizer, sample, cap)]
    return int(min(cap, max(8, -(-int(np.percentile(lengths, percentile)) // 8) * 8)))
