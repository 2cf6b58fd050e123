"""The command line: a table from verb to library function. No logic lives here.

Each verb's --help comes from its function's docstring. A UserError becomes one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _is_rank0() -> bool:
    """False in the processes of a torchrun/accelerate launch that are not rank 0."""
    return int(os.environ.get("RANK", "0")) == 0


def _train(args, extra: list[str]) -> int:
    from textlora.config import load_config
    from textlora.training import TrainingInterrupted, train

    config = load_config(args.config, extra)
    try:
        out = train(config, resume=args.resume, overwrite=args.overwrite)
    except TrainingInterrupted as e:
        print(f"textlora train: {e}", file=sys.stderr)
        return 128 + e.signum
    if _is_rank0():
        print(f"run directory: {out}")
    return 0


def _pipeline(args, extra: list[str]) -> int:
    from textlora.pipeline import load_pipeline_config, pipeline
    from textlora.training import TrainingInterrupted

    try:
        pipeline(load_pipeline_config(args.config, extra), overwrite=args.overwrite)
    except TrainingInterrupted as e:
        print(f"textlora pipeline: {e}; run the same command again to continue", file=sys.stderr)
        return 128 + e.signum
    return 0


def _evaluate(args, extra: list[str]) -> int:
    from textlora.evaluation import evaluate, format_metrics

    metrics = evaluate(
        args.model,
        args.data,
        output_dir=args.output_dir,
        text_column=args.text_column,
        label_column=args.label_column,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        pair_column=args.pair_column,
    )
    if len(args.data) == 1:
        print(format_metrics(metrics))
    else:
        for f, m in metrics.items():
            print(f"== {f}\n{format_metrics(m)}\n")
    if args.output_dir:
        print(f"wrote {args.output_dir}/metrics.json and the confusion matrices (JSON, PNG)")
    return 0


def _predict(args, extra: list[str]) -> int:
    from textlora.prediction import predict

    result = predict(
        args.model,
        data=args.data,
        output=args.output,
        text=args.text,
        text_column=args.text_column,
        text_pair=args.text_pair,
        pair_column=args.pair_column,
        with_names=args.with_names,
        with_probs=args.with_probs,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        chunk_rows=args.chunk_rows,
    )
    if isinstance(result, dict):
        print(f"{result['label']}\t{result['label_name']}")
        print(json.dumps(result["probabilities"], indent=2))
    elif _is_rank0():
        print(f"wrote {result}")
    return 0


def _pseudolabel(args, extra: list[str]) -> int:
    from textlora.pseudolabel import pseudolabel

    out = pseudolabel(
        args.model,
        args.data,
        args.output,
        text_column=args.text_column,
        min_confidence=args.min_confidence,
        max_per_class=args.max_per_class,
        balance=args.balance,
        exclude=args.exclude,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        chunk_rows=args.chunk_rows,
    )
    print(f"wrote {out} and {out.with_suffix('.report.json').name}")
    return 0


def _budget(args, extra: list[str]) -> int:
    from textlora.budget import budget

    report = budget(args.config, extra, plan=args.plan, max_trainable_params=args.max_trainable_params)
    print(report)
    return 0


def _export(args, extra: list[str]) -> int:
    from textlora.export import export

    out = export(args.model, args.output, format=args.format, quantize=args.quantize, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def _report(args, extra: list[str]) -> int:
    from textlora.report import build_report

    print(f"wrote {build_report(args.model, data=args.data, output=args.output, overwrite=args.overwrite)}")
    return 0


def _serve(args, extra: list[str]) -> int:
    from textlora.serve import serve

    serve(args.model, host=args.host, port=args.port, max_batch=args.max_batch, max_chars=args.max_chars, api_key=args.api_key, max_body_bytes=args.max_body_bytes)
    return 0


def _augment(kind: str):
    """adapt / generate / filter: a YAML config of that step's dataclass plus dotted overrides."""

    def run(args, extra: list[str]) -> int:
        from textlora.config import load_config

        if kind == "adapt":
            from textlora.augment.adapt import AdaptConfig as cls
            from textlora.augment.adapt import adapt as fn
        elif kind == "generate":
            from textlora.augment.generate import GenerateConfig as cls
            from textlora.augment.generate import generate as fn
        else:
            from textlora.augment.filter import FilterConfig as cls
            from textlora.augment.filter import filter_rows as fn
        config = load_config(args.config, extra, cls=cls)
        kwargs = {"reuse": args.reuse} if kind in ("adapt", "generate") else {}
        print(f"wrote {fn(config, overwrite=args.overwrite, **kwargs)}")
        return 0

    return run


AUGMENT_ARGS = [
    (("--config",), dict(help="YAML config (default: the built-in defaults); dotted overrides follow, e.g. --rows_per_class 100")),
    (("--overwrite",), dict(action="store_true")),
]
CACHED_ARGS = AUGMENT_ARGS + [
    (("--reuse",), dict(action="store_true", help="keep an existing output made from the same settings and inputs; redo it otherwise"))
]

VERBS = {
    # verb: (function, library function whose docstring is the help, arguments)
    "train": (
        _train,
        "textlora.training:train",
        [
            (("--config",), dict(required=True, help="YAML config file; dotted overrides follow, e.g. --train.epochs 2")),
            (("--resume",), dict(default="none", choices=["none", "last", "best"], help="continue from a checkpoint in output_dir")),
            (("--overwrite",), dict(action="store_true", help="start afresh in an output_dir that already holds a run")),
        ],
    ),
    "pipeline": (
        _pipeline,
        "textlora.pipeline:pipeline",
        [
            (("--config",), dict(required=True, help="pipeline YAML (e.g. configs/amazon-dvd-electronics.yaml); dotted overrides follow")),
            (("--overwrite",), dict(action="store_true", help="redo every stage instead of reusing the cached ones")),
        ],
    ),
    "evaluate": (
        _evaluate,
        "textlora.evaluation:evaluate",
        [
            (("--model",), dict(required=True, help="run directory")),
            (("--data",), dict(required=True, nargs="+", help="labelled file(s)")),
            (("--output-dir",), dict(help="write metrics and the confusion matrix (JSON, PNG) here")),
            (("--text-column",), dict()),
            (("--pair-column",), dict(help="second text column of a sentence-pair run (default: the run's)")),
            (("--label-column",), dict()),
            (("--batch-size",), dict(type=int, default=32)),
            (("--overwrite",), dict(action="store_true")),
        ],
    ),
    "predict": (
        _predict,
        "textlora.prediction:predict",
        [
            (("--model",), dict(required=True, help="run directory")),
            (("--data",), dict(help="file of texts")),
            (("--output",), dict(help="CSV to write (ID,Label; a multi-label run writes ID,Labels with a JSON list)")),
            (("--text",), dict(help="classify one text and print label and probabilities")),
            (("--text-column",), dict(default="text")),
            (("--text-pair",), dict(help="the second text of --text, for a sentence-pair run")),
            (("--pair-column",), dict(help="second text column of a sentence-pair run (default: the run's)")),
            (("--with-names",), dict(action="store_true", help="add a LabelName column (LabelNames for multi-label runs)")),
            (("--with-probs",), dict(action="store_true", help="add a P(name) column per class")),
            (("--batch-size",), dict(type=int, default=32)),
            (("--chunk-rows",), dict(type=int, default=20_000, help="rows read, predicted and written at a time (memory stays flat)")),
            (("--overwrite",), dict(action="store_true")),
        ],
    ),
    "pseudolabel": (
        _pseudolabel,
        "textlora.pseudolabel:pseudolabel",
        [
            (("--model",), dict(required=True, help="run directory of the teacher")),
            (("--data",), dict(required=True, help="unlabelled file of texts")),
            (("--output",), dict(required=True, help="CSV to write (text, label, provenance)")),
            (("--text-column",), dict(default="text")),
            (("--min-confidence",), dict(type=float, default=0.9, help="keep rows whose top class probability reaches this")),
            (("--max-per-class",), dict(type=int, help="at most this many rows a class, most confident first")),
            (("--balance",), dict(action="store_true", help="every class keeps as many rows as the class with the fewest")),
            (("--exclude",), dict(nargs="*", default=[], help="files whose texts are never labelled (e.g. eval sets)")),
            (("--batch-size",), dict(type=int, default=32)),
            (("--chunk-rows",), dict(type=int, default=20_000, help="rows read at a time (memory stays flat)")),
            (("--overwrite",), dict(action="store_true")),
        ],
    ),
    "export": (
        _export,
        "textlora.export:export",
        [
            (("--model",), dict(required=True, help="run directory")),
            (("--output",), dict(required=True, help="folder to write")),
            (("--format",), dict(default="hf", choices=["hf", "onnx"])),
            (("--quantize",), dict(choices=["int8"], help="int8 weights (onnx only)")),
            (("--overwrite",), dict(action="store_true")),
        ],
    ),
    "report": (
        _report,
        "textlora.report:build_report",
        [
            (("--model",), dict(required=True, help="run directory")),
            (("--data",), dict(help="labelled file (default: RUN/dev.csv)")),
            (("--output",), dict(help="HTML file (default: RUN/report.html)")),
            (("--overwrite",), dict(action="store_true")),
        ],
    ),
    "serve": (
        _serve,
        "textlora.serve:serve",
        [
            (("--model",), dict(required=True, help="run directory")),
            (("--host",), dict(default="127.0.0.1")),
            (("--port",), dict(type=int, default=8000)),
            (("--max-batch",), dict(type=int, default=64, help="most texts per request (more: 413)")),
            (("--max-chars",), dict(type=int, default=10_000, help="texts are cut to this many characters")),
            (("--api-key",), dict(help="bearer token for /v1/* (default: $TEXTLORA_API_KEY; none: open)")),
            (("--max-body-bytes",), dict(type=int, help="larger request bodies get 413 before they are parsed")),
        ],
    ),
    "adapt": (_augment("adapt"), "textlora.augment.adapt:adapt", CACHED_ARGS),
    "generate": (_augment("generate"), "textlora.augment.generate:generate", CACHED_ARGS),
    "filter": (_augment("filter"), "textlora.augment.filter:filter_rows", AUGMENT_ARGS),
    "budget": (
        _budget,
        "textlora.budget:budget",
        [
            (("--config",), dict(help="YAML config file (default: the built-in defaults); dotted overrides follow")),
            (("--plan",), dict(action="store_true", help="propose LoRA settings that fill the budget")),
            (("--max-trainable-params",), dict(type=int, help="the budget to plan for (default: budget.max_trainable_params)")),
        ],
    ),
}

ACCEPTS_OVERRIDES = {"train", "pipeline", "budget", "adapt", "generate", "filter"}
SUMMARIES = {
    "train": "train a LoRA classifier from a YAML config and write a run directory",
    "pipeline": "the whole method on any data: adapt, generate, filter, train, self-train, evaluate, predict",
    "evaluate": "accuracy, macro-F1, per-class scores and confusion matrix on a labelled file",
    "predict": "predict a file to an ID,Label CSV, or one --text",
    "budget": "print the trainable-parameter breakdown of a config against its budget, or --plan one",
    "pseudolabel": "label unlabelled texts with a run; keep the confident ones, class-balanced, with provenance",
    "export": "write a merged Hugging Face folder or an ONNX model (optionally int8)",
    "report": "write a self-contained HTML report: curves, confusion matrix, mistakes, timings",
    "serve": "serve a run over HTTP with a small web page (loopback by default)",
    "adapt": "fine-tune a causal LM on unlabelled target texts (perplexity before/after)",
    "generate": "generate labelled rows from per-class prompts (batched, resumable)",
    "filter": "filter synthetic rows: length, garbage, duplicates, classifier agreement; report",
}


def _doc(target: str) -> str:
    import importlib

    module, name = target.split(":")
    return (getattr(importlib.import_module(module), name).__doc__ or "").strip()


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textlora", description="Train, evaluate and run LoRA text classifiers under a parameter budget.")
    from textlora.version import __version__

    parser.add_argument("--version", action="version", version=f"textlora {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (_, target, arguments) in VERBS.items():
        doc = _doc(target) if name == verb else None  # import a verb's module only for its own --help
        p = sub.add_parser(name, help=SUMMARIES[name], description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        for flags, kwargs in arguments:
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
    if extra and args.verb not in ACCEPTS_OVERRIDES:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return VERBS[args.verb][0](args, extra)
    except UserError as e:
        print(f"textlora {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"textlora {args.verb}: interrupted", file=sys.stderr)
        return 130
