"""The classifier's stages: train (on the source rows plus what earlier stages made), pseudo-label
the target texts for a self-training round, evaluate the final run, predict the target texts."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

from textlora.config import config_from_dict
from textlora.errors import UserError
from textlora.stages import StageResult
from textlora.stages.context import LABELLED_SET, SYNTHETIC_SET, Context


class Train:
    """One classifier; a run killed in this stage resumes from its last checkpoint.

    ``round_k``: a self-training round, which trains on that round's pseudo-labels too.
    """

    def __init__(self, name: str = "train", folder: str = "classifier", round_k: int | None = None):
        self.name, self.folder, self.round_k = name, folder, round_k

    def output_dir(self, ctx: Context) -> Path:
        return ctx.out / self.folder

    def config(self, ctx: Context):
        """The training config: the user's, with the pipeline's extra rows, eval sets and lengths."""
        from textlora.resolve import classifier_length

        extra = list(ctx.extra_train)
        if self.round_k is not None:
            extra.append(ctx.results[f"pseudo-label {self.round_k}"].data["file"])
        raw = copy.deepcopy(ctx.config.classifier)
        raw["output_dir"] = str(self.output_dir(ctx))
        raw["data"] = {**(raw.get("data") or {}), "extra_train": extra, "eval_sets": dict(ctx.eval_sets)}
        if LABELLED_SET in ctx.eval_sets:  # labelled target rows choose, in place of the source dev split
            raw["train"] = {**(raw.get("train") or {}), "metric_for_best": f"{LABELLED_SET}.accuracy"}
        elif ctx.config.select.checkpoint == SYNTHETIC_SET:
            if SYNTHETIC_SET not in ctx.eval_sets:
                raise UserError("config: select.checkpoint: synthetic needs held-out generated rows (synthetic.enabled and synthetic.dev_fraction > 0)")
            raw["train"] = {**(raw.get("train") or {}), "metric_for_best": f"{SYNTHETIC_SET}.accuracy"}
        if (raw.get("model") or {}).get("max_length") == "auto":  # the texts it is made for decide: the target's
            raw["model"]["max_length"] = classifier_length(raw["model"].get("name", "minilm"), ctx.target_texts)
        return config_from_dict(raw)

    def key(self, ctx: Context) -> str:
        return train_key(self.config(ctx))

    def present(self, ctx: Context, result: StageResult) -> bool:
        return (Path(result.data["run"]) / "textlora.json").is_file()

    def run(self, ctx: Context, resume: bool) -> StageResult:
        from textlora.checkpoints import list_checkpoints
        from textlora.run import is_run_dir
        from textlora.training import train

        cfg = self.config(ctx)
        out = self.output_dir(ctx)
        go_on = resume and list_checkpoints(out) and not (out / "textlora.json").is_file()
        if go_on:
            print(f"{self.name}: continuing {out} from its last checkpoint", flush=True)
        train(cfg, resume="last" if go_on else "none", overwrite=is_run_dir(out))
        m = json.loads((out / "metrics.json").read_text())  # the run directory's contract (textlora.run)
        best = m["best"] or {}
        sets = {n: round(s["accuracy"], 4) for n, s in (best.get("eval_sets") or {}).items()}
        note = f"best at epoch {best.get('epoch')} by {m['metric_for_best']}: dev {best.get('accuracy', float('nan')):.4f}" + "".join(
            f", {n} {a:.4f}" for n, a in sets.items()
        )
        objective = m.get("target_objective")
        if objective and objective["used"]:
            note += f"; target objective {objective['kind']} on {objective['texts']:,} target texts (weight {objective['weight']})"
        data = {"run": str(out), "target_objective": objective}
        return StageResult(m["data"]["train_rows"], note, data, {"dev": round(best.get("accuracy", 0), 4), "eval_sets": sets})

    def use(self, ctx: Context, result: StageResult) -> None:
        from textlora.run import open_run

        run = Path(result.data["run"])
        ctx.resolved[self.name] = open_run(run).config.to_dict()  # as trained: every auto setting resolved
        objective = result.data.get("target_objective")
        if objective and not objective["used"]:
            ctx.note(f"{self.name}: train.target_objective {objective['kind']} skipped: {objective['why']}")
        score = (result.summary.get("eval_sets") or {}).get(LABELLED_SET)
        ctx.candidates.append((self.name, str(run), score))
        if score is None:
            ctx.run = run  # without labelled target rows: the latest classifier
            return
        best = max(ctx.candidates, key=lambda c: c[2] if c[2] is not None else -1.0)  # the first of equals: the earlier, simpler one
        ctx.run = Path(best[1])
        if best[0] != self.name:
            ctx.note(f"{self.name}: {LABELLED_SET} accuracy {score:.4f} is below {best[0]}'s {best[2]:.4f}; {best[0]}'s classifier goes on")


def train_key(config) -> str:
    """A classifier's cache key: its settings and the content of its data files and of a local
    base-model folder (whose contents can change under the same name), never their paths."""
    from textlora.fsutil import fingerprint
    from textlora.registry import is_local_base

    settings = config.to_dict()
    data = settings["data"]
    # target texts change the run only when an objective learns from them (else they are only cached: textlora.training)
    learns = data["target_texts"] if config.train.target_objective != "none" else None
    files = [data["train"], data["dev"], *data["extra_train"], *data["eval_sets"].values(), *([learns] if learns else [])]
    if is_local_base(config.model.name):
        files.append(config.model.name)
        settings["model"] = {**settings["model"], "name": "local folder"}
    settings["data"] = {**data, "train": None, "dev": bool(data["dev"]), "extra_train": len(data["extra_train"]), "eval_sets": sorted(data["eval_sets"]), "target_texts": bool(learns)}
    return fingerprint(settings, files, paths=("output_dir",))


class PseudoLabel:
    """Round k of self-training: the latest classifier labels the target texts it is confident of."""

    def __init__(self, k: int):
        self.k = k
        self.name = f"pseudo-label {k}"

    def _out(self, ctx: Context) -> Path:
        return ctx.out / f"round{self.k}" / "pseudo.csv"

    def key(self, ctx: Context) -> str:
        from textlora.fsutil import fingerprint

        teacher = ctx.run
        adapter = [p for p in (teacher / "adapter_model.safetensors", teacher / "config.yaml") if p.exists()]
        return fingerprint({**asdict(ctx.config.self_training), "eval_files": len(ctx.eval_files)}, [ctx.config.target.texts, *ctx.eval_files, *adapter])

    def present(self, ctx: Context, result: StageResult) -> bool:
        return Path(result.data["file"]).is_file()

    def run(self, ctx: Context, resume: bool) -> StageResult:
        from textlora.pseudolabel import pseudolabel

        st = ctx.config.self_training
        out = self._out(ctx)
        out.parent.mkdir(parents=True, exist_ok=True)
        pseudolabel(
            str(ctx.run),
            ctx.config.target.texts,
            str(out),
            text_column=ctx.config.target.text_column,
            min_confidence=st.min_confidence,
            max_per_class=st.max_per_class,
            balance=st.balance,
            exclude=ctx.eval_files,
            overwrite=True,
        )
        rep = json.loads(out.with_suffix(".report.json").read_text())  # the pseudolabel step's own report
        note = f"of {rep['texts'] - rep['excluded']:,} target texts, by {ctx.run}"
        return StageResult(rep["rows_written"], note, {"file": str(out), "classes_with_no_rows": rep["classes_with_no_rows"]})

    def use(self, ctx: Context, result: StageResult) -> None:
        for n in result.data.get("classes_with_no_rows", []):
            ctx.note(f"round {self.k}: class '{n}' got no pseudo-labels at min_confidence {ctx.config.self_training.min_confidence}")


class Evaluate:
    """The final run on its dev split and every eval set, as a user would evaluate it (merged weights; the texts a
    top-k run cached in training run through its top layers alone: ``textlora.prediction.Classifier``). The stage is not cached."""

    name = "evaluate"

    def key(self, ctx: Context) -> None:
        return None

    def run(self, ctx: Context, resume: bool) -> StageResult:
        from textlora.evaluation import evaluate

        files = {"dev": str(ctx.run / "dev.csv"), **ctx.eval_sets}
        results = evaluate(str(ctx.run), list(files.values()), output_dir=str(ctx.out / "eval"), overwrite=True)
        if len(files) == 1:  # evaluate gives one file's metrics directly
            results = {files["dev"]: results}
        keys = ("accuracy", "accuracy_se", "macro_f1")
        metrics = {
            name: {**{k: round(results[f][k], 4) for k in keys}, "n": results[f]["n"], "near_copies": results[f]["near_copies"]} for name, f in files.items()
        }
        return StageResult(None, ", ".join(f"{n} {format_accuracy(m)}" for n, m in metrics.items()), {"metrics": metrics})


class Predict:
    """The target texts to an ``ID,Label`` CSV. Not cached."""

    name = "predict"

    def key(self, ctx: Context) -> None:
        return None

    def run(self, ctx: Context, resume: bool) -> StageResult:
        import pandas as pd

        from textlora.prediction import predict

        out = predict(
            str(ctx.run), data=ctx.config.target.texts, output=str(ctx.out / "predictions.csv"), text_column=ctx.config.target.text_column, overwrite=True
        )
        return StageResult(len(pd.read_csv(out)), str(out), {"predictions": str(out)})


def format_accuracy(m: dict) -> str:
    """``0.8993 +- 0.0290 (n=288, 17 near-copies in 1 group)``: an accuracy with its standard error."""
    near = m.get("near_copies") or {}
    copies = f", {near['rows']} near-copies in {near['groups']} group{'s' * (near['groups'] > 1)}" if near.get("groups") else ""
    return f"{m['accuracy']:.4f} +- {m['accuracy_se']:.4f} (n={m['n']}{copies})"
