"""The bad-input corpus (tests/data/bad/): every relevant verb on every file gives one line, exit 2,
no traceback, and leaves every file as it was. Quirky but valid files (tests/data/ok/) are handled."""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from textlora.cli import main

from .conftest import fails, write_config

BAD = Path(__file__).parent / "data" / "bad"
OK = Path(__file__).parent / "data" / "ok"

# file -> {verb: expected message}; verbs: train (as data.train), evaluate, predict
CASES = {
    "empty.csv": {"train": "file is empty", "evaluate": "file is empty", "predict": "file is empty"},
    "header_only.csv": {"train": "no rows", "evaluate": "no rows", "predict": "no rows"},
    "no_text_column.csv": {"train": "missing text column 'text'", "evaluate": "missing text column 'text'", "predict": "missing text column 'text'"},
    "no_label_column.csv": {"train": "missing label column 'label'", "evaluate": "missing label column 'label'"},
    "duplicate_column.csv": {"train": "duplicate column name 'text'", "evaluate": "duplicate column name 'text'", "predict": "duplicate column name 'text'"},
    "whitespace_text.csv": {"train": "row 3: empty text", "evaluate": "row 3: empty text", "predict": "row 3: empty text"},
    "nan_label.csv": {"train": "row 3: empty label", "evaluate": "row 3: empty label"},
    "empty_label.csv": {"train": "row 3: empty label", "evaluate": "row 3: empty label"},
    "unknown_label.csv": {"evaluate": "row 3: label 'weather' is not a known class"},
    "mixed_labels.csv": {"train": "mixes integer and string labels", "evaluate": "mixes integer and string labels"},
    "single_class.csv": {"train": "only one class"},
    "too_few_rows.csv": {"train": "class 1 has 1 row; the validation split needs at least 2 rows a class"},
    "invalid_utf8.csv": {"train": "not valid UTF-8", "evaluate": "not valid UTF-8", "predict": "not valid UTF-8"},
}
CONFIGS = {
    "invalid_yaml.yaml": "not valid YAML",
    "unknown_key.yaml": "unknown key 'train.epochz'",
    "wrong_type.yaml": "train.epochs: expected a number, found 'two'",
}


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def run_dir(trained):
    return trained


def test_corpus_every_verb(run_dir, tiny_bert, tmp_path, capsys):
    before = _digest(BAD)
    observed = {}
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, run_dir / "train.csv", tmp_path / "out")
    for name, verbs in CASES.items():
        path = str(BAD / name)
        for verb, message in verbs.items():
            if verb == "train":
                argv = ["train", "--config", str(cfg), "--data.train", path]
            elif verb == "evaluate":
                argv = ["evaluate", "--model", str(run_dir / "run"), "--data", path, "--output-dir", str(tmp_path / "eval")]
            else:
                argv = ["predict", "--model", str(run_dir / "run"), "--data", path, "--output", str(tmp_path / "pred.csv")]
            observed[f"{verb} {name}"] = fails(capsys, argv, message)
            assert path in observed[f"{verb} {name}"]
    for name, message in CONFIGS.items():
        observed[f"train {name}"] = fails(capsys, ["train", "--config", str(BAD / name)], message)
    assert not (tmp_path / "out").exists() and not (tmp_path / "eval").exists() and not (tmp_path / "pred.csv").exists()
    assert _digest(BAD) == before  # inputs untouched
    print(json.dumps(observed, indent=1))


def test_paths_and_run_dirs(run_dir, tmp_path, capsys):
    model, data = str(run_dir / "run"), str(run_dir / "train.csv")
    fails(capsys, ["predict", "--model", model, "--data", str(tmp_path), "--output", str(tmp_path / "p.csv")], "is a directory")
    fails(capsys, ["predict", "--model", model, "--data", data, "--output", str(run_dir / "train.csv" / "p.csv")], "train.csv is a file, not a folder")
    fails(capsys, ["predict", "--model", model, "--data", data, "--output", data], "same file as the input")
    fails(capsys, ["evaluate", "--model", str(tmp_path / "nope"), "--data", data], "no such run directory")
    # a run directory from another textlora format, and one with a file missing
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run_dir / "run", other, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    (other / "textlora.json").write_text(json.dumps({"format": 999, "textlora_version": "9.0"}))
    fails(capsys, ["predict", "--model", str(other), "--text", "goal"], "run format 999 is not supported")
    (other / "textlora.json").write_text(json.dumps({"format": 1}))
    (other / "labels.json").unlink()
    fails(capsys, ["predict", "--model", str(other), "--text", "goal"], "missing labels.json")


def test_model_paths_that_are_not_classifiers(run_dir, tiny_bert, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, run_dir / "train.csv", tmp_path / "out")
    fails(capsys, ["train", "--config", str(cfg), "--model.name", str(tmp_path / "missing-model")], "no such folder")
    (tmp_path / "notmodel").mkdir()
    fails(capsys, ["train", "--config", str(cfg), "--model.name", str(tmp_path / "notmodel")], "no config.json")
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    fails(capsys, ["train", "--config", str(cfg), "--model.name", str(tmp_path / "weird")], "cannot load")


def test_quirky_files_are_handled(run_dir, tiny_bert, tmp_path):
    """BOM, CRLF, embedded newlines and quotes, and a 100k-character text work in every verb."""
    quirky = OK / "bom_crlf_quotes_newlines.csv"
    long = tmp_path / "long.csv"
    pd.DataFrame({"text": ["goal " * 20_000, "stock price"], "label": [0, 1]}).to_csv(long, index=False)
    for data in (quirky, long):
        assert main(["evaluate", "--model", str(run_dir / "run"), "--data", str(data)]) == 0
        out = tmp_path / f"{data.stem}.pred.csv"
        assert main(["predict", "--model", str(run_dir / "run"), "--data", str(data), "--output", str(out)]) == 0
        assert len(pd.read_csv(out)) == len(pd.read_csv(data, encoding="utf-8-sig"))
    train = tmp_path / "train.csv"
    df = pd.read_csv(run_dir / "train.csv")
    pd.concat([df, pd.read_csv(long)]).to_csv(train, index=False)
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, train, tmp_path / "out", train={"max_steps": 2})
    assert main(["train", "--config", str(cfg)]) == 0


# verb -> (argv with OUT where its output goes, the output is a folder)
WRITERS = {
    "predict": (["predict", "--model", "{run}", "--data", "{data}", "--output", "OUT"], False),
    "pseudolabel": (["pseudolabel", "--model", "{run}", "--data", "{data}", "--output", "OUT"], False),
    "report": (["report", "--model", "{run}", "--output", "OUT"], False),
    "export": (["export", "--model", "{run}", "--output", "OUT"], True),
    "evaluate": (["evaluate", "--model", "{run}", "--data", "{data}", "--output-dir", "OUT"], True),
    "train": (["train", "--config", "{config}", "--output_dir", "OUT"], True),
    "adapt": (["adapt", "--model", "{gpt2}", "--texts", "{data}", "--heldout", "4", "--output_dir", "OUT"], True),
    "generate": (["generate", "--model", "{gpt2}", "--prompts", "{prompts}", "--rows_per_class", "2", "--output", "OUT"], False),
    "filter": (["filter", "--input", "{data}", "--output", "OUT"], False),
}


@pytest.mark.parametrize("verb", list(WRITERS))
def test_every_output_path_follows_one_rule(verb, run_dir, tiny_bert, tiny_gpt2, tmp_path, capsys):
    """One rule for every path a verb writes: a file where a folder goes (or the reverse), a parent
    that is a file, or an output already there is one line naming the flag; a missing parent is made."""
    import yaml

    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(yaml.safe_dump({"classes": {"sports": ["the match"], "business": ["the market"], "science": ["the study"]}}))
    values = {
        "run": str(run_dir / "run"),
        "data": str(run_dir / "test.csv"),
        "config": str(write_config(tmp_path / "c.yaml", tiny_bert, run_dir / "train.csv", tmp_path / "unused", train={"epochs": 1})),
        "gpt2": str(tiny_gpt2),
        "prompts": str(prompts),
    }
    template, folder = WRITERS[verb]

    def argv(out) -> list[str]:
        return [str(out) if a == "OUT" else a.format(**values) for a in template]

    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    wrong_kind = tmp_path / ("a_file" if folder else "a_folder")
    fails(capsys, argv(wrong_kind), f"expected a {'folder' if folder else 'file'}")
    fails(capsys, argv(tmp_path / "a_file" / "out"), "a_file is a file, not a folder")
    taken = run_dir / "run" if verb == "train" else tmp_path / ("taken" if folder else "taken.csv")
    if verb == "evaluate":
        (tmp_path / "taken").mkdir()
        (tmp_path / "taken" / "metrics.json").write_text("{}")
    elif verb != "train":
        (taken.mkdir() if folder else taken.write_text("text,label\n"))
    fails(capsys, argv(taken), "already holds a run" if verb == "train" else "already exists; pass --overwrite")
    if verb in ("predict", "report", "export", "evaluate"):  # the cheap ones: a missing parent folder is made
        out = tmp_path / "new" / "deeper" / ("out" if folder else "out.csv")
        assert main(argv(out)) == 0
        assert out.is_dir() if folder else out.is_file()
