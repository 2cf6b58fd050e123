"""The whole method as one verb: labelled source rows + unlabelled target texts -> a classifier for the target.

Stages, each cached by content (its settings and the digests of its inputs, never their paths)
in ``OUTPUT_DIR/stages.json``, so that a rerun redoes only what changed and a killed run
continues at the stage where it stopped (generation inside its batches, training from its last
checkpoint):

1. ``adapt``: the causal LM fine-tuned on the unlabelled target texts (the eval sets' texts left
   out); with ``synthetic.prompts: labelled`` also on the source rows written ``LABEL: text``.
2. ``generate``: labelled target-style rows from class prompts (made automatically unless a
   prompt file is given); each row's label is its class name.
3. ``filter``: length, garbage and duplicates; then ``synthetic.dev_fraction`` of the kept rows
   are held out as the eval set ``synthetic`` (target-style rows the classifier never trains on).
   Then the label check (``synthetic.check``, ``textlora.augment.check``): a bag-of-words probe
   trained on the source rows and most generated rows predicts the rest; how far it falls below
   its dev accuracy estimates the share of mislabelled rows, and above ``check_max_noise`` the
   classifier trains on the source rows alone (the summary says so).
4. ``train``: the classifier on the source rows plus the synthetic rows (the dev split comes from
   the source rows only), evaluated each epoch on dev and on every eval set.
5. ``self-training`` rounds (optional): the last classifier pseudo-labels the target texts and a
   new one trains on them too.
6. ``evaluate``: the final run on its dev split and every eval set; ``predict``: the target texts
   to an ``ID,Label`` CSV.

The config is a training config (``model``, ``lora``, ``budget``, ``data``, ``train``,
``output_dir``, ``seed``) plus the sections below; ``seed`` seeds the classifier, the synthetic
dev split and self-training, while ``adapt.seed`` and ``generate.seed`` seed those stages.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from textlora.augment.prompts import TEMPLATES
from textlora.config import _build, _check, _merge, config_from_dict, parse_overrides, read_yaml
from textlora.errors import UserError

PROMPT_MODES = ("instruct", "source", "labelled")
CLASSIFIER_KEYS = ("output_dir", "seed", "model", "lora", "budget", "data", "train")
# settings of the stage configs that the pipeline derives from its own sections
OWNED = {
    "adapt": {"texts": "target.texts", "text_column": "target.text_column", "exclude": "data.eval_sets", "labelled": "synthetic.prompts: labelled"},
    "generate": {"model": "the adapt stage", "prompts": "synthetic.prompts"},
    "filter": {"input": "the generate stage", "real": "data.train", "text_column": "data.text_column", "label_column": "data.label_column"},
}
SYNTHETIC_SET = "synthetic"  # the eval set of held-out generated rows


@dataclass
class TargetConfig:
    texts: str | None = None  # the unlabelled target texts (required): adapted on, pseudo-labelled, predicted
    text_column: str = "text"

    def __post_init__(self) -> None:
        _check(self.texts is not None, "target.texts", "a file of unlabelled target texts", self.texts)


@dataclass
class SyntheticConfig:
    enabled: bool = True  # false: no adapt/generate/filter (the classifier trains on the source rows alone)
    prompts: str = "instruct"  # instruct | source | labelled (made from the data; textlora.augment.prompts) | a prompt file (YAML)
    templates: list[str] = field(default_factory=lambda: list(TEMPLATES))  # instruct: "{label}" is the class name
    source_prompts: int = 64  # source: openings a class, from the source training split
    source_words: int = 6  # source: words an opening
    dev_fraction: float = 0.1  # filtered rows held out as the eval set "synthetic" (never trained on); 0: none
    processes: int = 1  # generate under torchrun in this many processes (the same rows): e.g. one a GPU
    check: bool = True  # the label check (textlora.augment.check): rows that look mislabelled are dropped
    check_max_noise: float = 0.25  # dropped when the estimated share of mislabelled rows is above this

    def __post_init__(self) -> None:
        _check(0 <= self.dev_fraction < 1, "synthetic.dev_fraction", "a number in [0, 1)", self.dev_fraction)
        _check(0 <= self.check_max_noise <= 1, "synthetic.check_max_noise", "a number in [0, 1]", self.check_max_noise)
        _check(type(self.processes) is int and self.processes >= 1, "synthetic.processes", "an integer >= 1", self.processes)
        _check(self.source_prompts >= 1, "synthetic.source_prompts", "an integer >= 1", self.source_prompts)
        _check(self.source_words >= 1, "synthetic.source_words", "an integer >= 1", self.source_words)
        _check(all("{label}" in t for t in self.templates), "synthetic.templates", "templates that each contain {label}", self.templates)


@dataclass
class SelectConfig:
    checkpoint: str = "dev"  # dev: the source dev split chooses the checkpoint | synthetic: the held-out generated rows do

    def __post_init__(self) -> None:
        _check(self.checkpoint in ("dev", "synthetic"), "select.checkpoint", "dev or synthetic", self.checkpoint)


@dataclass
class SelfTrainingConfig:
    rounds: int = 0  # pseudo-label the target texts and train again, this many times
    min_confidence: float = 0.9
    balance: bool = True  # the same number of pseudo-labels for every class
    max_per_class: int | None = None

    def __post_init__(self) -> None:
        _check(self.rounds >= 0, "self_training.rounds", "an integer >= 0", self.rounds)
        _check(0 <= self.min_confidence <= 1, "self_training.min_confidence", "a number in [0, 1]", self.min_confidence)


@dataclass
class PipelineConfig:
    classifier: dict  # the training config's sections, as read (textlora.config.Config)
    target: TargetConfig
    synthetic: SyntheticConfig
    select: SelectConfig
    self_training: SelfTrainingConfig
    adapt: dict  # textlora.augment.adapt.AdaptConfig settings; the pipeline fills texts, exclude, output_dir
    generate: dict  # textlora.augment.generate.GenerateConfig settings; lengths may be auto
    filter: dict  # textlora.augment.filter.FilterConfig settings

    @property
    def output_dir(self) -> Path:
        return Path(self.classifier.get("output_dir", "runs/pipeline"))


def load_pipeline_config(path: str | None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a pipeline YAML file plus dotted overrides; every problem is one line naming the key."""
    raw = _merge(read_yaml(path) if path else {}, parse_overrides(overrides or []))
    try:
        return _pipeline_config(raw)
    except UserError as e:
        raise UserError(f"{e} (in {path})" if path else str(e)) from None


def _pipeline_config(raw: dict) -> PipelineConfig:
    known = set(CLASSIFIER_KEYS) | {"target", "synthetic", "select", "self_training", "adapt", "generate", "filter"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"config: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
    classifier = {k: raw[k] for k in CLASSIFIER_KEYS if k in raw}
    checked = config_from_dict(copy.deepcopy(classifier))  # checks every key now, before any stage runs
    if not checked.data.train:
        raise UserError("config: data.train: no training file given; set it to the labelled source rows (CSV, TSV, JSONL or Parquet)")
    if SYNTHETIC_SET in checked.data.eval_sets:
        raise UserError(f"config: data.eval_sets.{SYNTHETIC_SET}: the name is the pipeline's (held-out generated rows); choose another")
    stages = {}
    for name in ("adapt", "generate", "filter"):
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise UserError(f"config: {name}: expected a mapping, found {section!r}")
        for key, source in OWNED[name].items():
            if key in section:
                raise UserError(f"config: {name}.{key}: set by the pipeline (from {source}); remove it")
        stages[name] = section
    return PipelineConfig(
        classifier=classifier,
        target=_build(TargetConfig, raw.get("target") or {}, "target."),
        synthetic=_build(SyntheticConfig, raw.get("synthetic") or {}, "synthetic."),
        select=_build(SelectConfig, raw.get("select") or {}, "select."),
        self_training=_build(SelfTrainingConfig, raw.get("self_training") or {}, "self_training."),
        **stages,
    )


# --- the stage record ----------------------------------------------------------------------


class Stages:
    """``OUTPUT_DIR/stages.json``: each stage's cache key, state (started/done), time and counts."""

    def __init__(self, out: Path, fresh: bool):
        self.path = out / "stages.json"
        self.entries = {} if fresh or not self.path.is_file() else json.loads(self.path.read_text())
        self.summary: list[dict] = []

    def done(self, name: str, key: str) -> dict | None:
        entry = self.entries.get(name)
        return entry if entry and entry.get("key") == key and entry.get("state") == "done" else None

    def started(self, name: str, key: str) -> bool:
        entry = self.entries.get(name)
        return bool(entry and entry.get("key") == key and entry.get("state") == "started")

    def start(self, name: str, key: str) -> float:
        self.entries[name] = {"key": key, "state": "started"}
        self._write()
        return time.perf_counter()

    def finish(self, name: str, key: str, t0: float, **info) -> dict:
        entry = {"key": key, "state": "done", "seconds": round(time.perf_counter() - t0, 1), **info}
        self.entries[name] = entry
        self._write()
        return self.report(name, entry, cached=False)

    def report(self, name: str, entry: dict, cached: bool) -> dict:
        row = {"stage": name, "cached": cached, **{k: v for k, v in entry.items() if k not in ("key", "state")}}
        self.summary.append(row)
        note = f" ({entry['note']})" if entry.get("note") else ""
        rows = f", {entry['rows']:,} rows" if entry.get("rows") is not None else ""
        print(f"== {name}: {entry.get('seconds', 0):.0f} s{' (cached)' if cached else ''}{rows}{note}", flush=True)
        return row

    def _write(self) -> None:
        from textlora.fsutil import atomic_path

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.entries, indent=2))


# --- the verb ------------------------------------------------------------------------------


@dataclass
class _Run:
    """What the stages pass on: the config, the output folder, the source classes and the files made."""

    config: PipelineConfig
    out: Path
    stages: Stages
    label_names: list[str] = field(default_factory=list)
    eval_files: list[str] = field(default_factory=list)
    extra_train: list[str] = field(default_factory=list)  # synthetic (and pseudo-labelled) rows for the classifier
    eval_sets: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the summary must say (e.g. a class with no synthetic rows)
    target_texts: list = field(default_factory=list)  # the unlabelled target texts, read once
    source: object = None  # the classifier's config as the user wrote it (textlora.config.Config), read once
    splits: object = None  # its split of the source rows alone (textlora.data.Splits), made once by _source_splits
    lm: Path | None = None  # the adapted LM folder
    generated: Path | None = None  # the generated rows


def pipeline(config: PipelineConfig, overwrite: bool = False) -> dict:
    """Run the whole method on any data: adapt -> generate -> filter -> train -> self-train -> evaluate -> predict.

    Every stage is cached by content in ``OUTPUT_DIR/stages.json``: a rerun with the same settings
    and inputs reuses each stage, a changed setting or input redoes that stage and the ones after
    it, and a killed run continues at the stage where it stopped. ``overwrite`` redoes them all.
    Prints one line per stage with its time, then a summary table and the lines ``run: PATH`` and
    ``predictions: PATH``.

    Args:
        config: the pipeline config (see ``textlora.pipeline``; ``configs/amazon-dvd-electronics.yaml``
            is the example to copy).
        overwrite: redo every stage.

    Returns:
        The summary: stages, the final run, the predictions file and the final metrics.
    """
    from textlora.fsutil import hold_lock
    from textlora.runtime import machine

    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    lock = hold_lock(out.parent / f".{out.name}.pipeline.lock", what=f"output_dir {out}")
    r = _Run(config, out, Stages(out, fresh=overwrite))
    t_all = time.perf_counter()
    _check_inputs(r)
    if config.synthetic.enabled:
        _adapt(r)
        _generate(r)
        _filter(r)
    run = _train(r, "train", out / "classifier", r.extra_train)
    for k in range(1, config.self_training.rounds + 1):
        pseudo = _pseudolabel(r, k, run)
        run = _train(r, f"self-training {k}", out / f"round{k}" / "classifier", [*r.extra_train, str(pseudo)])
    metrics = _evaluate(r, run)
    predictions = _predict(r, run)
    summary = {
        "output_dir": str(out),
        "run": str(run),
        "predictions": str(predictions),
        "seconds": round(time.perf_counter() - t_all, 1),
        "stages": r.stages.summary,
        "metrics": metrics,
        "notes": r.notes,
        "machine": machine(),
    }
    (out / "pipeline.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary))
    print(f"run: {run}")
    print(f"predictions: {predictions}")
    lock.close()
    return summary


def _check_inputs(r: _Run) -> None:
    """Source and target files readable, every class with rows, eval sets labelled: before any stage runs."""
    from textlora.data import label_names_for, read_texts
    from textlora.models import resolve_model_path

    cfg = r.source = config_from_dict(copy.deepcopy(r.config.classifier))
    src = read_texts(cfg.data.train, cfg.data.text_column, cfg.data.label_column)
    r.label_names = label_names_for(src.labels, cfg.data.label_names, cfg.data.train)
    present = {(r.label_names[v] if isinstance(v, int) else v) for v in src.labels}
    missing = [n for n in r.label_names if n not in present]
    if missing:
        raise UserError(f"{cfg.data.train}: class '{missing[0]}' has no rows")
    r.target_texts = read_texts(r.config.target.texts, r.config.target.text_column, None, require_labels=False).texts
    resolve_model_path(cfg.model.name)  # an alias whose package is missing is one line now, not after adaptation
    mode = r.config.synthetic.prompts
    if r.config.synthetic.enabled and mode not in PROMPT_MODES:
        from textlora.augment.generate import read_prompts

        read_prompts(mode, r.label_names)  # a class missing from the file, or not in the data, is one line naming it
    r.eval_files = [*cfg.data.eval_sets.values(), *([cfg.data.dev] if cfg.data.dev else [])]
    r.eval_sets = dict(cfg.data.eval_sets)
    r.extra_train = list(cfg.data.extra_train)


def _adapt(r: _Run) -> None:
    from textlora.augment.adapt import AdaptConfig, adapt, adapt_key, is_adapted

    settings = {"max_length": "auto", "output_dir": str(r.out / "lm"), **r.config.adapt}
    settings |= {"texts": r.config.target.texts, "text_column": r.config.target.text_column, "exclude": r.eval_files}
    if r.config.synthetic.prompts == "labelled":
        settings |= {"labelled": str(_source_split_file(r)), "labelled_text_column": "text", "labelled_label_column": "label"}
    acfg = _build(AdaptConfig, settings, "adapt.")
    key = adapt_key(acfg)
    r.lm = Path(acfg.output_dir)
    cached = r.stages.done("adapt", key)
    if cached and (r.lm / "adapt_metrics.json").is_file():
        r.stages.report("adapt", cached, cached=True)
        return
    reused = is_adapted(acfg)  # made by another pipeline that shares this output_dir: no new work
    t0 = r.stages.start("adapt", key)
    adapt(acfg, reuse=True)
    m = json.loads((r.lm / "adapt_metrics.json").read_text())
    note = (
        "reused " + str(r.lm) + "; " if reused else ""
    ) + f"perplexity {m['perplexity_before']:.1f} -> {m['perplexity_after']:.1f} on {m['heldout_texts']} held-out target texts"
    if m.get("labelled_rows"):
        note += f"; {m['labelled_rows']:,} labelled source rows"
    r.stages.finish("adapt", key, t0, rows=m.get("target_texts", m["train_texts"]), note=note)


def source_splits(source, seed: int | None = None):
    """The split of the source rows alone (textlora.data.Splits) that a classifier config makes at
    ``seed`` (default: its own): no extra rows, no eval sets."""
    from textlora.data import load_splits

    cfg = copy.deepcopy(source)
    cfg.data.extra_train = []
    cfg.data.eval_sets = {}
    return load_splits(cfg.data, cfg.seed if seed is None else seed)


def _source_splits(r: _Run):
    """The classifier's own split of the source rows; read once a run."""
    if r.splits is None:
        r.splits = source_splits(r.source)
    return r.splits


def _source_split_file(r: _Run) -> Path:
    """The source training split (the dev split left out) as text + label name: what prompts and labelled adaptation may see."""
    import pandas as pd

    splits = _source_splits(r)
    path = r.out / "source_train_split.csv"
    pd.DataFrame({"text": splits.train_texts, "label": [splits.label_names[k] for k in splits.train_labels]}).to_csv(path, index=False)
    return path


def _prompts(r: _Run) -> str:
    """The prompt file for generate: the user's (checked against the classes) or one made from the data."""
    from textlora.augment import prompts as P
    from textlora.augment.generate import read_prompts

    mode = r.config.synthetic.prompts
    if mode not in PROMPT_MODES:
        read_prompts(mode, r.label_names)  # a class missing or unknown is one line naming it
        return mode
    syn = r.config.synthetic
    if mode == "instruct":
        classes = P.instruct_prompts(r.label_names, syn.templates)
    elif mode == "labelled":
        classes = P.labelled_prompts(r.label_names)
    else:
        import pandas as pd

        split = pd.read_csv(_source_split_file(r), keep_default_na=False, dtype=str)
        seed = r.source.seed
        classes = P.source_prompts(split["text"].tolist(), split["label"].tolist(), r.label_names, syn.source_prompts, syn.source_words, seed)
    return str(P.write_prompts(classes, r.out / "prompts.yaml", f"made by textlora pipeline from the data (synthetic.prompts: {mode})"))


def _generate(r: _Run) -> None:
    from textlora.augment.generate import GenerateConfig, generate, generate_key, is_generated

    settings = {"output": str(r.out / "synthetic" / "rows.csv"), "keep_prompt": r.config.synthetic.prompts == "source", **r.config.generate}
    settings |= {"model": str(r.lm), "prompts": _prompts(r)}
    auto = [k for k in ("length_mean", "length_std") if settings.get(k, "auto") == "auto"]
    if auto:  # rows as long as the target texts, in the LM's tokens
        measured = dict(zip(("length_mean", "length_std"), _target_lengths(r, settings.get("length_max", GenerateConfig.length_max))))
        settings |= {k: measured[k] for k in auto}
    gcfg = _build(GenerateConfig, settings, "generate.")
    key = generate_key(gcfg, r.label_names)
    r.generated = Path(gcfg.output)
    cached = r.stages.done("generate", key)
    if cached and r.generated.is_file():
        r.stages.report("generate", cached, cached=True)
        return
    reused = is_generated(gcfg, r.label_names)
    t0 = r.stages.start("generate", key)
    processes = r.config.synthetic.processes
    if processes > 1 and not reused:
        _generate_sharded(gcfg, r.label_names, processes, r.out / "synthetic" / "generate.yaml")
    else:
        generate(gcfg, label_names=r.label_names, reuse=True)
    s = json.loads(r.generated.with_suffix(".generate.json").read_text())
    note = (
        "reused " + str(r.generated) + "; " if reused else ""
    ) + f"{s['tokens_per_s']:.0f} new tokens/s, {gcfg.length_mean:.0f} +- {gcfg.length_std:.0f} tokens a row, prompts: {r.config.synthetic.prompts}"
    r.stages.finish("generate", key, t0, rows=s["rows_written"], note=note)


def _generate_sharded(gcfg, label_names: list[str], processes: int, config_file: Path) -> None:
    """``textlora generate`` under torchrun: each process takes every processes-th batch, process 0
    writes the rows; the same rows as one process writes. A killed run continues from its batches."""
    import os
    import subprocess
    import sys

    import yaml

    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(asdict(gcfg), sort_keys=False))
    threads = max(1, len(os.sched_getaffinity(0)) // processes)  # each process a share of the cores
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "textlora", "generate"]
    cmd += ["--config", str(config_file), "--reuse", "--label-names", *label_names]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    print(f"generate: {processes} processes of {threads} thread(s) under torchrun", flush=True)
    tail = []
    with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent) as proc:
        try:
            for line in proc.stderr:  # passed on as it comes (progress bars), the last lines kept for the error
                sys.stderr.write(line)
                tail = (tail + [line.rstrip()])[-20:]
        finally:
            if proc.poll() is None:
                proc.terminate()
    if proc.returncode != 0:
        errors = [line for line in tail if "textlora generate: error:" in line]
        if errors:
            raise UserError(errors[0].split("error: ", 1)[1])
        raise UserError(f"generate under torchrun failed (exit {proc.returncode}): {tail[-1] if tail else 'no message'}")


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGTERM when the pipeline's process ends (Linux), so that a
    killed pipeline leaves no generation running behind it."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _target_lengths(r: _Run, cap: int) -> tuple[float, float]:
    """Mean and spread of the target texts' lengths in the LM's tokens (each clamped to ``cap``): rows as long as the target's."""
    import numpy as np
    from transformers import AutoTokenizer

    texts = r.target_texts
    tok = AutoTokenizer.from_pretrained(str(r.lm))
    sample = texts[:: max(1, len(texts) // 3000)]
    lengths = np.minimum([len(ids) for ids in tok(sample)["input_ids"]], cap)
    return float(round(lengths.mean(), 1)), float(round(max(lengths.std(), 1.0), 1))


def _filter(r: _Run) -> None:
    from textlora.augment.filter import FilterConfig, filter_rows
    from textlora.fsutil import fingerprint

    cfg = r.source
    filtered = r.out / "synthetic" / "rows.filtered.csv"
    settings = {"output": str(filtered), **r.config.filter}
    settings |= {"input": str(r.generated), "real": cfg.data.train, "text_column": "text", "label_column": "label"}
    fcfg = _build(FilterConfig, settings, "filter.")
    syn = r.config.synthetic
    split = {"dev_fraction": syn.dev_fraction, "seed": cfg.seed, "check": syn.check, "check_max_noise": syn.check_max_noise}
    key = fingerprint({**asdict(fcfg), **split}, [fcfg.input, fcfg.real, fcfg.classifier], paths=("input", "output", "real", "classifier"))
    train_file, dev_file = r.out / "synthetic" / "train.csv", r.out / "synthetic" / "heldout.csv"
    cached = r.stages.done("filter", key)
    if not (cached and train_file.is_file()):
        t0 = r.stages.start("filter", key)
        filter_rows(fcfg, overwrite=True)
        report = json.loads(filtered.with_suffix(".report.json").read_text())
        n_train, n_dev = _split_synthetic(filtered, train_file, dev_file, syn.dev_fraction, cfg.seed)
        empty = [n for n in r.label_names if report["rows_out_per_class"].get(n, 0) == 0]
        note = f"{report['rows_in']:,} in; {n_train:,} train, {n_dev:,} held out as eval set '{SYNTHETIC_SET}'"
        check = _label_check(r, train_file) if syn.check else None
        if check and "skipped" not in check:
            verdict = "kept" if check["passed"] else "dropped"
            note += f"; label check: probe dev {check['dev']:.3f}, held-out rows {check['heldout']:.3f}, ~{check['noise']:.0%} mislabelled -> rows {verdict}"
        cached = r.stages.finish("filter", key, t0, rows=report["rows_out"], note=note, classes_with_no_rows=empty, n_dev=n_dev, check=check)
    else:
        r.stages.report("filter", cached, cached=True)
    for name in cached.get("classes_with_no_rows", []):
        r.notes.append(f"class '{name}' has no synthetic rows after filtering; the classifier trains without synthetic rows of it")
        print(f"warning: {r.notes[-1]}", flush=True)
    check = cached.get("check") or {}
    if "skipped" in check:
        r.notes.append(f"label check skipped: {check['skipped']}")
    if check.get("passed") is False:
        r.notes.append(
            f"the generated rows failed the label check: a bag-of-words probe predicts {check['heldout']:.1%} of held-out generated rows "
            f"against {check['dev']:.1%} of the dev split, so ~{check['noise']:.0%} of them look mislabelled (synthetic.check_max_noise: "
            f"{check['max_noise']}); the classifier trains on the source rows alone (synthetic.check: false keeps the rows)"
        )
        print(f"warning: {r.notes[-1]}", flush=True)
    else:
        r.extra_train.append(str(train_file))
    if cached.get("n_dev"):
        r.eval_sets[SYNTHETIC_SET] = str(dev_file)


def _split_synthetic(filtered: Path, train_file: Path, dev_file: Path, fraction: float, seed: int) -> tuple[int, int]:
    """Hold out ``fraction`` of each class's filtered rows (seeded) as target-style rows the classifier never trains on."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(filtered, keep_default_na=False, dtype={"label": str})
    rng = np.random.default_rng([seed, 7])
    dev_idx = []
    for _, group in df.groupby("label", sort=False):
        n = int(round(len(group) * fraction)) if len(group) > 1 else 0
        dev_idx += list(rng.permutation(group.index.to_numpy())[:n])
    dev = df.loc[sorted(dev_idx)]
    df.drop(index=dev.index).to_csv(train_file, index=False)
    dev.to_csv(dev_file, index=False)
    return len(df) - len(dev), len(dev)


def _label_check(r: _Run, train_file: Path) -> dict:
    """The label check on the rows the classifier would train on (textlora.augment.check)."""
    import pandas as pd

    from textlora.augment.check import MIN_ROWS, label_check

    cfg = r.source
    if cfg.data.multi_label or cfg.data.text_pair_column:
        return {"skipped": "it checks single-label, single-text rows"}
    rows = pd.read_csv(train_file, keep_default_na=False, dtype={"label": str})
    if len(rows) < MIN_ROWS:
        return {"skipped": f"{len(rows)} generated rows to train on, fewer than the {MIN_ROWS} it needs"}
    splits = _source_splits(r)
    names = splits.label_names
    source = (splits.train_texts, [names[k] for k in splits.train_labels])
    dev = (splits.val_texts, [names[k] for k in splits.val_labels])
    return label_check(source, dev, (rows["text"].tolist(), rows["label"].tolist()), r.config.synthetic.check_max_noise, seed=cfg.seed)


def _classifier_config(r: _Run, output_dir: Path, extra_train: list[str]):
    """The training config of one classifier: the user's, with the pipeline's extra rows, eval sets and lengths."""
    raw = copy.deepcopy(r.config.classifier)
    raw["output_dir"] = str(output_dir)
    raw.setdefault("data", {})
    raw["data"] = {**raw["data"], "extra_train": list(extra_train), "eval_sets": dict(r.eval_sets)}
    if r.config.select.checkpoint == SYNTHETIC_SET:
        if SYNTHETIC_SET not in r.eval_sets:
            raise UserError("config: select.checkpoint: synthetic needs held-out generated rows (synthetic.enabled and synthetic.dev_fraction > 0)")
        raw.setdefault("train", {})
        raw["train"] = {**raw["train"], "metric_for_best": f"{SYNTHETIC_SET}.accuracy"}
    if (raw.get("model") or {}).get("max_length") == "auto":  # the texts it will classify decide: the target's
        raw["model"]["max_length"] = _classifier_length(r, raw["model"].get("name", "minilm"))
    return config_from_dict(raw)


def _classifier_length(r: _Run, model_name: str) -> int:
    from textlora.models import load_tokenizer
    from textlora.resolve import AUTO_PERCENTILE, auto_length_cap, length_from_percentile

    return length_from_percentile(load_tokenizer(model_name), r.target_texts, auto_length_cap(model_name), AUTO_PERCENTILE)


def _train_key(config) -> str:
    from textlora.fsutil import fingerprint

    settings = config.to_dict()
    data = settings["data"]
    files = [data["train"], data["dev"], *data["extra_train"], *data["eval_sets"].values()]
    settings["data"] = {**data, "train": None, "dev": bool(data["dev"]), "extra_train": len(data["extra_train"]), "eval_sets": sorted(data["eval_sets"])}
    return fingerprint(settings, files, paths=("output_dir",))


def _train(r: _Run, stage: str, output_dir: Path, extra_train: list[str]) -> Path:
    """One classifier; a run killed in this stage resumes from its last checkpoint."""
    from textlora.checkpoints import list_checkpoints
    from textlora.run import is_run_dir
    from textlora.training import train

    cfg = _classifier_config(r, output_dir, extra_train)
    key = _train_key(cfg)
    cached = r.stages.done(stage, key)
    if cached and (output_dir / "textlora.json").is_file():
        r.stages.report(stage, cached, cached=True)
        return output_dir
    resume = "last" if r.stages.started(stage, key) and list_checkpoints(output_dir) and not (output_dir / "textlora.json").is_file() else "none"
    if resume == "last":
        print(f"{stage}: continuing {output_dir} from its last checkpoint", flush=True)
    t0 = r.stages.start(stage, key)
    train(cfg, resume=resume, overwrite=is_run_dir(output_dir))
    m = json.loads((output_dir / "metrics.json").read_text())
    best = m["best"] or {}
    sets = {n: round(s["accuracy"], 4) for n, s in (best.get("eval_sets") or {}).items()}
    note = f"best at epoch {best.get('epoch')} by {m['metric_for_best']}: dev {best.get('accuracy', float('nan')):.4f}" + "".join(
        f", {n} {a:.4f}" for n, a in sets.items()
    )
    r.stages.finish(stage, key, t0, rows=m["data"]["train_rows"], note=note, dev=round(best.get("accuracy", 0), 4), eval_sets=sets)
    return output_dir


def _pseudolabel(r: _Run, k: int, teacher: Path) -> Path:
    from textlora.fsutil import fingerprint
    from textlora.pseudolabel import pseudolabel

    st = r.config.self_training
    out = r.out / f"round{k}" / "pseudo.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    adapter = [p for p in (teacher / "adapter_model.safetensors", teacher / "config.yaml") if p.exists()]
    key = fingerprint({**asdict(st), "eval_files": len(r.eval_files)}, [r.config.target.texts, *r.eval_files, *adapter])
    stage = f"pseudo-label {k}"
    cached = r.stages.done(stage, key)
    if cached and out.is_file():
        r.stages.report(stage, cached, cached=True)
        return out
    t0 = r.stages.start(stage, key)
    pseudolabel(
        str(teacher),
        r.config.target.texts,
        str(out),
        text_column=r.config.target.text_column,
        min_confidence=st.min_confidence,
        max_per_class=st.max_per_class,
        balance=st.balance,
        exclude=r.eval_files,
        overwrite=True,
    )
    rep = json.loads(out.with_suffix(".report.json").read_text())
    for n in rep["classes_with_no_rows"]:
        r.notes.append(f"round {k}: class '{n}' got no pseudo-labels at min_confidence {st.min_confidence}")
    r.stages.finish(stage, key, t0, rows=rep["rows_written"], note=f"of {rep['texts'] - rep['excluded']:,} target texts, by {teacher}")
    return out


def _evaluate(r: _Run, run: Path) -> dict:
    """The final run on its dev split and every eval set (as a user would evaluate it: merged weights)."""
    from textlora.evaluation import evaluate

    t0 = time.perf_counter()
    files = {"dev": str(run / "dev.csv"), **r.eval_sets}
    results = evaluate(str(run), list(files.values()), output_dir=str(r.out / "eval"), overwrite=True)
    keys = ("accuracy", "accuracy_se", "macro_f1")
    metrics = {
        name: {**{k: round(results[f][k], 4) for k in keys}, "n": results[f]["n"], "near_copies": results[f]["near_copies"]} for name, f in files.items()
    }
    entry = {"seconds": round(time.perf_counter() - t0, 1), "note": ", ".join(f"{n} {_accuracy(m)}" for n, m in metrics.items())}
    r.stages.report("evaluate", entry, cached=False)
    return metrics


def _predict(r: _Run, run: Path) -> Path:
    from textlora.prediction import predict

    t0 = time.perf_counter()
    out = predict(str(run), data=r.config.target.texts, output=str(r.out / "predictions.csv"), text_column=r.config.target.text_column, overwrite=True)
    import pandas as pd

    n = len(pd.read_csv(out))
    r.stages.report("predict", {"seconds": round(time.perf_counter() - t0, 1), "rows": n, "note": str(out)}, cached=False)
    return Path(out)


def _accuracy(m: dict) -> str:
    """``0.8993 +- 0.0290 (n=288, 17 near-copies in 1 group)``: an accuracy with its standard error."""
    near = m.get("near_copies") or {}
    copies = f", {near['rows']} near-copies in {near['groups']} group{'s' * (near['groups'] > 1)}" if near.get("groups") else ""
    return f"{m['accuracy']:.4f} +- {m['accuracy_se']:.4f} (n={m['n']}{copies})"


def format_summary(summary: dict) -> str:
    """The table the verb ends with: stage, seconds, rows, dev and eval-set accuracy."""
    sets = sorted({n for s in summary["stages"] for n in (s.get("eval_sets") or {})})
    head = f"{'stage':<18} {'seconds':>8} {'rows':>8} {'dev':>7}" + "".join(f" {n:>10}" for n in sets)
    lines = ["", "summary (" + summary["output_dir"] + ")", head, "-" * len(head)]
    for s in summary["stages"]:
        secs = f"{s.get('seconds', 0):.0f}" + ("*" if s["cached"] else "")
        rows = f"{s['rows']:,}" if s.get("rows") is not None else ""
        dev = f"{s['dev']:.4f}" if s.get("dev") is not None else ""
        lines.append(f"{s['stage']:<18} {secs:>8} {rows:>8} {dev:>7}" + "".join(f" {(s.get('eval_sets') or {}).get(n, ''):>10}" for n in sets))
    lines.append(f"{'total':<18} {summary['seconds']:>8.0f}")
    final = summary["metrics"]
    lines.append("final run: " + ", ".join(f"{n} accuracy {_accuracy(m)}" for n, m in final.items()) + " (+- one standard error)")
    lines += [f"note: {n}" for n in summary["notes"]]
    m = summary["machine"]
    lines.append(f"machine: {m['cpu']}, torch {m['torch_capability']}, {m['threads']} threads, {m['device']}")
    if any(s["cached"] for s in summary["stages"]):
        lines.append("* cached: the seconds it took when it ran")
    return "\n".join(lines)
