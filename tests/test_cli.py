"""Every verb through the CLI on a tiny model, and the bad inputs each must refuse cleanly."""

import json

import numpy as np
import pandas as pd
import pytest

from textlora.cli import main

from .conftest import fails, make_texts, write_config


@pytest.fixture(scope="module")
def run(trained):
    """The shared tiny run (trained through `textlora train` in conftest) and its data files."""
    return trained


def test_train_writes_a_self_contained_run_dir(run):
    out = run / "run"
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "labels.json",
        "config.yaml",
        "metrics.json",
        "README.md",
        "dev.csv",
        "textlora.json",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "labels.json").read_text()) == ["sports", "business", "science"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1.0, 2.0, 3.0, 4.0]
    assert metrics["train_log"][0]["loss"] > metrics["train_log"][-1]["loss"]  # loss falls
    assert metrics["best"]["accuracy"] == max(h["accuracy"] for h in metrics["history"])
    assert metrics["best"]["accuracy"] >= 0.9
    assert list((out / "logs").iterdir())  # tensorboard events
    assert "trainable" in (out / "README.md").read_text()


def test_evaluate_writes_metrics_and_confusion_matrix(run, capsys):
    assert main(["evaluate", "--model", str(run / "run"), "--data", str(run / "test.csv"), "--output-dir", str(run / "eval")]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9 and set(metrics["per_class"]) == {"sports", "business", "science"}
    assert np.array(json.loads((run / "eval" / "confusion_matrix.json").read_text())["matrix"]).sum() == 30
    assert (run / "eval" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "macro-F1" in capsys.readouterr().out
    # the saved dev split evaluates to the best checkpoint's dev accuracy
    dev = main(["evaluate", "--model", str(run / "run"), "--data", str(run / "run" / "dev.csv"), "--output-dir", str(run / "eval-dev")])
    assert dev == 0
    best = json.loads((run / "run" / "metrics.json").read_text())["best"]["accuracy"]
    assert json.loads((run / "eval-dev" / "metrics.json").read_text())["accuracy"] == pytest.approx(best, abs=1e-9)


def test_predict_writes_id_label_csv(run):
    out = run / "pred.csv"
    assert main(["predict", "--model", str(run / "run"), "--data", str(run / "unlabelled.csv"), "--output", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["ID", "Label"]
    assert df["ID"].tolist() == list(range(100, 124))
    assert set(df["Label"]) <= {0, 1, 2}
    out2 = run / "pred-full.csv"
    assert main(["predict", "--model", str(run / "run"), "--data", str(run / "test.csv"), "--output", str(out2), "--with-names", "--with-probs"]) == 0
    df2 = pd.read_csv(out2)
    assert df2["ID"].tolist() == list(range(30))  # row index without an id column
    assert list(df2.columns) == ["ID", "Label", "LabelName", "P(sports)", "P(business)", "P(science)"]
    assert np.allclose(df2[["P(sports)", "P(business)", "P(science)"]].sum(axis=1), 1, atol=1e-4)
    truth = pd.read_csv(run / "test.csv")["label"]
    assert (df2["Label"] == truth).mean() >= 0.9


def test_predict_one_text(run, capsys):
    assert main(["predict", "--model", str(run / "run"), "--text", "goal match team coach"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "0\tsports"
    assert set(json.loads(out.split("\n", 1)[1])) == {"sports", "business", "science"}


def test_budget_verb(run, capsys):
    assert main(["budget", "--config", str(run / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert "adapter (LoRA)" in out and "within budget" in out
    assert main(["budget", "--config", str(run / "c.yaml"), "--budget.max_trainable_params", "10"]) == 0
    assert "OVER budget" in capsys.readouterr().out


def test_save_load_gives_identical_logits(run):
    """The run directory alone reproduces the trained model's outputs."""
    from textlora.models import load_classifier
    from textlora.runtime import encode_texts, predict_logits

    texts = make_texts(5, seed=9)["text"].tolist()
    merged, tok, _, _ = load_classifier(run / "run", merge=True)
    unmerged, _, _, _ = load_classifier(run / "run", merge=False)
    enc = encode_texts(tok, texts, 32)
    a = predict_logits(merged, enc, tok.pad_token_id, precision="fp32")
    b = predict_logits(unmerged, enc, tok.pad_token_id, precision="fp32")
    assert np.allclose(a, b, atol=1e-5)
    again, _, _, _ = load_classifier(run / "run", merge=True)
    assert np.array_equal(a, predict_logits(again, enc, tok.pad_token_id, precision="fp32"))


# --- bad input: one line, exit code 2, nothing overwritten --------------------------------


def test_bad_inputs(run, tiny_bert, tmp_path, capsys):
    model = str(run / "run")
    fails(capsys, ["predict", "--model", model, "--data", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o.csv")], "nope.csv: file not found")
    (tmp_path / "nocol.csv").write_text("body\nhello\n")
    fails(capsys, ["predict", "--model", model, "--data", str(tmp_path / "nocol.csv"), "--output", str(tmp_path / "o.csv")], "missing text column 'text'")
    (tmp_path / "empty.csv").write_text("text,label\ngoal,0\n  ,1\n")
    fails(capsys, ["evaluate", "--model", model, "--data", str(tmp_path / "empty.csv")], "row 3: empty text")
    (tmp_path / "unknown.csv").write_text("text,label\ngoal,sports\nstock,weather\n")
    fails(capsys, ["evaluate", "--model", model, "--data", str(tmp_path / "unknown.csv")], "row 3: label 'weather' is not a known class")
    (tmp_path / "unknown-int.csv").write_text("text,label\ngoal,0\nstock,7\n")
    fails(capsys, ["evaluate", "--model", model, "--data", str(tmp_path / "unknown-int.csv")], "row 3: label 7 is not a known class")
    # output equal to input: refused, and the input is untouched
    before = (run / "unlabelled.csv").read_bytes()
    fails(
        capsys,
        ["predict", "--model", model, "--data", str(run / "unlabelled.csv"), "--output", str(run / "unlabelled.csv"), "--overwrite"],
        "same file as the input",
    )
    assert (run / "unlabelled.csv").read_bytes() == before
    # an existing output is not overwritten without --overwrite
    (tmp_path / "exists.csv").write_text("keep me")
    fails(capsys, ["predict", "--model", model, "--data", str(run / "unlabelled.csv"), "--output", str(tmp_path / "exists.csv")], "already exists")
    assert (tmp_path / "exists.csv").read_text() == "keep me"
    fails(capsys, ["predict", "--model", str(tmp_path), "--text", "hi"], "not a complete textlora run directory")
    # config errors
    bad = write_config(tmp_path / "bad.yaml", tiny_bert, run / "train.csv", tmp_path / "r", train={"epochz": 1})
    fails(capsys, ["train", "--config", str(bad)], "unknown key 'train.epochz'")
    good = write_config(tmp_path / "good.yaml", tiny_bert, run / "train.csv", tmp_path / "r")
    fails(capsys, ["train", "--config", str(good), "--budget.max_trainable_params", "100"], "exceed budget.max_trainable_params 100")
    assert not (tmp_path / "r" / "textlora.json").exists()
    fails(capsys, ["train", "--config", str(good), "--data.train", str(tmp_path / "nocol.csv")], "missing text column")


def test_train_refuses_to_clobber_a_run(run, capsys):
    before = (run / "run" / "metrics.json").read_bytes()
    fails(capsys, ["train", "--config", str(run / "c.yaml")], "already holds a run")
    assert (run / "run" / "metrics.json").read_bytes() == before


def test_outputs_have_ordinary_permissions(run):
    import stat

    out = run / "perm.csv"
    assert main(["predict", "--model", str(run / "run"), "--data", str(run / "unlabelled.csv"), "--output", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) & 0o044  # readable by others, not 0600 from mkstemp


def test_every_flag_comes_from_its_library_function():
    """One definition a parameter: each verb's flags, types, defaults, choices and help are read off
    its library function's signature and docstring, so a parameter without a flag cannot happen."""
    import argparse
    import inspect

    from textlora.cli import CONFIG_PARAMS, OVERRIDES_PARAM, VERBS, build_parser, split_doc

    for name, verb in VERBS.items():
        fn = verb.function()
        sub = next(a for a in build_parser(name)._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        by_dest = {a.dest: a for a in sub._actions}
        _, docs = split_doc(fn.__doc__)
        assert sub.description and "Args:" not in sub.description
        for pname, p in inspect.signature(fn).parameters.items():
            if pname == OVERRIDES_PARAM:
                continue
            action = by_dest[pname]  # every parameter has its flag
            if pname in CONFIG_PARAMS:
                assert action.option_strings == ["--config"]
                continue
            flag = f"--{pname.replace('_', '-')}"
            # a switch that defaults to true also has its --no- form
            assert action.option_strings == ([flag, f"--no-{flag[2:]}"] if p.default is True else [flag]), (name, pname)
            assert docs[pname].rstrip(".") in action.help, (name, pname)
            if p.default is not inspect.Parameter.empty:
                assert action.default == p.default and not action.required, (name, pname)
            else:
                assert action.required, (name, pname)
    # the report's and generate's parameters that had no flag now have one
    help_text = build_parser("report")._subparsers._group_actions[0].choices["report"].format_help()
    assert "--top-mistakes" in help_text and "(default: 15)" in help_text


def test_flags_follow_the_annotations():
    from typing import Literal  # noqa: F401  (the annotation below is read as a string)

    from textlora.cli import Verb, flags_for

    def fn(path: str, sizes: "list[int] | None" = None, mode: 'Literal["a", "b"]' = "a", rate: float = 0.5, on: bool = False, many: "str | list[str]" = "x"):
        """Doc.

        Args:
            path: a path.
            sizes: some sizes.
            mode: a mode.
            rate: a rate.
            on: a switch.
            many: one or several.
        """

    flags = {f[0][0]: f[1] for f in flags_for(fn, Verb("x:fn", "x"))}
    assert flags["--path"]["required"] and flags["--path"]["type"] is str
    assert flags["--sizes"]["nargs"] == "*" and flags["--sizes"]["type"] is int and flags["--sizes"]["default"] is None
    assert flags["--mode"]["choices"] == ["a", "b"] and "(default: %(default)s)" in flags["--mode"]["help"]
    assert flags["--rate"]["type"] is float and flags["--on"]["action"] == "store_true"
    assert flags["--many"]["nargs"] == "*"

    def undocumented(path: str):
        """No Args section."""

    with pytest.raises(TypeError, match="'path' has no line"):
        flags_for(undocumented, Verb("x:undocumented", "x"))
