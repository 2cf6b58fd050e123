"""The budget verb: trainable-parameter breakdowns, and a planner that fills a budget well.

The planner counts analytically from the model's module shapes, exactly as peft selects
modules (a target matches a module whose name is the target or ends in ``.target``), so it
can rank dozens of options in milliseconds; the chosen plan is then built with peft and its
count checked against peft's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from textlora.errors import UserError

# Module groups the planner chooses among, broadest first (broader coverage wins ties: adapting
# every linear layer beats spending the same parameters on a few, as QLoRA and later work found).
GROUPS = {
    "all-linear": ["query", "key", "value", "dense"],
    "attention+output": ["query", "key", "value", "attention.output.dense"],
    "attention": ["query", "key", "value"],
    "query+value": ["query", "value"],
}
RANKS = (64, 48, 32, 24, 16, 12, 8, 6, 4, 2, 1)
BIASES = ("all", "lora_only", "none")


@dataclass
class Plan:
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


def _shapes(model):
    """(linear modules as (name, in, out, has_bias), head parameter count, all biases outside the head)."""
    import torch

    from textlora.models import HEAD_NAMES

    linears, head, biases = [], 0, {}
    for name, module in model.named_modules():
        in_head = any(name == h or name.startswith(h + ".") for h in HEAD_NAMES)
        if in_head:
            head += sum(p.numel() for p in module.parameters(recurse=False))
            continue
        if isinstance(module, torch.nn.Linear):
            linears.append((name, module.in_features, module.out_features, module.bias is not None))
        for pname, p in module.named_parameters(recurse=False):
            if pname == "bias":
                biases[name] = p.numel()
    return linears, head, biases


def count_plan(model, targets: list[str], r: int, bias: str) -> tuple[int, int, int]:
    """(LoRA, head, bias) trainable counts that peft would give ``model`` with these settings."""
    linears, head, biases = _shapes(model)
    chosen = [(n, i, o, b) for n, i, o, b in linears if any(_matches(n, t) for t in targets)]
    lora = sum(r * (i + o) for _, i, o, _ in chosen)
    if bias == "all":
        nb = sum(biases.values())
    elif bias == "lora_only":
        nb = sum(o for _, _, o, b in chosen if b)
    else:
        nb = 0
    return lora, head, nb


def plan_options(model, budget: int) -> list[Plan]:
    """Every (group, rank, bias) option that fits ``budget``, best first."""
    options = []
    for gi, (group, targets) in enumerate(GROUPS.items()):
        for r in RANKS:
            for bias in BIASES:
                lora, head, nb = count_plan(model, targets, r, bias)
                if lora and lora + head + nb <= budget:
                    options.append((gi, -r, -nb, Plan(group, targets, r, bias, lora, head, nb)))
    options.sort(key=lambda t: t[:3])
    return [t[3] for t in options]


def choose_plan(model, budget: int) -> Plan:
    """The broadest module group at the largest rank that fits, then the most biases that still fit."""
    options = plan_options(model, budget)
    if not options:
        linears, head, _ = _shapes(model)
        smallest = head + min((i + o for n, i, o, _ in linears if any(_matches(n, t) for t in GROUPS["query+value"])), default=0)
        raise UserError(
            f"budget: {budget:,} trainable parameters cannot hold the classifier head and a rank-1 LoRA on this model (needs at least {smallest:,})"
        )
    return options[0]


def _label_names(config) -> list[str]:
    from textlora.data import label_names_for, read_texts

    if config.data.label_names:
        return config.data.label_names
    frame = read_texts(config.data.train, config.data.text_column, config.data.label_column)
    return label_names_for(frame.labels, None, config.data.train)


def resolve_auto_lora(config, model) -> None:
    """Fill ``config.lora`` from the plan when it says ``auto`` (the resolved values are saved with the run)."""
    if not config.lora.auto:
        return
    plan = choose_plan(model, config.budget.max_trainable_params)
    config.lora.r, config.lora.alpha = plan.r, 2 * plan.r
    config.lora.target_modules, config.lora.bias = plan.target_modules, plan.bias
    config.lora.auto = False


def budget(config_path: str | None, overrides: list[str] | None = None, plan: bool = False, max_trainable_params: int | None = None) -> str:
    """Print the trainable-parameter breakdown (LoRA, head, biases, other) against the budget.

    The model is built from its config with random weights (no weight download). The number of
    classes comes from data.label_names, else from the labels of data.train. With ``plan``,
    propose the LoRA settings that fill ``max_trainable_params`` (default: the config's budget)
    and show the options considered; ``lora: auto`` in a config trains with that plan.
    """
    from textlora.config import load_config
    from textlora.models import build_model, load_base_model

    config = load_config(config_path, overrides)
    if max_trainable_params is not None:
        config.budget.max_trainable_params = max_trainable_params
    names = _label_names(config)
    if plan or config.lora.auto:
        base = load_base_model(config.model.name, names, weights=False)
        chosen = choose_plan(base, config.budget.max_trainable_params)
        lines = [
            f"plan for {config.model.name}, {len(names)} classes, budget {config.budget.max_trainable_params:,}:",
            f"  {'group':<18} {'r':>3} {'bias':<10} {'LoRA':>10} {'head':>9} {'biases':>9} {'total':>10}",
        ]
        shown = set()
        for p in plan_options(base, config.budget.max_trainable_params):
            if (p.group, p.bias) in shown:
                continue  # the largest rank per (group, bias) is enough to compare
            shown.add((p.group, p.bias))
            mark = "  <- plan" if p == chosen else ""
            lines.append(f"  {p.group:<18} {p.r:>3} {p.bias:<10} {p.lora:>10,} {p.head:>9,} {p.biases:>9,} {p.total:>10,}{mark}")
        config.lora.auto = True
        resolve_auto_lora(config, base)
        lines.append(
            f"use it: lora: auto, or --lora.r {chosen.r} --lora.alpha {2 * chosen.r} --lora.target_modules '[{', '.join(chosen.target_modules)}]' --lora.bias {chosen.bias}"
        )
        header = "\n".join(lines) + "\n"
    else:
        header = ""
    _, breakdown = build_model(config, names, weights=False)
    return header + (
        f"model {config.model.name}, {len(names)} classes, LoRA r={config.lora.r} on {', '.join(config.lora.target_modules)}, bias {config.lora.bias}\n"
        + breakdown.format(config.budget.max_trainable_params)
    )
