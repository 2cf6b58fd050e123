"""The budget verb: trainable-parameter breakdowns, and a planner that fills a budget well.

The planner counts analytically from the model's module shapes, exactly as peft selects
modules (a target matches a module whose name is the target or ends in ``.target``), so it
can rank dozens of options in milliseconds; the chosen plan is then built with peft and its
count checked against peft's own.
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


def _label_names(config) -> list[str]:
    from textlora.data import label_names_for, read_options, read_texts

    if config.data.label_names:
        return config.data.label_names
    frame = read_texts(config.data.train, config.data.text_column, config.data.label_column, **read_options(config.data))
    return label_names_for(frame.labels, None, config.data.train)


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


def _plan_table(config, base, num_labels: int) -> tuple[str, Plan]:
    """The plan, the options it chose among, and how to use it; and the plan itself."""
    from textlora.heads import HEADS

    budget, hidden = config.budget.max_trainable_params, config.model.head_hidden
    layers = plan_layers(config, base)
    chosen = choose_plan(base, budget, config.model.head, config.lora.method, hidden, layers)
    row = "  {:<9} {:<5} {:<17} {:>4} {:<10} {:>10} {:>9} {:>9} {:>10}{}"
    lines = [
        f"plan for {config.model.name}, {num_labels} classes, budget {budget:,}:",
        row.format("head", "kind", "group", "r", "bias", "adapter", "head", "biases", "total", ""),
    ]

    def show(p: Plan) -> None:
        lines.append(
            row.format(
                p.head_kind, p.method, p.group, p.r, p.bias, f"{p.lora:,}", f"{p.head:,}", f"{p.biases:,}", f"{p.total:,}", "  <- plan" if p == chosen else ""
            )
        )

    shown = set()
    for p in plan_options(base, budget, chosen.head_kind, chosen.method, hidden, layers):
        if (p.group, p.bias) not in shown:  # the largest rank per (group, bias) is enough to compare
            shown.add((p.group, p.bias))
            show(p)
    lines.append("  other heads and methods, best option each:")
    for head_kind in HEADS if config.model.head == "auto" else (chosen.head_kind,):
        for method in ("lora", "dora", "vera"):
            if (head_kind, method) != (chosen.head_kind, chosen.method):
                options = plan_options(base, budget, head_kind, method, hidden, layers)
                if options:
                    show(options[0])
    lines.append(
        f"use it: lora: auto, or --model.head {chosen.head_kind} --lora.method {chosen.method} --lora.r {chosen.r} --lora.alpha {2 * chosen.r} "
        f"--lora.target_modules '[{', '.join(chosen.target_modules)}]' --lora.bias {chosen.bias}"
    )
    return "\n".join(lines) + "\n", chosen


def budget(
    config_path: str | None, overrides: list[str] | None = None, plan: bool = False, max_trainable_params: int | None = None, estimate: bool = True
) -> str:
    """Print the trainable-parameter breakdown (LoRA, head, biases, other) against the budget.

    The model is built from its config with random weights (no weight download). The number of
    classes comes from data.label_names, else from the labels of data.train. With ``plan``,
    propose the LoRA settings that fill ``max_trainable_params`` (default: the config's budget)
    and show the options considered; ``lora: auto`` in a config trains with that plan.

    Args:
        config_path: YAML config file (default: the built-in defaults).
        overrides: dotted overrides, e.g. ``--lora.r 8``.
        plan: propose LoRA settings that fill the budget.
        max_trainable_params: the budget to plan for (default: budget.max_trainable_params).
        estimate: time the plan on this machine and print its minutes (needs data.train; with
            budget.max_train_minutes and lora.layers unset, the layers are chosen by it first).
    """
    from textlora.config import load_config
    from textlora.models import build_model, load_base_model

    config = load_config(config_path, overrides)
    if max_trainable_params is not None:
        config.budget.max_trainable_params = max_trainable_params
    names = _label_names(config)
    splits, timing, footer = None, None, ""
    if estimate and config.data.train:
        from textlora.data import load_splits
        from textlora.resolve import fit_layers

        splits = load_splits(config.data, config.seed)
        eval_rows = len(splits.val_texts) + sum(len(texts) for texts, _ in splits.eval_sets.values())
        if config.budget.max_train_minutes is not None and config.lora.layers is None:
            config.lora.layers, timing = fit_layers(config, names, splits.train_texts, None, eval_rows)
    elif estimate:
        footer = "no time estimate: data.train is not set\n"
    header = ""
    if plan or config.lora.auto or config.model.head == "auto":
        base = load_base_model(config.model.name, names, weights=False)
        if plan or config.lora.auto:  # the breakdown below is then the plan's
            header, chosen = _plan_table(config, base, len(names))
            config = with_plan(config, chosen)
        config = planned(config, base)  # a head left on auto
    if config.lora.target_modules is None:  # the family's attention projections
        config.lora.target_modules = list(lora_groups(load_base_model(config.model.name, names, weights=False))["attention"])
    _, breakdown = build_model(config, names, weights=False)
    if splits is not None:
        footer = _estimate(config, names, splits, timing) + "\n"
    return header + (
        f"model {config.model.name}, {len(names)} classes, head {config.model.head}, {config.lora.method} r={config.lora.r} on {', '.join(config.lora.target_modules)}, bias {config.lora.bias}\n"
        + breakdown.format(config.budget.max_trainable_params).rstrip("\n")
        + "\n"
        + footer
    )


def _estimate(config, names: list[str], splits, timing) -> str:
    """The config's training time on this machine (timed now unless ``timing`` was)."""
    from textlora.models import layer_indices
    from textlora.resolve import resolve
    from textlora.timing import time_plan

    eval_rows = len(splits.val_texts) + sum(len(texts) for texts, _ in splits.eval_sets.values())
    config = resolve(config, names, splits.train_texts, eval_rows=eval_rows, fit_time=False)
    if timing is None:
        timing = time_plan(config, names, splits.train_texts, eval_rows=eval_rows, cached_texts=len(splits.train_texts) + eval_rows)
    k = timing.num_layers if config.lora.layers is None else len(layer_indices(config.lora.layers, timing.num_layers))
    return timing.describe(k, config.train.epochs, config.train.prefix_cache != "off")
