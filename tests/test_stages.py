"""The stage protocol: a stage written here, in a test file, runs, caches and resumes through the
pipeline's one loop without a line of textlora.pipeline changed; every pipeline section is checked
before any stage runs."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from textlora.pipeline import default_stages, load_pipeline_config, pipeline
from textlora.stages import StageResult

from .conftest import fails
from .test_pipeline import pipeline_config, write


class Killed(Exception):
    """Stands in for a kill: the stage is left 'started' in stages.json."""


class Shout:
    """A toy stage between filter and train: writes the target texts upper-cased as extra training
    rows labelled by a keyword, and hands the file to the classifier through the context."""

    name = "shout"

    def __init__(self, die_once: bool = False):
        self.die_once, self.calls = die_once, []

    def key(self, ctx) -> str:
        from textlora.fsutil import fingerprint

        return fingerprint({"upper": True}, [ctx.config.target.texts])

    def present(self, ctx, result: StageResult) -> bool:
        from pathlib import Path

        return Path(result.data["file"]).is_file()

    def run(self, ctx, resume: bool) -> StageResult:
        self.calls.append(resume)
        out = ctx.out / "shout.csv"
        rows = [{"text": t.upper(), "label": next(n for n in ctx.label_names if n in t) if any(n in t for n in ctx.label_names) else ctx.label_names[0]} for t in ctx.target_texts]
        pd.DataFrame(rows).to_csv(out, index=False)
        if self.die_once and len(self.calls) == 1:
            raise Killed()
        return StageResult(len(rows), "upper-cased target texts", {"file": str(out)})

    def use(self, ctx, result: StageResult) -> None:
        ctx.extra_train.append(result.data["file"])


def test_a_stage_added_in_a_test_file_runs_caches_and_resumes(task, tiny_bert, tiny_gpt2, capsys):
    cfg = load_pipeline_config(write(task / "p.yaml", pipeline_config(task, tiny_bert, tiny_gpt2, synthetic={"enabled": False})))
    shout = Shout(die_once=True)
    stages = default_stages(cfg)
    stages.insert([s.name for s in stages].index("train"), shout)
    with pytest.raises(Killed):
        pipeline(cfg, stages=stages)
    assert json.loads((task / "out" / "stages.json").read_text())["shout"]["state"] == "started"
    summary = pipeline(cfg, stages=stages)  # the rerun continues the started stage
    assert shout.calls == [False, True]
    out = capsys.readouterr().out
    assert "== shout: " in out and "upper-cased target texts" in out
    assert [s["stage"] for s in summary["stages"]][:2] == ["shout", "train"]
    metrics = json.loads((task / "out" / "classifier" / "metrics.json").read_text())
    assert metrics["data"]["extra_rows"] == 36  # its rows reached the classifier
    pipeline(cfg, stages=stages)  # the third run reuses it
    assert shout.calls == [False, True]
    assert "(cached)" in capsys.readouterr().out.split("== shout: ")[1].splitlines()[0]


def test_the_summary_records_every_stage_s_resolved_settings(task, tiny_bert, tiny_gpt2):
    cfg = load_pipeline_config(write(task / "p.yaml", pipeline_config(task, tiny_bert, tiny_gpt2)))
    summary = pipeline(cfg)
    resolved = summary["resolved"]
    assert set(resolved) == {"adapt", "generate", "filter", "train"}
    assert isinstance(resolved["adapt"]["max_length"], int)  # auto, measured on the target texts
    assert isinstance(resolved["generate"]["length_mean"], float) and resolved["generate"]["length_mean"] > 0
    assert isinstance(resolved["train"]["model"]["max_length"], int) and resolved["train"]["lora"]["target_modules"] == ["query", "value"]
    assert json.loads((task / "out" / "pipeline.json").read_text())["resolved"] == resolved


@pytest.mark.parametrize(
    "section, value, message",
    [
        ("adapt", {"epochz": 1}, "unknown key 'adapt.epochz'"),
        ("adapt", {"batch_size": "many"}, "adapt.batch_size: expected an integer"),
        ("adapt", {"heldout": 0}, "adapt.heldout: expected an integer >= 1"),
        ("generate", {"top_p": 2}, "generate.top_p: expected a number in (0, 1]"),
        ("generate", {"rows_per_clas": 3}, "unknown key 'generate.rows_per_clas'"),
        ("filter", {"min_word": 2}, "unknown key 'filter.min_word'"),
        ("synthetic", {"prompt": "instruct"}, "unknown key 'synthetic.prompt'"),
        ("select", {"checkpoint": "best"}, "select.checkpoint: expected dev or synthetic"),
        ("self_training", {"round": 1}, "unknown key 'self_training.round'"),
        ("target", {"text_colum": "x"}, "unknown key 'target.text_colum'"),
        ("train", {"epoch": 1}, "unknown key 'train.epoch'"),
        ("lora", {"rank": 4}, "unknown key 'lora.rank'"),
    ],
)
def test_a_typo_in_any_section_is_one_line_before_any_stage(task, tiny_bert, tiny_gpt2, capsys, section, value, message):
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2)
    cfg[section] = {**cfg.get(section, {}), **value}
    path = write(task / "p.yaml", cfg)
    t0 = time.perf_counter()
    fails(capsys, ["pipeline", "--config", path], message)
    assert time.perf_counter() - t0 < 1.0
    assert not (task / "out").exists()


def test_generate_lengths_may_be_auto_or_numbers(task, tiny_bert, tiny_gpt2):
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, generate={"length_mean": "auto", "length_std": 3})
    assert load_pipeline_config(write(task / "p.yaml", cfg)).generate["length_mean"] == "auto"
    cfg["generate"]["length_mean"] = "long"
    with pytest.raises(Exception, match="generate.length_mean: expected a number"):
        load_pipeline_config(write(task / "p.yaml", cfg))
