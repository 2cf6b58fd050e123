"""The ``budget`` verb: a config's trainable-parameter breakdown against its budget, the planner's
options (``--plan``), and the plan's minutes on this machine (textlora.timing).

It sits above textlora.resolve (which uses the planner in textlora.budget), so that the planner
never imports what resolves configs.
"""

from __future__ import annotations

from textlora.budget import Plan, choose_plan, plan_layers, plan_options, planned, with_plan
from textlora.registry import lora_groups


def _label_names(config) -> list[str]:
    from textlora.data import label_names_for, read_options, read_texts

    if config.data.label_names:
        return config.data.label_names
    frame = read_texts(config.data.train, config.data.text_column, config.data.label_column, **read_options(config.data))
    return label_names_for(frame.labels, None, config.data.train)


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
        if config.budget.max_train_minutes is not None and config.lora.layers is None:
            config.lora.layers, timing = fit_layers(config, names, splits.train_texts, None, splits.scored_rows)
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

    config = resolve(config, names, splits.train_texts, eval_rows=splits.scored_rows, fit_time=False)
    if timing is None:
        timing = time_plan(config, names, splits.train_texts, eval_rows=splits.scored_rows)
    k = timing.num_layers if config.lora.layers is None else len(layer_indices(config.lora.layers, timing.num_layers))
    return timing.describe(k, config.train.epochs, config.train.prefix_cache != "off")
