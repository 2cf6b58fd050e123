"""Write docs/config.md: every config key with its default and meaning, read from the config
dataclasses and the comment on each field's line, so the reference cannot drift from the code
(tests/test_docs.py regenerates it and compares).

    python scripts/config_reference.py > docs/config.md
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing

SECTIONS = [  # (heading, dataclass "module:Class", key prefix)
    ("Training config (`textlora train`, and the classifier of a pipeline)", "textlora.config:Config", ""),
    ("model", "textlora.config:ModelConfig", "model."),
    ("lora", "textlora.config:LoraSettings", "lora."),
    ("budget", "textlora.config:BudgetConfig", "budget."),
    ("data", "textlora.config:DataConfig", "data."),
    ("train", "textlora.config:TrainConfig", "train."),
    ("Pipeline config (`textlora pipeline`): a training config plus the sections below", "textlora.pipeline:PipelineConfig", ""),
    ("target", "textlora.pipeline:TargetConfig", "target."),
    ("synthetic", "textlora.pipeline:SyntheticConfig", "synthetic."),
    ("select", "textlora.pipeline:SelectConfig", "select."),
    ("self_training", "textlora.pipeline:SelfTrainingConfig", "self_training."),
    ("adapt (`textlora adapt`, and the pipeline's `adapt` section, whose files the pipeline fills in)", "textlora.augment.adapt:AdaptConfig", ""),
    ("generate (`textlora generate`, and the pipeline's `generate` section)", "textlora.augment.generate:GenerateConfig", ""),
    ("filter (`textlora filter`, and the pipeline's `filter` section)", "textlora.augment.filter:FilterConfig", ""),
    ("rewrite (the pipeline's `rewrite` section: `synthetic.prompts: rewrite`)", "textlora.augment.rewrite:RewriteConfig", ""),
]


def _comments(cls) -> dict[str, str]:
    """{field: the comment on its line} from the class's source."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if ":" in stripped and "  # " in stripped and not stripped.startswith(("#", "def ", "class ", "@")):
            name = stripped.split(":", 1)[0].strip()
            if name.isidentifier():
                out[name] = stripped.split("  # ", 1)[1].strip()
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(section)"
    else:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def _load(target: str):
    import importlib

    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def reference() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Every key a config file (YAML) or a dotted override (`--train.epochs 3`) can set, with its",
        "default and meaning. Generated from the config dataclasses by `python scripts/config_reference.py`;",
        "a test regenerates it, so it matches the code. An unknown key or a wrong value is a one-line error",
        "naming the key.",
    ]
    for heading, target, prefix in SECTIONS:
        cls = _load(target)
        comments = _comments(cls)
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            if not prefix and heading.startswith(("Training", "Pipeline")) and (dataclasses.is_dataclass(hints.get(f.name)) or hints.get(f.name) is dict):
                continue  # a section: its own table below
            kind = str(f.type).replace("typing.", "").replace(" | ", " or ")
            meaning = comments.get(f.name, "").replace("|", "\\|")
            rows.append(f"| `{prefix}{f.name}` | `{kind}` | `{_default(f)}` | {meaning} |")
        lines += ["", f"## {heading}"]
        if rows:
            lines += ["", "| key | type | default | meaning |", "|---|---|---|---|", *rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
