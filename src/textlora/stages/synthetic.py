"""The synthetic-row stages: adapt a causal LM on the target texts, generate labelled rows, filter them.

Each stage builds its step's config (``textlora.augment``) from the pipeline's section, the files
the pipeline owns and the earlier stages' results, resolves its ``auto`` settings through
``textlora.resolve``, and records the settings it ran with in ``ctx.resolved``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

from textlora.config import build
from textlora.errors import UserError
from textlora.stages import StageResult
from textlora.stages.context import SYNTHETIC_SET, Context

PROMPT_MODES = ("instruct", "source", "labelled", "rewrite")


TRIAL_SOURCE_ROWS = 4000  # source rows each of the trial's probes trains on (AG News: 5 x 12 s with all 20,000)


def _sample(n: int, k: int, seed: int) -> list[int]:
    """``k`` of ``range(n)`` (all when ``n <= k``), seeded, in order."""
    import numpy as np

    return list(range(n)) if n <= k else sorted(np.random.default_rng([seed, 29]).choice(n, k, replace=False).tolist())


class Trial:
    """Judge the synthetic rows on a sample before paying for them: ``synthetic.trial_rows`` rows
    written by the base LM (not yet adapted; with ``prompts: labelled``, adapted for a moment on
    ``trial_adapt_texts`` texts, since it must first learn the ``LABEL: text`` form), filtered, and
    label-checked with every row held out once (``label_check_folds``) against
    ``synthetic.trial_max_noise``, looser than the full check's ``check_max_noise`` since the base
    LM's rows are noisier than the adapted LM's (which the full check still judges after ``filter``).
    When they fail, ``adapt``,
    ``generate`` and ``filter`` are skipped, the classifier trains on the source rows alone, and the
    summary says so. When they pass, or are too few to judge, the pipeline goes on as without it.

    With ``prompts: rewrite`` the base LM rewrites ``trial_rows`` source rows instead, through the
    rewrite's own label and domain filters (every row it keeps already carries its label by the
    same kind of probe the label check uses): when the share it keeps, over the rows the full run
    would rewrite, comes to fewer than the label check's ``MIN_ROWS``, the method stops.

    Measured (docs/experiments.md, "Stopping early"; 200 rows, seed 42): the base LM's rows ~21%
    mislabelled on AG News with its prompt file (the adapted LM's: 2-4%, kept), ~53% on DVD ->
    electronics and ~55% on imdb -> airline with instruction prompts (the adapted LM's: 29-40% and
    34%, dropped)."""

    name = "trial"

    def _rewrite_config(self, ctx: Context):
        from textlora.augment.adapt import AdaptConfig

        base = ctx.config.adapt.get("model", AdaptConfig.model)
        per_class = max(1, -(-ctx.config.synthetic.trial_rows // len(ctx.label_names)))
        return rewrite_config(ctx, base, rows_per_class=per_class, output=str(ctx.out / "trial" / "rows.csv"))

    def _configs(self, ctx: Context):
        from textlora.augment.adapt import AdaptConfig
        from textlora.augment.filter import FilterConfig

        syn, work = ctx.config.synthetic, ctx.out / "trial"
        acfg = None
        if syn.prompts == "labelled":
            changes = {"output_dir": str(work / "lm"), "max_texts": syn.trial_adapt_texts, "heldout": 8, "save_steps": 10**6}
            acfg = build(AdaptConfig, {**asdict(Adapt().config(ctx)), **changes}, "adapt.")
        base = ctx.config.adapt.get("model", AdaptConfig.model)
        per_class = max(1, -(-syn.trial_rows // len(ctx.label_names)))
        gcfg = generate_config(ctx, base, rows_per_class=per_class, output=str(work / "rows.csv"))  # lengths in the base LM's tokens
        if acfg is not None:
            gcfg = replace(gcfg, model=acfg.output_dir)
        settings = {**filter_defaults(ctx.out), **ctx.config.filter}
        settings |= {"input": gcfg.output, "output": str(work / "rows.filtered.csv"), "real": ctx.source.data.train, "text_column": "text", "label_column": "label"}
        return acfg, gcfg, build(FilterConfig, settings, "filter.")

    def key(self, ctx: Context) -> str:
        from textlora.augment.adapt import adapt_key
        from textlora.augment.generate import generate_key
        from textlora.augment.rewrite import rewrite_key
        from textlora.fsutil import fingerprint

        if ctx.config.synthetic.prompts == "rewrite":
            planned = ctx.config.rewrite.get("rows_per_class")
            return fingerprint({"rewrite": rewrite_key(self._rewrite_config(ctx), ctx.label_names), "planned": planned}, [], paths=())
        acfg, gcfg, fcfg = self._configs(ctx)
        syn = ctx.config.synthetic
        if acfg is None:
            generated = generate_key(gcfg, ctx.label_names)
        else:  # the briefly adapted LM's folder exists only once it has run: its settings and inputs stand for it
            generated = [adapt_key(acfg), {k: v for k, v in asdict(gcfg).items() if k not in ("model", "output", "prompts")}]
        settings = {"generate": generated, "filter": asdict(fcfg), "max_noise": syn.trial_max_noise, "seed": ctx.source.seed}
        settings |= {"trial_rows": syn.trial_rows, "prompts": syn.prompts}
        return fingerprint(settings, [gcfg.prompts, fcfg.real], paths=())

    def skip(self, ctx: Context) -> str | None:
        syn, cfg = ctx.config.synthetic, ctx.source
        if not syn.check:
            return "synthetic.check is off"
        if syn.trial_rows == 0:
            return "synthetic.trial_rows is 0"
        if cfg.data.multi_label or cfg.data.text_pair_column:
            return "the label check judges single-label, single-text rows"
        return None

    def run(self, ctx: Context, resume: bool) -> StageResult:
        import pandas as pd

        from textlora.augment.adapt import adapt
        from textlora.augment.check import MIN_ROWS, label_check_folds
        from textlora.augment.filter import filter_rows
        from textlora.augment.generate import generate

        if ctx.config.synthetic.prompts == "rewrite":
            return self._run_rewrite(ctx)
        acfg, gcfg, fcfg = self._configs(ctx)
        if acfg is not None:
            adapt(acfg, reuse=True)
        generate(gcfg, label_names=ctx.label_names, reuse=True)
        filter_rows(fcfg, overwrite=True)
        rows = pd.read_csv(fcfg.output, keep_default_na=False, dtype={"label": str})
        lm = f"the LM adapted on {acfg.max_texts} texts" if acfg else "the base LM"
        if len(rows) < MIN_ROWS:
            check = {"skipped": f"{len(rows)} rows kept of the trial's {gcfg.rows_per_class * len(ctx.label_names)}, fewer than the {MIN_ROWS} it needs"}
            return StageResult(len(rows), f"rows by {lm}: not judged ({check['skipped']})", {"check": check})
        splits = ctx.source_splits()
        names = splits.label_names
        keep = _sample(len(splits.train_texts), TRIAL_SOURCE_ROWS, ctx.source.seed)  # five probes: each on a sample of the source rows
        source = ([splits.train_texts[i] for i in keep], [names[splits.train_labels[i]] for i in keep])
        dev = (splits.val_texts, [names[k] for k in splits.val_labels])
        check = label_check_folds(source, dev, (rows["text"].tolist(), rows["label"].tolist()), ctx.config.synthetic.trial_max_noise, seed=ctx.source.seed)
        if "skipped" in check:
            note = f"rows by {lm}: not judged ({check['skipped']})"
        else:
            verdict = "go on" if check["passed"] else "stop: adapt, generate and filter skipped"
            note = f"{len(rows)} rows by {lm}: probe dev {check['dev']:.3f}, rows {check['heldout']:.3f}, ~{check['noise']:.0%} mislabelled -> {verdict}"
        return StageResult(len(rows), note, {"check": check})

    def _run_rewrite(self, ctx: Context) -> StageResult:
        from textlora.augment.check import MIN_ROWS
        from textlora.augment.rewrite import RewriteConfig, rewrite

        cfg = self._rewrite_config(ctx)
        rewrite(cfg, label_names=ctx.label_names, reuse=True)
        s = json.loads(Path(cfg.output).with_suffix(".rewrite.json").read_text())
        planned = ctx.config.rewrite.get("rows_per_class", RewriteConfig.rows_per_class) * len(ctx.label_names)
        expected = s["rows_written"] / s["rows"] * planned if s["rows"] else 0.0
        passed = expected >= MIN_ROWS
        why = f"the trial: {s['rows_written']} of {s['rows']} rewrites by the base LM kept by the label and domain filters, ~{expected:.0f} of the full run's {planned}, fewer than the {MIN_ROWS} rows the label check needs"
        check = {"rows": s["rows"], "kept": s["rows_written"], "expected": round(expected), "min_rows": MIN_ROWS, "passed": passed, "why": why}
        verdict = "go on" if passed else "stop: adapt, generate and filter skipped"
        note = f"{s['rows']} source rows rewritten by the base LM, {s['rows_written']} kept (~{expected:.0f} of the full run's {planned}) -> {verdict}"
        return StageResult(s["rows_written"], note, {"check": check})

    def use(self, ctx: Context, result: StageResult) -> None:
        check = result.data.get("check") or {}
        if check.get("passed") is False and "why" in check:
            ctx.skip_synthetic = check["why"]
            ctx.note(f"stopped early: {check['why']}; adapt, generate and filter were skipped (synthetic.trial_rows: 0 runs them anyway)", warn=True)
        elif check.get("passed") is False:
            ctx.skip_synthetic = f"the trial's rows failed the label check (~{check['noise']:.0%} mislabelled)"
            ctx.note(
                f"stopped early: {result.rows} rows written before adaptation failed the label check (a bag-of-words probe predicts "
                f"{check['heldout']:.1%} of them against {check['dev']:.1%} of the dev split: ~{check['noise']:.0%} look mislabelled; "
                f"synthetic.trial_max_noise: {check['max_noise']}); adapt, generate and filter were skipped and the classifier trains on "
                "the source rows alone (synthetic.trial_rows: 0 runs them anyway)",
                warn=True,
            )


class Adapt:
    """The causal LM fine-tuned on the unlabelled target texts (the eval sets' texts left out)."""

    name = "adapt"

    def config(self, ctx: Context):
        from textlora.augment.adapt import AdaptConfig

        settings = {**adapt_defaults(ctx.out), **ctx.config.adapt}
        settings |= {"texts": ctx.config.target.texts, "text_column": ctx.config.target.text_column, "exclude": ctx.eval_files}
        if ctx.config.synthetic.prompts == "labelled":
            settings |= {"labelled": str(ctx.source_split_file()), "labelled_text_column": "text", "labelled_label_column": "label"}
        return build(AdaptConfig, settings, "adapt.")

    def key(self, ctx: Context) -> str:
        from textlora.augment.adapt import adapt_key

        return adapt_key(self.config(ctx))

    def present(self, ctx: Context, result: StageResult) -> bool:
        return (Path(result.data["lm"]) / "adapt_metrics.json").is_file()

    def skip(self, ctx: Context) -> str | None:
        return ctx.skip_synthetic

    def run(self, ctx: Context, resume: bool) -> StageResult:
        from textlora.augment.adapt import adapt, is_adapted

        acfg = self.config(ctx)
        reused = is_adapted(acfg)  # made by another pipeline that shares this output_dir: no new work
        adapt(acfg, reuse=True)  # a killed adaptation continues from its own checkpoints
        m = json.loads((Path(acfg.output_dir) / "adapt_metrics.json").read_text())
        note = ("reused " + acfg.output_dir + "; " if reused else "") + (
            f"perplexity {m['perplexity_before']:.1f} -> {m['perplexity_after']:.1f} on {m['heldout_texts']} held-out target texts"
        )
        if m.get("labelled_rows"):
            note += f"; {m['labelled_rows']:,} labelled source rows"
        data = {"lm": acfg.output_dir, "max_length": m.get("max_length", acfg.max_length), "perplexity_after": m["perplexity_after"]}
        return StageResult(m.get("target_texts", m["train_texts"]), note, data)

    def use(self, ctx: Context, result: StageResult) -> None:
        ctx.resolved[self.name] = {**asdict(self.config(ctx)), "max_length": result.data.get("max_length")}


def adapt_defaults(out: Path) -> dict:
    """The pipeline's own defaults for the adapt section (the verb's are AdaptConfig's)."""
    return {"max_length": "auto", "output_dir": str(out / "lm")}


class Generate:
    """Labelled target-style rows from class prompts (made from the data unless a prompt file is
    given); with ``synthetic.prompts: rewrite``, labelled source rows rewritten by the adapted LM."""

    name = "generate"

    def config(self, ctx: Context):
        lm = ctx.results["adapt"].data["lm"]
        return rewrite_config(ctx, lm) if ctx.config.synthetic.prompts == "rewrite" else generate_config(ctx, lm)

    def skip(self, ctx: Context) -> str | None:
        return ctx.skip_synthetic

    def key(self, ctx: Context) -> str:
        from textlora.augment.generate import generate_key
        from textlora.augment.rewrite import rewrite_key

        cfg = self._config(ctx)
        return rewrite_key(cfg, ctx.label_names) if ctx.config.synthetic.prompts == "rewrite" else generate_key(cfg, ctx.label_names)

    def _config(self, ctx: Context):
        if getattr(self, "_cached", None) is None or self._cached[0] is not ctx:
            self._cached = (ctx, self.config(ctx))  # lengths are measured once a run
        return self._cached[1]

    def present(self, ctx: Context, result: StageResult) -> bool:
        return Path(result.data["rows"]).is_file()

    def run(self, ctx: Context, resume: bool) -> StageResult:
        from textlora.augment.generate import generate, is_generated

        if ctx.config.synthetic.prompts == "rewrite":
            return self._rewrite(ctx)
        gcfg = self._config(ctx)
        reused = is_generated(gcfg, ctx.label_names)
        processes = ctx.config.synthetic.processes
        if processes > 1 and not reused:
            _generate_sharded(gcfg, ctx.label_names, processes, ctx.out / "synthetic" / "generate.yaml")
        else:
            generate(gcfg, label_names=ctx.label_names, reuse=True)  # a killed generation continues from its batches
        s = json.loads(Path(gcfg.output).with_suffix(".generate.json").read_text())
        note = ("reused " + gcfg.output + "; " if reused else "") + (
            f"{s['tokens_per_s']:.0f} new tokens/s, {gcfg.length_mean:.0f} +- {gcfg.length_std:.0f} tokens a row, prompts: {ctx.config.synthetic.prompts}"
        )
        return StageResult(s["rows_written"], note, {"rows": gcfg.output})

    def _rewrite(self, ctx: Context) -> StageResult:
        from textlora.augment.rewrite import is_rewritten, rewrite

        cfg = self._config(ctx)
        reused = is_rewritten(cfg, ctx.label_names)
        rewrite(cfg, label_names=ctx.label_names, reuse=True)
        s = json.loads(Path(cfg.output).with_suffix(".rewrite.json").read_text())
        note = ("reused " + cfg.output + "; " if reused else "") + f"{s['rows']:,} source rows rewritten"
        if "label_filter_kept" in s:
            note += f", {s['label_filter_kept']:,} keep their label (by a probe of the source rows)"
        if "domain_filter_kept" in s:
            note += f", {s['domain_filter_kept']:,} of those read as target texts (rewritten {s['target_like']:.0%}, originals {s['target_like_originals']:.0%})"
        return StageResult(s["rows_written"], note + f"; {s['seconds']:.0f} s", {"rows": cfg.output, "rewrite": s})

    def use(self, ctx: Context, result: StageResult) -> None:
        ctx.resolved[self.name] = asdict(self._config(ctx))


def rewrite_config(ctx: Context, lm: str, **changes):
    """The rewrite step's config (``synthetic.prompts: rewrite``): the user's ``rewrite:`` section, the
    source training split as the rows to rewrite, the target texts, and ``changes``."""
    from textlora.augment.rewrite import RewriteConfig

    settings = {**ctx.config.rewrite, "model": lm, "source": str(ctx.source_split_file()), "target": ctx.config.target.texts}
    settings |= {"target_text_column": ctx.config.target.text_column, "output": str(ctx.out / "synthetic" / "rows.csv"), **changes}
    return build(RewriteConfig, settings, "rewrite.")


def generate_config(ctx: Context, lm: str, **changes):
    """The generate step's config for the LM ``lm`` (a folder or an alias): the pipeline's defaults,
    the user's section, the prompt file, ``auto`` lengths measured on the target texts, ``changes``."""
    from textlora.augment.generate import GenerateConfig
    from textlora.registry import resolve_model_path
    from textlora.resolve import generation_lengths

    settings = {**generate_defaults(ctx), **ctx.config.generate, "model": lm, "prompts": prompt_file(ctx), **changes}
    auto = [k for k in ("length_mean", "length_std") if settings[k] == "auto"]
    if auto:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(resolve_model_path(lm))
        measured = generation_lengths(tok, ctx.target_texts, settings.get("length_max", GenerateConfig.length_max))
        settings |= {k: v for k, v in zip(("length_mean", "length_std"), measured) if k in auto}
    return build(GenerateConfig, settings, "generate.")


def generate_defaults(ctx: Context) -> dict:
    """The pipeline's own defaults for the generate section."""
    return {
        "output": str(ctx.out / "synthetic" / "rows.csv"),
        "keep_prompt": ctx.config.synthetic.prompts == "source",
        "length_mean": "auto",
        "length_std": "auto",
    }


def prompt_file(ctx: Context) -> str:
    """The prompt file for generate: the user's (checked against the classes) or one made from the data."""
    from textlora.augment import prompts as P
    from textlora.augment.generate import read_prompts

    mode = ctx.config.synthetic.prompts
    if mode not in PROMPT_MODES:
        read_prompts(mode, ctx.label_names)  # a class missing or unknown is one line naming it
        return mode
    syn = ctx.config.synthetic
    if mode == "instruct":
        classes = P.instruct_prompts(ctx.label_names, syn.templates)
    elif mode == "labelled":
        classes = P.labelled_prompts(ctx.label_names)
    else:
        import pandas as pd

        split = pd.read_csv(ctx.source_split_file(), keep_default_na=False, dtype=str)
        classes = P.source_prompts(split["text"].tolist(), split["label"].tolist(), ctx.label_names, syn.source_prompts, syn.source_words, ctx.source.seed)
    return str(P.write_prompts(classes, ctx.out / "prompts.yaml", f"made by textlora pipeline from the data (synthetic.prompts: {mode})"))


def _generate_sharded(gcfg, label_names: list[str], processes: int, config_file: Path) -> None:
    """``textlora generate`` under torchrun: each process takes every processes-th batch, process 0
    writes the rows; the same rows as one process writes. A killed run continues from its batches."""
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


class Filter:
    """Length, garbage and duplicates; a held-out share as the eval set ``synthetic``; then the label check."""

    name = "filter"

    def config(self, ctx: Context):
        from textlora.augment.filter import FilterConfig

        rows = ctx.results["generate"].data["rows"]
        settings = {**filter_defaults(ctx.out), **ctx.config.filter}
        # a rewritten row is a near copy of its source row by design (rewrite drops unchanged ones itself)
        real = None if ctx.config.synthetic.prompts == "rewrite" else ctx.source.data.train
        settings |= {"input": rows, "real": real, "text_column": "text", "label_column": "label"}
        return build(FilterConfig, settings, "filter.")

    def _split_settings(self, ctx: Context) -> dict:
        syn = ctx.config.synthetic
        return {"dev_fraction": syn.dev_fraction, "seed": ctx.source.seed, "check": syn.check, "check_max_noise": syn.check_max_noise}

    def key(self, ctx: Context) -> str:
        from textlora.fsutil import fingerprint

        fcfg = self.config(ctx)
        return fingerprint(
            {**asdict(fcfg), **self._split_settings(ctx)}, [fcfg.input, fcfg.real, fcfg.classifier], paths=("input", "output", "real", "classifier")
        )

    def present(self, ctx: Context, result: StageResult) -> bool:
        return Path(result.data["train"]).is_file()

    def skip(self, ctx: Context) -> str | None:
        return ctx.skip_synthetic

    def run(self, ctx: Context, resume: bool) -> StageResult:
        from textlora.augment.filter import filter_rows

        fcfg = self.config(ctx)
        syn = ctx.config.synthetic
        filtered = Path(fcfg.output)
        train_file, dev_file = filtered.parent / "train.csv", filtered.parent / "heldout.csv"
        filter_rows(fcfg, overwrite=True)
        report = json.loads(filtered.with_suffix(".report.json").read_text())  # the filter step's own report
        n_train, n_dev = split_synthetic(filtered, train_file, dev_file, syn.dev_fraction, ctx.source.seed)
        empty = [n for n in ctx.label_names if report["rows_out_per_class"].get(n, 0) == 0]
        note = f"{report['rows_in']:,} in; {n_train:,} train, {n_dev:,} held out as eval set '{SYNTHETIC_SET}'"
        check = _label_check(ctx, train_file) if syn.check else None
        if check and "skipped" not in check:
            verdict = "kept" if check["passed"] else "dropped"
            note += f"; label check: probe dev {check['dev']:.3f}, held-out rows {check['heldout']:.3f}, ~{check['noise']:.0%} mislabelled -> rows {verdict}"
        data = {"train": str(train_file), "heldout": str(dev_file), "n_dev": n_dev, "classes_with_no_rows": empty, "check": check}
        return StageResult(report["rows_out"], note, data)

    def use(self, ctx: Context, result: StageResult) -> None:
        d = result.data
        ctx.resolved[self.name] = {**asdict(self.config(ctx)), **self._split_settings(ctx)}
        for name in d.get("classes_with_no_rows", []):
            ctx.note(f"class '{name}' has no synthetic rows after filtering; the classifier trains without synthetic rows of it", warn=True)
        check = d.get("check") or {}
        if "skipped" in check:
            ctx.note(f"label check skipped: {check['skipped']}")
        if check.get("passed") is False:
            ctx.note(
                f"the generated rows failed the label check: a bag-of-words probe predicts {check['heldout']:.1%} of held-out generated rows "
                f"against {check['dev']:.1%} of the dev split, so ~{check['noise']:.0%} of them look mislabelled (synthetic.check_max_noise: "
                f"{check['max_noise']}); the classifier trains on the source rows alone (synthetic.check: false keeps the rows)",
                warn=True,
            )
        else:
            ctx.extra_train.append(d["train"])
        if d.get("n_dev"):
            ctx.eval_sets[SYNTHETIC_SET] = d["heldout"]


def filter_defaults(out: Path) -> dict:
    """The pipeline's own defaults for the filter section."""
    return {"output": str(out / "synthetic" / "rows.filtered.csv")}


def split_synthetic(filtered: Path, train_file: Path, dev_file: Path, fraction: float, seed: int) -> tuple[int, int]:
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


def _label_check(ctx: Context, train_file: Path) -> dict:
    """The label check on the rows the classifier would train on (textlora.augment.check)."""
    import pandas as pd

    from textlora.augment.check import MIN_ROWS, label_check

    cfg = ctx.source
    if cfg.data.multi_label or cfg.data.text_pair_column:
        return {"skipped": "it checks single-label, single-text rows"}
    rows = pd.read_csv(train_file, keep_default_na=False, dtype={"label": str})
    if len(rows) < MIN_ROWS:
        return {"skipped": f"{len(rows)} generated rows to train on, fewer than the {MIN_ROWS} it needs"}
    splits = ctx.source_splits()
    names = splits.label_names
    source = (splits.train_texts, [names[k] for k in splits.train_labels])
    dev = (splits.val_texts, [names[k] for k in splits.val_labels])
    return label_check(source, dev, (rows["text"].tolist(), rows["label"].tolist()), ctx.config.synthetic.check_max_noise, seed=cfg.seed)
