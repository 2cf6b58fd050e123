"""Sentence pairs: data.text_pair_column through train, evaluate, predict, serve, budget and ONNX export."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from textlora.cli import main

from .conftest import fails, make_texts, write_config
from .test_serve import _call, serving


def make_pairs(n: int, seed: int) -> pd.DataFrame:
    """'Same topic or not' for two texts of the tiny vocabulary: half the pairs share a class."""
    texts = make_texts(max(n // 3, 4), seed=seed)
    rng = random.Random(seed)
    by_class = {c: g["text"].tolist() for c, g in texts.groupby("label")}
    rows = []
    for i in range(n):
        a_cls = rng.choice(list(by_class))
        same = i % 2 == 0
        b_cls = a_cls if same else rng.choice([c for c in by_class if c != a_cls])
        rows.append({"text": rng.choice(by_class[a_cls]), "other": rng.choice(by_class[b_cls]), "label": "same" if same else "different"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("pairs")
    make_pairs(120, seed=1).to_csv(root / "train.csv", index=False)
    make_pairs(30, seed=2).to_csv(root / "test.csv", index=False)
    cfg = write_config(
        root / "c.yaml",
        tiny_bert,
        root / "train.csv",
        root / "run",
        data={"train": str(root / "train.csv"), "val_fraction": 0.2, "text_pair_column": "other", "label_names": ["different", "same"]},
        train={"epochs": 3, "batch_size": 8, "learning_rate": 0.01, "precision": "fp32", "logging_steps": 5, "eval_batch_size": 16},
    )
    assert main(["train", "--config", str(cfg)]) == 0
    return root


def test_pairs_train_evaluate_predict_and_budget(pair_run, capsys):
    from textlora.prediction import load

    run = pair_run / "run"
    dev = pd.read_csv(run / "dev.csv")
    assert list(dev.columns) == ["text", "other", "label"]  # the dev split keeps both texts
    m = json.loads((run / "metrics.json").read_text())["best"]
    assert m["n"] == len(dev)
    assert main(["evaluate", "--model", str(run), "--data", str(pair_run / "test.csv")]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["predict", "--model", str(run), "--data", str(pair_run / "test.csv"), "--output", str(pair_run / "p.csv"), "--with-probs"]) == 0
    pred = pd.read_csv(pair_run / "p.csv")
    test = pd.read_csv(pair_run / "test.csv")
    clf = load(run)
    probs = clf.predict_proba(list(zip(test["text"], test["other"])))
    assert pred["Label"].tolist() == probs.argmax(1).tolist()
    # the pair is really used: swapping the second texts changes the probabilities
    assert not np.allclose(probs, clf.predict_proba(list(zip(test["text"], test["other"][::-1]))))
    assert main(["predict", "--model", str(run), "--text", test["text"][0], "--text-pair", test["other"][0]]) == 0
    assert clf.label_names[int(probs[0].argmax())] in capsys.readouterr().out
    assert main(["budget", "--config", str(pair_run / "c.yaml")]) == 0


def test_pairs_bad_input(pair_run, capsys):
    run = pair_run / "run"
    df = pd.read_csv(pair_run / "test.csv")
    df.drop(columns=["other"]).to_csv(pair_run / "no-pair.csv", index=False)
    fails(capsys, ["predict", "--model", str(run), "--data", str(pair_run / "no-pair.csv"), "--output", str(pair_run / "x.csv")], "missing pair column 'other'")
    df.loc[3, "other"] = " "
    df.to_csv(pair_run / "empty-pair.csv", index=False)
    fails(capsys, ["evaluate", "--model", str(run), "--data", str(pair_run / "empty-pair.csv")], "row 5: empty text in column 'other'")
    fails(capsys, ["predict", "--model", str(run), "--text", "goal"], "a sentence-pair run: give --text-pair too")
    cfg = pair_run / "c.yaml"
    fails(capsys, ["train", "--config", str(cfg), "--data.text_pair_column", "missing", "--output_dir", str(pair_run / "r2")], "missing pair column 'missing'")


def test_pairs_export_onnx(pair_run):
    pytest.importorskip("onnxruntime")
    from textlora.prediction import Classifier, load

    out = pair_run / "onnx"
    assert main(["export", "--model", str(pair_run / "run"), "--output", str(out), "--format", "onnx"]) == 0
    test = pd.read_csv(pair_run / "test.csv")
    pairs = list(zip(test["text"], test["other"]))
    assert np.allclose(load(out).logits(pairs), Classifier(pair_run / "run", precision="fp32").logits(pairs), atol=1e-4)


def test_pairs_serve(pair_run):
    with serving(pair_run / "run") as base:
        from textlora.prediction import load

        test = pd.read_csv(pair_run / "test.csv").head(4)
        status, body = _call(base + "/v1/classify", {"texts": test["text"].tolist(), "pairs": test["other"].tolist()})
        assert status == 200, body
        want = load(pair_run / "run").predict_proba(list(zip(test["text"], test["other"]))).argmax(1).tolist()
        assert [p["label"] for p in body["predictions"]] == want
        assert _call(base + "/v1/classify", {"texts": test["text"].tolist()})[0] == 422  # a pair model needs the pairs
        assert _call(base + "/v1/classify", {"texts": ["a", "b"], "pairs": ["c"]})[0] == 422
