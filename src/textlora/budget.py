"""The budget planner: trainable-parameter counts, and the plan that fills a budget well.

The planner counts analytically from the model's module shapes, exactly as peft selects
modules (a target matches a module whose name is the target or ends in ``.target``), so it
can rank dozens of options in milliseconds; the chosen plan is then built with peft and its
count checked against peft's own. The `budget` verb that prints plans and estimates is textlora.plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from textlora.errors import UserError
from textlora.registry import BERT_GROUPS, lora_groups

# Module groups the planner chooses among, broadest first (broader coverage wins ties: adapting
# every linear layer beats spending the same parameters on a few, as QLoRA and later work found).
GROUPS = BERT_GROUPS  # each family's own, named as it names its layers: textlora.registry


def groups_for(model) -> dict[str, list[str]]:
    """The module groups, named as ``model`` names its layers (its family's, textlora.registry)."""
    return lora_groups(model)


RANKS = (64, 48, 40, 32, 28, 24, 20, 16, 12, 10, 8, 6, 4, 2, 1)
VERA_RANKS = (1024, 512, 256, 128, 64, 32)  # VeRA's rank only sizes its shared frozen matrices, so it runs high
BIASES = ("all", "lora_only", "none")
HEAD_SHARE = 0.10  # the planner keeps the model's own head while it costs at most this share of the budget


@dataclass
class Plan:
    head_kind: str
    method: str
    group: str
    target_modules: list[str]
    r: int
    bias: str
    lora: int
    head: int
    biases: int

    @property
    def total(self) -> int:
        return self.lora + self.head + self.biases


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _shapes(model, head_kind: str = "standard", head_hidden: int = 64, layers: list[int] | None = None):
    """(linear modules as (name, in, out, has_bias), head parameter count, all biases outside the head).

    A non-standard head on a BERT-like model also removes its pooler (see textlora.heads), so the
    pooler's layers are left out then. With ``layers`` (``lora.layers`` as indices) the other
    transformer blocks and the embeddings are left out: nothing in them trains.
    """
    import torch

    from textlora.heads import classifier_input_dims, head_params
    from textlora.models import HEAD_NAMES

    skip = ()
    if head_kind != "standard" and classifier_input_dims(model) == 2:
        skip = (f"{model.base_model_prefix}.pooler",)
    if layers is not None:
        skip += _outside(model, layers)
    linears, head, biases = [], 0, {}
    for name, module in model.named_modules():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        in_head = any(name == h or name.startswith(h + ".") for h in HEAD_NAMES)
        if in_head:
            head += sum(p.numel() for p in module.parameters(recurse=False))
            continue
        if isinstance(module, torch.nn.Linear):
            linears.append((name, module.in_features, module.out_features, module.bias is not None))
        for pname, p in module.named_parameters(recurse=False):
            if pname == "bias":
                biases[name] = p.numel()
    if head_kind != "standard":
        head = head_params(head_kind, model.config.hidden_size, model.config.num_labels, head_hidden)
    return linears, head, biases


def _outside(model, layers: list[int]) -> tuple[str, ...]:
    """Module names of everything outside the transformer blocks in ``layers`` and the head: nothing there trains."""
    from textlora.models import HEAD_NAMES
    from textlora.prefix import layer_list

    _, _, blocks = layer_list(model)
    names = {id(m): n for n, m in model.named_modules()}
    inside = [names[id(blocks[i])] for i in layers]
    keep = lambda n: any(n == k or n.startswith(k + ".") or k.startswith(n + ".") for k in inside) or any(n == h or n.startswith(h + ".") for h in HEAD_NAMES)  # noqa: E731
    return tuple(n for n in names.values() if n and not keep(n))


def _adapter_count(method: str, r: int, fan_in: int, fan_out: int) -> int:
    if method == "vera":  # trained: a scaling vector over the rank and one over the outputs
        return r + fan_out
    return r * (fan_in + fan_out) + (fan_out if method == "dora" else 0)  # DoRA adds a magnitude per output


def count_plan(
    model,
    targets: list[str],
    r: int,
    bias: str,
    head_kind: str = "standard",
    method: str = "lora",
    head_hidden: int = 64,
    shapes=None,
    layers: list[int] | None = None,
) -> tuple[int, int, int]:
    """(adapter, head, bias) trainable counts that peft would give ``model`` with these settings."""
    linears, head, biases = shapes or _shapes(model, head_kind, head_hidden, layers)
    chosen = [(n, i, o, b) for n, i, o, b in linears if any(_matches(n, t) for t in targets)]
    lora = sum(_adapter_count(method, r, i, o) for _, i, o, _ in chosen)
    if bias == "all":
        nb = sum(biases.values())
    elif bias == "lora_only":
        nb = sum(o for _, _, o, b in chosen if b)
    else:
        nb = 0
    return lora, head, nb


def choose_head(model, budget: int, head_hidden: int = 64) -> str:
    """The head ``model.head: auto`` resolves to.

    The pooling the model was trained with where its folder says (sentence-transformers: mean);
    else the model's own head while it costs at most HEAD_SHARE of the budget (BERT's: one small
    linear layer); else a linear layer on the first token (roberta-base's own head alone is 592k).
    """
    from textlora.heads import declared_pooling

    if declared_pooling(getattr(model.config, "_name_or_path", "") or "") == "mean":
        return "mean"
    _, head, _ = _shapes(model)
    return "standard" if head <= HEAD_SHARE * budget else "linear"


def plan_options(
    model, budget: int, head_kind: str = "standard", method: str = "lora", head_hidden: int = 64, layers: list[int] | None = None
) -> list[Plan]:
    """Every (group, rank, bias) option for this head and method that fits ``budget``, best first."""
    shapes = _shapes(model, head_kind, head_hidden, layers)
    options = []
    for gi, (group, targets) in enumerate(groups_for(model).items()):
        for r in VERA_RANKS if method == "vera" else RANKS:
            for bias in BIASES:
                lora, head, nb = count_plan(model, targets, r, bias, head_kind, method, head_hidden, shapes)
                if lora and lora + head + nb <= budget:
                    options.append((gi, -r, -nb, Plan(head_kind, method, group, targets, r, bias, lora, head, nb)))
    options.sort(key=lambda t: t[:3])
    return [t[3] for t in options]


def choose_plan(
    model, budget: int, head_kind: str = "standard", method: str = "lora", head_hidden: int = 64, layers: list[int] | None = None
) -> Plan:
    """The broadest module group at the largest rank that fits, then the most biases that still fit."""
    if head_kind == "auto":
        head_kind = choose_head(model, budget, head_hidden)
    options = plan_options(model, budget, head_kind, method, head_hidden, layers)
    if not options:
        linears, head, _ = _shapes(model, head_kind, head_hidden, layers)
        smallest_group = groups_for(model)["query+value"]  # the smallest option: rank 1 (VeRA: its lowest rank) there, no biases
        r = VERA_RANKS[-1] if method == "vera" else 1
        smallest = head + sum(_adapter_count(method, r, i, o) for n, i, o, _ in linears if any(_matches(n, t) for t in smallest_group))
        raise UserError(
            f"budget: {budget:,} trainable parameters cannot hold the {head_kind} classifier head and the smallest {method} adapter on this model (needs at least {smallest:,})"
        )
    return options[0]


def planned(config, model):
    """A copy of ``config`` with ``lora`` and ``model.head`` taken from the plan where they say ``auto``.

    ``model`` is the base model with its standard head (random weights are enough). ``config`` is
    not modified.
    """
    import copy

    config = copy.deepcopy(config)
    budget = config.budget.max_trainable_params
    if config.model.head == "auto":
        config.model.head = choose_head(model, budget, config.model.head_hidden)
    if config.lora.auto:
        config = with_plan(config, choose_plan(model, budget, config.model.head, config.lora.method, config.model.head_hidden, plan_layers(config, model)))
    return config


def plan_layers(config, model) -> list[int] | None:
    """``lora.layers`` as indices for the planner (None: every layer)."""
    from textlora.models import layer_indices

    return None if config.lora.layers is None else layer_indices(config.lora.layers, model.config.num_hidden_layers)


def with_plan(config, plan: Plan):
    """A copy of ``config`` with ``plan`` in it (head, rank, alpha = 2r, targets, bias); nothing is left on auto."""
    import copy

    config = copy.deepcopy(config)
    config.model.head = plan.head_kind
    config.lora.r, config.lora.alpha = plan.r, 2 * plan.r
    config.lora.target_modules, config.lora.bias = plan.target_modules, plan.bias
    config.lora.auto = False
    return config
