"""Loading a classifier (base encoder + head + LoRA), counting its trainable parameters, and loading a run.

Where weights come from and what each model family calls its layers is ``textlora.registry``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textlora.device import encoder_attention
from textlora.errors import UserError
from textlora.registry import base_model_id, is_local_base, resolve_model_path

HEAD_NAMES = ("classifier", "score", "pre_classifier")  # what peft's SEQ_CLS task trains in full (it matches "classifier" as a substring) and saves


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"model '{name}': cannot load its tokenizer ({str(e).splitlines()[0][:200]})") from None


def load_base_model(
    name: str,
    label_names: list[str],
    *,
    weights: bool = True,
    attn_implementation: str = "auto",
    head: str = "standard",
    head_hidden: int = 64,
    multi_label: bool = False,
):
    """The base encoder with a fresh classification head for ``label_names``.

    With ``weights=False`` only the config is read and the model is randomly initialised:
    enough to count parameters without downloading weights. ``head`` other than ``standard``
    replaces the model's own head (see textlora.heads). ``multi_label`` marks the config's
    problem type, so that transformers' pipeline applies a sigmoid a class to an exported model.
    """
    from textlora.heads import install_head

    return install_head(_load_base_model(name, label_names, weights, attn_implementation, multi_label), head, head_hidden, name)


def _load_base_model(name: str, label_names: list[str], weights: bool, attn_implementation: str, multi_label: bool = False):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve_model_path(name)
    kwargs = dict(
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
        attn_implementation=encoder_attention(attn_implementation),
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    try:
        if weights:
            from transformers.utils import logging as hf_logging

            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the "classifier newly initialised" report is expected
            hf_logging.disable_progress_bar()  # no "Loading weights" bars around textlora's own output
            try:
                # a folder that is already a classifier for other labels gets a fresh head
                return AutoModelForSequenceClassification.from_pretrained(path, ignore_mismatched_sizes=True, **kwargs)
            finally:
                hf_logging.set_verbosity(verbosity)
                hf_logging.enable_progress_bar()
        config = AutoConfig.from_pretrained(path, **kwargs)
        return AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"model '{name}': cannot load as a sequence classifier ({str(e).splitlines()[0][:200]})") from None


def lora_config(settings, layers_pattern: str | None = None):
    """The peft config for ``settings.method``: LoRA, DoRA (LoRA with ``use_dora``) or VeRA; with
    ``settings.layers`` (a list, resolved) only in those layers (peft's ``layers_to_transform``)."""
    from peft import LoraConfig, TaskType, VeraConfig

    where = {"layers_to_transform": list(settings.layers), "layers_pattern": layers_pattern} if settings.layers is not None else {}
    if settings.method == "vera":
        return VeraConfig(
            task_type=TaskType.SEQ_CLS,
            r=settings.r,
            vera_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
            bias="vera_only" if settings.bias == "lora_only" else settings.bias,
            save_projection=True,  # the frozen random matrices travel with the adapter
            **where,
        )
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias=settings.bias,
        use_dora=settings.method == "dora",
        **where,
    )


def apply_lora(model, settings):
    """Wrap ``model`` with LoRA (or DoRA/VeRA); the classification head is trained in full and saved with the adapter.

    With ``settings.layers`` the adapters and trained biases sit in those layers only, and the layers
    below the lowest of them (with the embeddings) run without dropout: their output then depends on
    the text alone, which is what lets ``textlora.prefix`` compute it once.
    """
    from dataclasses import replace

    from peft import get_peft_model

    from textlora.registry import family_of, lora_groups

    if settings.target_modules is None:  # the family's attention projections (textlora.registry)
        settings = replace(settings, target_modules=list(lora_groups(model)["attention"]))
    if settings.layers is not None:
        settings = replace(settings, layers=layer_indices(settings.layers, model.config.num_hidden_layers))
    family = family_of(model)
    try:
        peft_model = get_peft_model(model, lora_config(settings, family.layers if family else "layer"))
    except ValueError as e:
        raise UserError(f"config: lora.target_modules {settings.target_modules}: {str(e).splitlines()[0][:200]}") from None
    if settings.layers is not None:
        _freeze_outside(peft_model, settings.layers)
    return peft_model


def layer_indices(layers: int | list[int], num_layers: int) -> list[int]:
    """``lora.layers`` as sorted layer indices: an integer k is the top k of ``num_layers``; a bad value is one line."""
    if isinstance(layers, int):
        if not 1 <= layers <= num_layers:
            raise UserError(f"config: lora.layers: expected a number of top layers in 1..{num_layers} (the model has {num_layers}), found {layers}")
        return list(range(num_layers - layers, num_layers))
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad or not layers:
        raise UserError(f"config: lora.layers: expected layer indices in 0..{num_layers - 1}, found {list(layers)}")
    return sorted(set(layers))


def _freeze_outside(model, layers: list[int]) -> None:
    """Only ``layers`` and the head train (peft's bias modes reach every bias; the pooler's and the
    embeddings' are frozen again); the layers below the lowest one and the embeddings run without dropout."""
    import torch

    from textlora.prefix import layer_list

    _, _, blocks = layer_list(model)
    inside = {id(p) for i in layers for p in blocks[i].parameters()}
    base = model.get_base_model()
    for name, p in base.named_parameters():
        if p.requires_grad and id(p) not in inside and not any(f".{h}." in f".{name}" for h in HEAD_NAMES):
            p.requires_grad_(False)
    below = [blocks[i] for i in range(min(layers))] + [m for n, m in base.named_modules() if n.endswith("embeddings")]
    for part in below:
        for m in part.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0


@dataclass
class Breakdown:
    lora: int
    head: int
    bias: int
    other: int
    frozen: int

    @property
    def total(self) -> int:
        return self.lora + self.head + self.bias + self.other

    def as_dict(self) -> dict:
        return {"lora": self.lora, "head": self.head, "bias": self.bias, "other": self.other, "total": self.total, "frozen": self.frozen}

    def format(self, budget: int | None = None) -> str:
        lines = [
            f"  adapter (LoRA)    {self.lora:>12,}",
            f"  classifier head   {self.head:>12,}",
            f"  biases            {self.bias:>12,}",
            f"  other             {self.other:>12,}",
            f"  total trainable   {self.total:>12,}",
        ]
        if budget is not None:
            verdict = "within" if self.total <= budget else "OVER"
            lines.append(f"  budget            {budget:>12,}  ({verdict} budget, {100 * self.total / budget:.1f}% used)")
        lines.append(f"  frozen            {self.frozen:>12,}")
        return "\n".join(lines)


def count_trainable(model) -> Breakdown:
    """Split the trainable parameters into adapter weights (LoRA, DoRA, VeRA), the classifier head, biases and the rest."""
    lora = head = bias = other = frozen = 0
    for name, p in model.named_parameters():
        n = p.numel()
        if not p.requires_grad:
            frozen += n
        elif "lora_" in name or "vera_lambda" in name:
            lora += n
        elif any(f".{h}." in f".{name}" for h in HEAD_NAMES):
            head += n
        elif name.endswith("bias"):
            bias += n
        else:
            other += n
    return Breakdown(lora, head, bias, other, frozen)


def check_budget(breakdown: Breakdown, budget: int) -> None:
    if breakdown.total > budget:
        raise UserError(
            f"budget: {breakdown.total:,} trainable parameters exceed budget.max_trainable_params {budget:,} "
            f"(LoRA {breakdown.lora:,}, head {breakdown.head:,}, biases {breakdown.bias:,}, other {breakdown.other:,})"
        )


def build_model(config, label_names: list[str], *, weights: bool = True):
    """Base model + LoRA as a resolved config says (see textlora.resolve); returns (peft_model, breakdown)."""
    import torch

    from textlora.heads import install_head

    if config.lora.auto or config.model.head == "auto" or config.lora.target_modules is None:
        raise ValueError("build_model takes a resolved config: pass it through textlora.resolve.resolve first")
    model = load_base_model(
        config.model.name, label_names, weights=weights, attn_implementation=config.model.attn_implementation, multi_label=config.data.multi_label
    )
    install_head(model, config.model.head, config.model.head_hidden, config.model.name)
    if config.model.dropout is not None:  # on CPUs, dropout's random masks can cost as much as the matmuls
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = config.model.dropout
    model = apply_lora(model, config.lora)
    # peft records the folder the weights were read from; a run records the portable id instead
    model.peft_config["default"].base_model_name_or_path = (
        str(Path(config.model.name).expanduser().resolve()) if is_local_base(config.model.name) else base_model_id(config.model.name)
    )
    return model, count_trainable(model)


# --- loading a run directory ---------------------------------------------------------


def load_classifier(run_dir, *, merge: bool = True):
    """Load a run directory (a path or an opened ``run.Run``): returns (model in eval mode, tokenizer, label_names, config).

    With ``merge`` the LoRA weights are folded into the base weights for faster inference.
    """
    from textlora.run import as_run

    opened = as_run(run_dir)
    model, tokenizer = load_model(opened, merge=merge)
    return model, tokenizer, opened.labels, opened.config


def load_model(opened, *, merge: bool = True):
    """(model in eval mode, tokenizer) of an opened ``run.Run``; ``merge`` folds LoRA into the base weights."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    run, config, label_names = opened.path, opened.config, opened.labels
    base = load_base_model(
        config.model.name,
        label_names,
        attn_implementation=config.model.attn_implementation,
        head=config.model.head,
        head_hidden=config.model.head_hidden,
        multi_label=config.data.multi_label,
    )
    model = PeftModel.from_pretrained(base, str(run))
    # peft 0.21's VeRA unload assumes every module it trains in full has a .weight, which
    # RoBERTa's or textlora's heads lack; so VeRA runs unmerged (a little slower), LoRA/DoRA merge.
    if merge and config.lora.method != "vera":
        model = model.merge_and_unload()
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(run))
    return model, tokenizer
