"""Resolving settings: every setting left to textlora (``auto``, a percentile, a family default)
becomes a value here and nowhere else, with one meaning a key.

- ``model.max_length: auto`` (classifier): the 90th percentile of the token lengths of the texts
  the classifier is made for: the target texts where a pipeline names them, else the training
  texts; a multiple of 8, at most 512 and the model's position limit.
- ``adapt.max_length: auto`` (causal LM): the same percentile of the texts it adapts on, at most 256.
- ``generate.length_mean/length_std: auto``: the mean and spread of the target texts' lengths in the
  LM's tokens, so generated rows are as long as the target's.
- ``lora.target_modules`` unset: the model family's attention projections (textlora.registry).
- ``lora: auto`` and ``model.head: auto``: the budget planner's choice (textlora.budget).
- ``budget.max_train_minutes`` with ``lora.layers`` unset: the most top layers whose estimate,
  measured on this machine, fits the minutes (textlora.timing); the planner then fills the
  parameter budget within them.

:func:`resolve` runs before the classifier is built (``models.build_model`` takes its result and
never plans); a run saves the resolved config in config.yaml and its checkpoints, and a pipeline
writes every stage's resolved settings to pipeline.json.
"""

from __future__ import annotations

import copy

import numpy as np

from textlora.runtime import encode_texts


def resolve(config, label_names: list[str], train_texts: list, length_texts: list | None = None, *, eval_rows: int = 0, fit_time: bool = True):
    """A copy of ``config`` with nothing left to resolve (``config`` itself is not modified).

    - ``lora: auto`` and ``model.head: auto``: the budget planner's choice for this model's shapes
      and this number of classes (the model is built from its config, without weights);
    - ``model.max_length_percentile``: ``model.max_length`` becomes that percentile of the
      training texts' token lengths (a multiple of 8, at most the configured ``max_length``);
    - ``model.max_length: auto``: the 90th percentile of the token lengths of ``length_texts``
      (the texts the classifier is made for; default: the training texts), a multiple of 8, at
      most 512 and the model's position limit;
    - ``lora.target_modules`` unset: the model family's attention projections;
    - ``lora.layers`` as a number k: the indices of the top k layers;
    - ``budget.max_train_minutes`` with ``lora.layers`` unset (and ``fit_time``): the layers that
      fit the minutes, timed on this machine for ``train_texts`` and ``eval_rows`` rows scored
      each epoch (a resumed run passes ``fit_time=False`` and keeps the layers it started with).
    """
    from textlora.budget import planned
    from textlora.models import load_base_model, load_tokenizer

    config = copy.deepcopy(config)
    if fit_time and config.budget.max_train_minutes is not None and config.lora.layers is None:
        config.lora.layers, _ = fit_layers(config, label_names, train_texts, length_texts, eval_rows)
    if config.lora.auto or config.model.head == "auto":
        config = planned(config, load_base_model(config.model.name, label_names, weights=False, multi_label=config.data.multi_label))
    if config.lora.target_modules is None:
        config.lora.target_modules = default_targets(config.model.name)
    if isinstance(config.lora.layers, int):  # the top k: as layer indices, which is what peft records
        from textlora.models import layer_indices

        config.lora.layers = layer_indices(config.lora.layers, _model_config(config.model.name).num_hidden_layers)
    if config.model.max_length == "auto":
        config.model.max_length = classifier_length(config.model.name, train_texts if length_texts is None else length_texts)
    if config.model.max_length_percentile is not None:
        tokenizer = load_tokenizer(config.model.name)
        config.model.max_length = length_from_percentile(tokenizer, train_texts, config.model.max_length, config.model.max_length_percentile)
        config.model.max_length_percentile = None
    return config


def fit_layers(config, label_names: list[str], train_texts: list, length_texts: list | None, eval_rows: int):
    """(``lora.layers``, the timing) for ``budget.max_train_minutes``: the most top layers whose
    measured estimate fits (None: every layer), with a line that says what was chosen and the estimate."""
    import os

    from textlora.timing import choose_layers, time_plan

    minutes = config.budget.max_train_minutes
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print(f"budget.max_train_minutes: not applied under torchrun ({os.environ['WORLD_SIZE']} processes would each time the model); set lora.layers", flush=True)
        return None, None
    every = copy.deepcopy(config)
    every.budget.max_train_minutes = None
    every = resolve(every, label_names, train_texts, length_texts)
    timing = time_plan(every, label_names, train_texts, eval_rows=eval_rows)
    cache = config.train.prefix_cache != "off"
    k, fits = choose_layers(timing, minutes, config.train.epochs, cache)
    verdict = "fits" if fits else f"does not fit even in the top layer alone; training with it ({timing.total_minutes(k, config.train.epochs, cache):.1f} min)"
    print(f"budget.max_train_minutes {minutes:g}: LoRA on {'all' if k == timing.num_layers else f'the top {k} of'} {timing.num_layers} layers {verdict}; "
          + timing.describe(k, config.train.epochs, cache), flush=True)
    return (None if k == timing.num_layers else k), timing


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


def classifier_length(model_name: str, texts: list) -> int:
    """``model.max_length: auto``: the 90th percentile of ``texts``' token lengths (see the module docstring)."""
    from textlora.models import load_tokenizer

    return length_from_percentile(load_tokenizer(model_name), texts, auto_length_cap(model_name), AUTO_PERCENTILE)


LM_AUTO_MAX = 256  # adapt.max_length: auto never chooses more (the LM's cost grows with the square of it)


def lm_length(tokenizer, texts: list[str]) -> int:
    """``adapt.max_length: auto``: the 90th percentile of the texts' token lengths in the LM's tokens, at most 256."""
    return length_from_percentile(tokenizer, texts, LM_AUTO_MAX, AUTO_PERCENTILE)


def generation_lengths(tokenizer, texts: list[str], cap: int) -> tuple[float, float]:
    """``generate.length_mean/length_std: auto``: the mean and spread of the texts' lengths in the LM's
    tokens (each clamped to ``cap``), so that generated rows are as long as the target's."""
    sample = texts[:: max(1, len(texts) // 3000)]
    lengths = np.minimum([len(ids) for ids in tokenizer(sample, verbose=False)["input_ids"]], cap)
    return float(round(lengths.mean(), 1)), float(round(max(lengths.std(), 1.0), 1))


def _model_config(model_name: str):
    from transformers import AutoConfig

    from textlora.errors import UserError
    from textlora.registry import resolve_model_path

    try:
        return AutoConfig.from_pretrained(resolve_model_path(model_name))
    except (OSError, ValueError) as e:
        raise UserError(f"model '{model_name}': cannot read its config ({str(e).splitlines()[0][:200]})") from None


def default_targets(model_name: str) -> list[str]:
    """The LoRA targets of an unset ``lora.target_modules``: the family's attention projections (BERT's for an unknown family)."""
    from textlora.registry import BERT_GROUPS, family_for

    family = family_for(_model_config(model_name).model_type)
    return family.default_targets if family else list(BERT_GROUPS["attention"])
