"""The whole method as one verb: labelled source rows + unlabelled target texts -> a classifier for the target.

Stages, each cached by content (its settings and the digests of its inputs, never their paths)
in ``OUTPUT_DIR/stages.json``, so that a rerun redoes only what changed and a killed run
continues at the stage where it stopped (generation inside its batches, training from its last
checkpoint):

0. ``trial``: ``synthetic.trial_rows`` rows written by the base LM are filtered and label-checked
   before anything is adapted; when they fail, ``adapt``, ``generate`` and ``filter`` are skipped
   and the classifier trains on the source rows alone (the summary says so).
1. ``adapt``: the causal LM fine-tuned on the unlabelled target texts (the eval sets' texts left
   out); with ``synthetic.prompts: labelled`` also on the source rows written ``LABEL: text``.
2. ``generate``: labelled target-style rows from class prompts (made automatically unless a
   prompt file is given); each row's label is its class name. With ``synthetic.prompts: rewrite``
   the rows are labelled source rows with their most source-specific words written again by the
   adapted LM instead (``textlora.augment.rewrite``; settings under ``rewrite:``).
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
from dataclasses import dataclass, field
from pathlib import Path

from textlora.augment.prompts import TEMPLATES
from textlora.config import build, check, config_from_dict, merge, parse_overrides, read_yaml
from textlora.errors import UserError
from textlora.stages import Record, run_stages
from textlora.stages.classifier import Evaluate, Predict, PseudoLabel, Train, format_accuracy
from textlora.stages.context import LABELLED_SET, SYNTHETIC_SET, Context, source_splits
from textlora.stages.synthetic import PROMPT_MODES, Adapt, Filter, Generate, Trial

__all__ = ["PipelineConfig", "default_stages", "format_summary", "load_pipeline_config", "pipeline", "source_splits"]
CLASSIFIER_KEYS = ("output_dir", "seed", "model", "lora", "budget", "data", "train")
# settings of the stage configs that the pipeline derives from its own sections
OWNED = {
    "adapt": {"texts": "target.texts", "text_column": "target.text_column", "exclude": "data.eval_sets", "labelled": "synthetic.prompts: labelled"},
    "generate": {"model": "the adapt stage", "prompts": "synthetic.prompts"},
    "filter": {"input": "the generate stage", "real": "data.train", "text_column": "data.text_column", "label_column": "data.label_column"},
    "rewrite": {"model": "the adapt stage", "source": "the source training split", "target": "target.texts", "target_text_column": "target.text_column", "output": "the pipeline"},
}


@dataclass
class TargetConfig:
    texts: str | None = None  # the unlabelled target texts (required): adapted on, pseudo-labelled, predicted
    text_column: str = "text"  # the column of `texts` that holds the text (IDs come from its `id` column, else the row number)
    labelled: str | None = None  # labels a person gave some target texts (id,text,label: `textlora label` writes it; an empty label is a skip)
    labelled_dev_fraction: float = 0.5  # of those rows (per class, seeded): the target dev set that chooses; the rest join training
    labelled_repeat: int = 1  # the labelled rows that join training count this many times (repeated): their weight beside many source rows

    def __post_init__(self) -> None:
        check(self.texts is not None, "target.texts", "a file of unlabelled target texts", self.texts)
        check(0 <= self.labelled_dev_fraction <= 1, "target.labelled_dev_fraction", "a number in [0, 1]", self.labelled_dev_fraction)
        check(isinstance(self.labelled_repeat, int) and self.labelled_repeat >= 1, "target.labelled_repeat", "an integer >= 1", self.labelled_repeat)


@dataclass
class SyntheticConfig:
    enabled: bool = True  # false: no adapt/generate/filter (the classifier trains on the source rows alone)
    prompts: str = "instruct"  # instruct | source | labelled (made from the data; textlora.augment.prompts) | rewrite (source rows rewritten: textlora.augment.rewrite) | a prompt file (YAML)
    templates: list[str] = field(default_factory=lambda: list(TEMPLATES))  # instruct: "{label}" is the class name
    source_prompts: int = 64  # source: openings a class, from the source training split
    source_words: int = 6  # source: words an opening
    dev_fraction: float = 0.1  # filtered rows held out as the eval set "synthetic" (never trained on); 0: none
    processes: int = 1  # generate under torchrun in this many processes (the same rows): e.g. one a GPU
    check: bool = True  # the label check (textlora.augment.check): rows that look mislabelled are dropped
    check_max_noise: float = 0.25  # dropped when the estimated share of mislabelled rows is above this
    trial_rows: int = 200  # before adapting, this many rows by the base LM are label-checked; when they fail, adapt/generate/filter are skipped (0: no trial)
    trial_max_noise: float = 0.45  # the trial stops the method above this estimate (the base LM's rows are noisier than the adapted LM's)
    trial_adapt_texts: int = 64  # prompts: labelled: the trial's LM is first adapted on this many texts (it must learn "LABEL: text")

    def __post_init__(self) -> None:
        check(0 <= self.dev_fraction < 1, "synthetic.dev_fraction", "a number in [0, 1)", self.dev_fraction)
        check(0 <= self.check_max_noise <= 1, "synthetic.check_max_noise", "a number in [0, 1]", self.check_max_noise)
        check(type(self.processes) is int and self.processes >= 1, "synthetic.processes", "an integer >= 1", self.processes)
        check(self.source_prompts >= 1, "synthetic.source_prompts", "an integer >= 1", self.source_prompts)
        check(self.source_words >= 1, "synthetic.source_words", "an integer >= 1", self.source_words)
        check(type(self.trial_rows) is int and self.trial_rows >= 0, "synthetic.trial_rows", "an integer >= 0", self.trial_rows)
        check(0 <= self.trial_max_noise <= 1, "synthetic.trial_max_noise", "a number in [0, 1]", self.trial_max_noise)
        check(type(self.trial_adapt_texts) is int and self.trial_adapt_texts >= 1, "synthetic.trial_adapt_texts", "an integer >= 1", self.trial_adapt_texts)
        check(all("{label}" in t for t in self.templates), "synthetic.templates", "templates that each contain {label}", self.templates)


@dataclass
class SelectConfig:
    checkpoint: str = "dev"  # dev: the source dev split chooses the checkpoint | synthetic: the held-out generated rows do

    def __post_init__(self) -> None:
        check(self.checkpoint in ("dev", "synthetic"), "select.checkpoint", "dev or synthetic", self.checkpoint)


@dataclass
class SelfTrainingConfig:
    rounds: int = 0  # pseudo-label the target texts and train again, this many times
    min_confidence: float = 0.9  # a pseudo-label is kept when its top probability reaches this
    balance: bool = True  # the same number of pseudo-labels for every class
    max_per_class: int | None = None  # at most this many pseudo-labels a class (most confident first); None: no cap

    def __post_init__(self) -> None:
        check(self.rounds >= 0, "self_training.rounds", "an integer >= 0", self.rounds)
        check(0 <= self.min_confidence <= 1, "self_training.min_confidence", "a number in [0, 1]", self.min_confidence)


@dataclass
class PipelineConfig:
    classifier: dict  # the training config's sections, as read (textlora.config.Config)
    target: TargetConfig
    synthetic: SyntheticConfig
    select: SelectConfig
    self_training: SelfTrainingConfig
    # the step sections as the user wrote them, each already checked against its step's dataclass
    # (textlora.augment.adapt.AdaptConfig, ...GenerateConfig, ...FilterConfig): the stages add the
    # files the pipeline owns and the earlier stages' results when they run
    adapt: dict
    generate: dict  # length_mean / length_std may be auto (the target texts' lengths)
    filter: dict
    rewrite: dict  # synthetic.prompts: rewrite (textlora.augment.rewrite.RewriteConfig)

    @property
    def output_dir(self) -> Path:
        return Path(self.classifier.get("output_dir", "runs/pipeline"))


def load_pipeline_config(path: str | None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a pipeline YAML file plus dotted overrides; every problem is one line naming the key."""
    raw = merge(read_yaml(path) if path else {}, parse_overrides(overrides or []))
    try:
        return _pipeline_config(raw)
    except UserError as e:
        raise UserError(f"{e} (in {path})" if path else str(e)) from None


def _pipeline_config(raw: dict) -> PipelineConfig:
    known = set(CLASSIFIER_KEYS) | {"target", "synthetic", "select", "self_training", *OWNED}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"config: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
    classifier = {k: raw[k] for k in CLASSIFIER_KEYS if k in raw}
    train, data, target = (raw.get(k) or {} for k in ("train", "data", "target"))
    lora = raw.get("lora")
    top_k = isinstance(lora, dict) and lora.get("layers") is not None
    if all(isinstance(x, dict) for x in (train, data, target)) and (train.get("target_objective", "none") != "none" or top_k) and not data.get("target_texts"):
        # the classifier's target objective learns from the pipeline's target texts; with lora.layers they join the
        # prefix cache, so that predicting them (and self-training's and the labelling page's passes) reads them back
        classifier["data"] = {**data, "target_texts": target.get("texts"), "target_text_column": target.get("text_column", "text")}
    checked = config_from_dict(copy.deepcopy(classifier))  # checks every key now, before any stage runs
    if not checked.data.train:
        raise UserError("config: data.train: no training file given; set it to the labelled source rows (CSV, TSV, JSONL or Parquet)")
    if SYNTHETIC_SET in checked.data.eval_sets:
        raise UserError(f"config: data.eval_sets.{SYNTHETIC_SET}: the name is the pipeline's (held-out generated rows); choose another")
    stages = {}
    for name in OWNED:
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise UserError(f"config: {name}: expected a mapping, found {section!r}")
        for key, source in OWNED[name].items():
            if key in section:
                raise UserError(f"config: {name}.{key}: set by the pipeline (from {source}); remove it")
        _check_section(name, section)
        stages[name] = section
    return PipelineConfig(
        classifier=classifier,
        target=build(TargetConfig, raw.get("target") or {}, "target."),
        synthetic=build(SyntheticConfig, raw.get("synthetic") or {}, "synthetic."),
        select=build(SelectConfig, raw.get("select") or {}, "select."),
        self_training=build(SelfTrainingConfig, raw.get("self_training") or {}, "self_training."),
        **stages,
    )


def _check_section(name: str, section: dict) -> None:
    """A step section checked against its dataclass now (unknown keys, types, ranges), with what the
    pipeline fills in later standing in: a typo under ``filter:`` fails before adapt spends minutes."""
    from textlora.augment.adapt import AdaptConfig
    from textlora.augment.filter import FilterConfig
    from textlora.augment.generate import GenerateConfig
    from textlora.augment.rewrite import RewriteConfig

    cls = {"adapt": AdaptConfig, "generate": GenerateConfig, "filter": FilterConfig, "rewrite": RewriteConfig}[name]
    stand_in = {
        "adapt": {"texts": "-", "output_dir": "-"},
        "generate": {"prompts": "-", "output": "-"},
        "filter": {"input": "-", "output": "-"},
        "rewrite": {"source": "-", "target": "-", "output": "-"},
    }[name]
    values = dict(section)
    if name == "generate":  # auto: measured on the target texts when the stage runs
        values |= {k: 1.0 for k in ("length_mean", "length_std") if values.get(k) == "auto"}
    try:
        build(cls, {**stand_in, **values}, f"{name}.")
    except UserError as e:
        text = str(e)
        if text.startswith("config: ") and not text.startswith(f"config: {name}.") and "unknown key" not in text:
            text = f"config: {name}.{text[len('config: '):]}"  # the step's own checks name bare keys
        raise UserError(text) from None


# --- the verb ------------------------------------------------------------------------------


def default_stages(config: PipelineConfig) -> list:
    """The pipeline's stages in order (``textlora.stages`` says what a stage is): the list is the order."""
    stages = [Trial(), Adapt(), Generate(), Filter()] if config.synthetic.enabled else []
    stages.append(Train("train", "classifier"))
    for k in range(1, config.self_training.rounds + 1):
        stages += [PseudoLabel(k), Train(f"self-training {k}", f"round{k}/classifier", round_k=k)]
    return [*stages, Evaluate(), Predict()]


def pipeline(config: PipelineConfig, overwrite: bool = False, stages: list | None = None) -> dict:
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
        stages: the stages to run (default: :func:`default_stages`); a list may add its own.

    Returns:
        The summary: stages, the final run, the predictions file, the final metrics and every
        stage's resolved settings.
    """

    from textlora.device import machine
    from textlora.fsutil import hold_lock

    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    with hold_lock(out.parent / f".{out.name}.pipeline.lock", what=f"output_dir {out}"):
        ctx = Context(config, out)
        record = Record(out, fresh=overwrite)
        t_all = time.perf_counter()
        _check_inputs(ctx)
        run_stages(default_stages(config) if stages is None else stages, ctx, record)
        summary = {
            "output_dir": str(out),
            "run": str(ctx.run),
            "predictions": ctx.results["predict"].data["predictions"],
            "seconds": round(time.perf_counter() - t_all, 1),
            "stages": record.summary,
            "metrics": ctx.results["evaluate"].data["metrics"],
            "notes": ctx.notes,
            "methods": methods(ctx),
            "machine": machine(),
            "resolved": ctx.resolved,
        }
        (out / "pipeline.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary))
    print(f"run: {summary['run']}")
    print(f"predictions: {summary['predictions']}")
    return summary


def _check_inputs(ctx: Context) -> None:
    """Source and target files readable, every class with rows, eval sets labelled: before any stage runs."""
    from textlora.data import label_names_for, read_texts
    from textlora.registry import resolve_model_path

    cfg = ctx.source = config_from_dict(copy.deepcopy(ctx.config.classifier))
    src = read_texts(cfg.data.train, cfg.data.text_column, cfg.data.label_column)
    ctx.label_names = label_names_for(src.labels, cfg.data.label_names, cfg.data.train)
    present = {(ctx.label_names[v] if isinstance(v, int) else v) for v in src.labels}
    missing = [n for n in ctx.label_names if n not in present]
    if missing:
        raise UserError(f"{cfg.data.train}: class '{missing[0]}' has no rows")
    ctx.target_texts = read_texts(ctx.config.target.texts, ctx.config.target.text_column, None, require_labels=False).texts
    resolve_model_path(cfg.model.name)  # an alias whose package is missing is one line now, not after adaptation
    mode = ctx.config.synthetic.prompts
    if ctx.config.synthetic.enabled and mode not in PROMPT_MODES:
        from textlora.augment.generate import read_prompts

        read_prompts(mode, ctx.label_names)  # a class missing from the file, or not in the data, is one line naming it
    ctx.eval_files = [*cfg.data.eval_sets.values(), *([cfg.data.dev] if cfg.data.dev else [])]
    ctx.eval_sets = dict(cfg.data.eval_sets)
    ctx.extra_train = list(cfg.data.extra_train)
    if ctx.config.target.labelled:
        _labelled_rows(ctx)


def _labelled_rows(ctx: Context) -> None:
    """``target.labelled``: checked by row, split per class (seeded) into a target dev set
    (``labelled``: chooses the checkpoint and the final run, never trained on) and rows that join training."""
    import numpy as np
    import pandas as pd

    from textlora.active import read_labels
    from textlora.data import read_texts

    tc = ctx.config.target
    if LABELLED_SET in ctx.eval_sets:
        raise UserError(f"config: data.eval_sets.{LABELLED_SET}: the name is the pipeline's (target.labelled's dev rows); choose another")
    frame = read_texts(tc.texts, tc.text_column, None, require_labels=False)
    ids = [str(i) for i in frame.ids] if frame.ids is not None else [str(i) for i in range(len(frame.texts))]
    given = {i: v for i, v in read_labels(tc.labelled, ids, ctx.label_names, tc.texts).items() if v}
    text_of = dict(zip(ids, frame.texts))
    rows = pd.DataFrame({"id": list(given), "text": [text_of[i] for i in given], "label": list(given.values())})
    rng = np.random.default_rng([ctx.source.seed, 23])
    dev_idx = []
    for _, group in rows.groupby("label", sort=True):
        dev_idx += list(rng.permutation(group.index.to_numpy())[: int(round(len(group) * tc.labelled_dev_fraction))])
    dev = rows.loc[sorted(dev_idx)]
    train = rows.drop(index=dev.index)
    folder = ctx.out / "labelled"
    folder.mkdir(parents=True, exist_ok=True)
    if len(train):
        pd.concat([train] * tc.labelled_repeat).to_csv(folder / "train.csv", index=False)
        ctx.extra_train.append(str(folder / "train.csv"))
    if len(dev):
        dev.to_csv(folder / f"{LABELLED_SET}.csv", index=False)  # named as its eval set: evaluate names outputs by file name
        ctx.eval_sets[LABELLED_SET] = str(folder / f"{LABELLED_SET}.csv")
        ctx.eval_files.append(str(folder / f"{LABELLED_SET}.csv"))  # never adapted on or pseudo-labelled
    ctx.note(f"target.labelled: {len(rows)} labelled target texts, {len(dev)} as the target dev set '{LABELLED_SET}' (it chooses), {len(train)} trained on" + (f" (each {tc.labelled_repeat} times)" if tc.labelled_repeat > 1 else ""))


def methods(ctx: Context) -> list[dict]:
    """Each adaptation method the config asked for: whether it ran, whether its result was kept, and
    on what evidence (the trial's and the label check's estimates, the labelled target rows)."""
    cfg, results, out = ctx.config, ctx.results, []
    syn = cfg.synthetic
    if syn.enabled:
        name = f"synthetic rows (prompts: {syn.prompts})"
        trial = (results.get("trial").data or {}).get("check") if "trial" in results else None
        check = (results["filter"].data or {}).get("check") if "filter" in results else None
        if trial and trial.get("passed") is False:
            evidence = trial.get("why") or f"the trial: ~{trial['noise']:.0%} of its rows mislabelled (above {trial['max_noise']})"
            out.append({"method": name, "ran": False, "kept": False, "evidence": evidence})
        elif "filter" not in results:
            out.append({"method": name, "ran": False, "kept": False, "evidence": "not run"})
        elif check is None:
            out.append({"method": name, "ran": True, "kept": True, "evidence": "synthetic.check: false (not judged)"})
        elif "skipped" in check:
            out.append({"method": name, "ran": True, "kept": True, "evidence": f"label check skipped: {check['skipped']}"})
        else:
            within = "at most" if check["passed"] else "above"
            out.append({"method": name, "ran": True, "kept": bool(check["passed"]), "evidence": f"label check: ~{check['noise']:.0%} mislabelled ({within} {check['max_noise']})"})
    objective = (results["train"].data or {}).get("target_objective") if "train" in results else None
    if objective:
        used = objective["used"]
        evidence = f"weight {objective['weight']} on {objective['texts']:,} target texts (unjudged: no label-free test of it)" if used else objective["why"]
        out.append({"method": f"target objective ({objective['kind']})", "ran": used, "kept": used, "evidence": evidence})
    for k in range(1, cfg.self_training.rounds + 1):
        stage = f"self-training {k}"
        if stage not in results:
            continue
        run = results[stage].data["run"]
        labelled = next((c[2] for c in ctx.candidates if c[0] == stage), None)
        evidence = f"{LABELLED_SET} accuracy {labelled:.4f}" if labelled is not None else "the latest classifier (no labelled target rows to choose by)"
        out.append({"method": f"self-training round {k}", "ran": True, "kept": str(ctx.run) == run, "evidence": evidence})
    return out


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
    lines.append("final run: " + ", ".join(f"{n} accuracy {format_accuracy(m)}" for n, m in final.items()) + " (+- one standard error)")
    lines += [f"note: {n}" for n in summary["notes"]]
    for m in summary.get("methods") or []:
        verdict = "kept" if m["kept"] else ("ran, not kept" if m["ran"] else "not run")
        lines.append(f"method: {m['method']}: {verdict} ({m['evidence']})")
    m = summary["machine"]
    lines.append(f"machine: {m['cpu']}, torch {m['torch_capability']}, {m['threads']} threads, {m['device']}")
    if any(s["cached"] for s in summary["stages"]):
        lines.append("* cached: the seconds it took when it ran")
    return "\n".join(lines)
