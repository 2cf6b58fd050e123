"""The command line: a table from verb to library function. No logic lives here.

Each verb's flags come from its library function: one flag a parameter (``batch_size`` becomes
``--batch-size``), its type, default and choices from the signature, its help from the docstring's
``Args:`` section, and the verb's description from the rest of the docstring. A parameter named
``config`` (or ``config_path``) becomes ``--config FILE``, read by the verb's config loader with the
dotted overrides that follow it. A UserError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import os
import re
import sys
from dataclasses import dataclass


def _is_rank0() -> bool:
    """False in the processes of a torchrun/accelerate launch that are not rank 0."""
    return int(os.environ.get("RANK", "0")) == 0


# --- what each verb prints -------------------------------------------------------------------


def _show_train(out, args) -> None:
    if _is_rank0():
        print(f"run directory: {out}")


def _show_evaluate(metrics, args) -> None:
    from textlora.evaluation import format_metrics

    if len(args.data) == 1:
        print(format_metrics(metrics))
    else:
        for f, m in metrics.items():
            print(f"== {f}\n{format_metrics(m)}\n")
    if args.output_dir:
        print(f"wrote {args.output_dir}/metrics.json and the confusion matrices (JSON, PNG)")


def _show_predict(result, args) -> None:
    if isinstance(result, dict):
        print(f"{result['label']}\t{result['label_name']}")
        print(json.dumps(result["probabilities"], indent=2))
    elif _is_rank0():
        print(f"wrote {result}")


def _show_wrote(out, args) -> None:
    if _is_rank0():
        print(f"wrote {out}")


def _loader(target: str):
    """The object a "module:name" string names, its module imported on the way."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class Verb:
    target: str  # "module:function": the library function whose signature and docstring make the flags
    summary: str  # one line for `textlora --help`
    show: object = _show_wrote  # prints the result: show(result, args)
    config: str | None = None  # "module:loader" that reads --config FILE plus dotted overrides
    config_class: str | None = None  # for the augment steps: the dataclass the loader fills
    config_required: bool = False
    config_help: str = "YAML config file; dotted overrides follow, e.g. --train.epochs 2"

    def function(self):
        return _loader(self.target)


VERBS = {
    "train": Verb("textlora.training:train", "train a LoRA classifier from a YAML config and write a run directory", _show_train,
                  config="textlora.config:load_config", config_required=True),
    "pipeline": Verb("textlora.pipeline:pipeline", "the whole method on any data: adapt, generate, filter, train, self-train, evaluate, predict",
                     lambda summary, args: None, config="textlora.pipeline:load_pipeline_config", config_required=True,
                     config_help="pipeline YAML (e.g. configs/amazon-dvd-electronics.yaml); dotted overrides follow"),
    "evaluate": Verb("textlora.evaluation:evaluate", "accuracy, macro-F1, per-class scores and confusion matrix on a labelled file", _show_evaluate),
    "predict": Verb("textlora.prediction:predict", "predict a file to an ID,Label CSV, or one --text", _show_predict),
    "pseudolabel": Verb("textlora.pseudolabel:pseudolabel", "label unlabelled texts with a run; keep the confident ones, class-balanced, with provenance",
                        lambda out, args: print(f"wrote {out} and {out.with_suffix('.report.json').name}")),
    "label": Verb("textlora.labelling:label", "a page that asks a person about the target texts that matter most (or --select N to a file)",
                  lambda out, args: print(f"wrote {out}") if out else None),
    "export": Verb("textlora.export:export", "write a merged Hugging Face folder or an ONNX model (optionally int8)"),
    "report": Verb("textlora.report:build_report", "write a self-contained HTML report: curves, confusion matrix, mistakes, timings"),
    "serve": Verb("textlora.serve:serve", "serve a run over HTTP with a small web page (loopback by default)", lambda out, args: None),
    "adapt": Verb("textlora.augment.adapt:adapt", "fine-tune a causal LM on unlabelled target texts (perplexity before/after)",
                  config="textlora.config:load_config", config_class="textlora.augment.adapt:AdaptConfig",
                  config_help="YAML config; dotted overrides follow, e.g. --max_texts 500"),
    "generate": Verb("textlora.augment.generate:generate", "generate labelled rows from per-class prompts (batched, resumable)",
                     config="textlora.config:load_config", config_class="textlora.augment.generate:GenerateConfig",
                     config_help="YAML config; dotted overrides follow, e.g. --rows_per_class 100"),
    "filter": Verb("textlora.augment.filter:filter_rows", "filter synthetic rows: length, garbage, duplicates, classifier agreement; report",
                   config="textlora.config:load_config", config_class="textlora.augment.filter:FilterConfig",
                   config_help="YAML config; dotted overrides follow, e.g. --min_words 5"),
    "budget": Verb("textlora.plan:budget", "print the trainable-parameter breakdown of a config against its budget and its minutes on this machine, or --plan one",
                   lambda report, args: print(report),
                   config_help="YAML config file (default: the built-in defaults); dotted overrides follow"),
}
CONFIG_PARAMS = ("config", "config_path")  # become --config FILE
OVERRIDES_PARAM = "overrides"  # takes the dotted overrides that follow --config


# --- flags from a signature and a docstring ------------------------------------------------


def split_doc(doc: str | None) -> tuple[str, dict[str, str]]:
    """(the docstring without its Args/Returns sections, {parameter: its Args text on one line})."""
    lines = inspect.cleandoc(doc or "").splitlines()
    body, args, section, name = [], {}, None, None
    for line in lines:
        header = re.fullmatch(r"(Args|Arguments|Returns|Raises|Yields):", line.strip())
        if header and not line.startswith(" "):
            section = header.group(1)
            continue
        if section is None:
            body.append(line)
        elif section in ("Args", "Arguments"):
            m = re.fullmatch(r" {4}(\w+)(?: \(.*?\))?: (.*)", line)
            if m:
                name, args[m.group(1)] = m.group(1), m.group(2)
            elif line.strip() and name:
                args[name] += " " + line.strip()
    return "\n".join(body).strip(), {k: v.replace("``", "'") for k, v in args.items()}


def _parse_annotation(ann: str) -> tuple[type, bool, list | None]:
    """(element type, is a list, choices) of an annotation written as a string: 'int | None',
    'list[str] | None', 'str | list[str]', 'Literal["hf", "onnx"]'."""
    parts = [p.strip() for p in re.split(r"\|(?![^\[]*\])", ann)]
    parts = [p for p in parts if p != "None"]
    many = any(p.startswith("list[") for p in parts)
    choices = None
    for p in parts:
        if p.startswith("Literal["):
            choices = list(ast.literal_eval(f"({p[len('Literal['):-1]},)"))
    names = [p[5:-1] if p.startswith("list[") else p for p in parts]
    kind = next((t for n, t in (("int", int), ("float", float), ("bool", bool)) if n in names), str)
    if choices:
        kind = type(choices[0])
    return kind, many, choices


def flags_for(fn, verb: Verb) -> list[tuple[tuple, dict]]:
    """argparse arguments for every parameter of ``fn``: one definition, in the library."""
    _, docs = split_doc(fn.__doc__)
    out = []
    for name, p in inspect.signature(fn).parameters.items():
        if name == OVERRIDES_PARAM:
            continue
        if name in CONFIG_PARAMS:
            out.append((("--config",), dict(dest=name, required=verb.config_required, metavar="FILE", help=verb.config_help)))
            continue
        if name not in docs:
            raise TypeError(f"{verb.target}: parameter {name!r} has no line in the docstring's Args section")
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "str")
        kind, many, choices = _parse_annotation(ann)
        required = p.default is inspect.Parameter.empty
        kwargs = dict(dest=name, help=docs[name])
        if kind is bool and not many:
            kwargs["action"] = argparse.BooleanOptionalAction if p.default is True else "store_true"
            kwargs["default"] = bool(p.default is True)  # argparse leaves BooleanOptionalAction at None otherwise
        else:
            kwargs |= dict(type=kind, required=required)
            if many:
                kwargs["nargs"] = "+" if required else "*"
            if choices:
                kwargs["choices"] = choices
            if not required:
                kwargs["default"] = p.default
                if p.default is not None:
                    kwargs["help"] = kwargs["help"].rstrip(".") + " (default: %(default)s)"
        out.append(((f"--{name.replace('_', '-')}",), kwargs))
    return out


def _run(name: str, args, extra: list[str]) -> int:
    verb = VERBS[name]
    fn = verb.function()
    params = inspect.signature(fn).parameters
    kwargs = {p: getattr(args, p) for p in params if hasattr(args, p)}
    if OVERRIDES_PARAM in params:
        kwargs[OVERRIDES_PARAM] = extra
    if verb.config:
        key = next(p for p in CONFIG_PARAMS if p in params)
        loader = _loader(verb.config)
        kwargs[key] = loader(args.__dict__[key], extra, cls=_loader(verb.config_class)) if verb.config_class else loader(args.__dict__[key], extra)
    from textlora.checkpoints import Interrupted

    try:
        result = fn(**kwargs)
    except Interrupted as e:  # train, adapt and the pipeline stop on SIGINT/SIGTERM with a checkpoint
        hint = "; run the same command again to continue" if name == "pipeline" and "same command" not in str(e) else ""
        print(f"textlora {name}: {e}{hint}", file=sys.stderr)
        return 128 + e.signum
    verb.show(result, args)
    return 0


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``verb``'s own flags are built (and only its module imported)."""
    parser = argparse.ArgumentParser(prog="textlora", description="Train, evaluate and run LoRA text classifiers under a parameter budget.")
    from textlora.version import __version__

    parser.add_argument("--version", action="version", version=f"textlora {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, spec in VERBS.items():
        if name != verb:
            sub.add_parser(name, help=spec.summary)
            continue
        fn = spec.function()
        p = sub.add_parser(name, help=spec.summary, description=split_doc(fn.__doc__)[0], formatter_class=argparse.RawDescriptionHelpFormatter)
        for flags, kwargs in flags_for(fn, spec):
            p.add_argument(*flags, **kwargs)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    from textlora.errors import UserError

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation notices are not the user's business
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv and argv[0] in VERBS else None
    parser = build_parser(verb)
    args, extra = parser.parse_known_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    if extra and not (VERBS[args.verb].config or OVERRIDES_PARAM in inspect.signature(VERBS[args.verb].function()).parameters):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return _run(args.verb, args, extra)
    except UserError as e:
        print(f"textlora {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"textlora {args.verb}: interrupted", file=sys.stderr)
        return 130
