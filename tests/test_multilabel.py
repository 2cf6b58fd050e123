"""Multi-label classification: list labels in, BCE training, sklearn-checked metrics, predict/evaluate/report/serve out."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from textlora.cli import main

from .conftest import fails, make_texts, write_config
from .test_serve import _call, serving

NAMES = ["sports", "business", "science"]


def make_multilabel(n: int, seed: int) -> pd.DataFrame:
    """Each row joins one or two texts of the tiny vocabulary; its labels are their classes, as a JSON list."""
    texts = make_texts(max(n // 2, 4), seed=seed)
    rng = random.Random(seed)
    by_class = {NAMES[c]: g["text"].tolist() for c, g in texts.groupby("label")}
    rows = []
    for i in range(n):
        classes = rng.sample(NAMES, 1 if i % 3 == 0 else 2)
        rows.append({"text": " ".join(rng.choice(by_class[c]) for c in classes), "label": json.dumps(sorted(classes))})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("multilabel")
    make_multilabel(150, seed=1).to_csv(root / "train.csv", index=False)
    test = make_multilabel(30, seed=2)
    test.to_csv(root / "test.csv", index=False)
    test.assign(label=test["label"].map(json.loads)).to_json(root / "test-lists.jsonl", orient="records", lines=True)  # real lists
    cfg = write_config(
        root / "c.yaml",
        tiny_bert,
        root / "train.csv",
        root / "run",
        data={"train": str(root / "train.csv"), "val_fraction": 0.2, "multi_label": True},
        train={"epochs": 4, "batch_size": 8, "learning_rate": 0.01, "precision": "fp32", "logging_steps": 5, "eval_batch_size": 16},
    )
    assert main(["train", "--config", str(cfg)]) == 0
    return root


def test_metrics_agree_with_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    from textlora.metrics import compute_multilabel_metrics

    rng = np.random.default_rng(0)
    for _ in range(20):
        t, p = rng.random((40, 5)) < 0.3, rng.random((40, 5)) < 0.3
        t[:, 4] = False  # a class never true
        m = compute_multilabel_metrics(t, p, list("abcde"))
        assert m["accuracy"] == pytest.approx(accuracy_score(t, p))
        assert m["micro_f1"] == pytest.approx(f1_score(t, p, average="micro", zero_division=0))
        assert m["macro_f1"] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
        assert [c["precision"] for c in m["per_class"].values()] == pytest.approx(precision_score(t, p, average=None, zero_division=0))
        assert [c["recall"] for c in m["per_class"].values()] == pytest.approx(recall_score(t, p, average=None, zero_division=0))


def test_multilabel_train_evaluate_predict_report(ml_run, capsys):
    from sklearn.metrics import f1_score

    from textlora.prediction import load

    run = ml_run / "run"
    best = json.loads((run / "metrics.json").read_text())["best"]
    assert {"accuracy", "micro_f1", "macro_f1", "per_class"} <= set(best) and "confusion_matrix" not in best
    dev = pd.read_csv(run / "dev.csv")
    assert all(isinstance(json.loads(v), list) for v in dev["label"])  # the dev split keeps the label lists
    assert (
        main(["evaluate", "--model", str(run), "--data", str(ml_run / "test.csv"), str(ml_run / "test-lists.jsonl"), "--output-dir", str(ml_run / "ev")]) == 0
    )
    assert "micro-F1" in capsys.readouterr().out
    ev = json.loads((ml_run / "ev" / "metrics.json").read_text())
    a, b = ev[str(ml_run / "test.csv")], ev[str(ml_run / "test-lists.jsonl")]
    assert a["micro_f1"] == b["micro_f1"]  # JSON text and real lists read alike
    # the evaluate figures are scikit-learn's on the model's own sigmoid >= 0.5 decisions
    test = pd.read_csv(ml_run / "test.csv")
    probs = load(run).predict_proba(test["text"].tolist())
    assert ((probs >= 0) & (probs <= 1)).all() and not np.allclose(probs.sum(1), 1)  # a sigmoid a class, not a softmax
    truth = np.array([[n in json.loads(v) for n in NAMES] for v in test["label"]])
    assert a["micro_f1"] == pytest.approx(f1_score(truth, probs >= 0.5, average="micro", zero_division=0))
    assert main(["predict", "--model", str(run), "--data", str(ml_run / "test.csv"), "--output", str(ml_run / "p.csv"), "--with-names", "--with-probs"]) == 0
    pred = pd.read_csv(ml_run / "p.csv")
    assert list(pred.columns[:3]) == ["ID", "Labels", "LabelNames"] and len(pred) == len(test)
    assert [json.loads(v) for v in pred["Labels"]] == [np.flatnonzero(p >= 0.5).tolist() for p in probs]
    assert np.allclose(pred[[f"P({n})" for n in NAMES]].to_numpy(), probs, atol=1e-5)
    assert main(["report", "--model", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "subset accuracy" in html and "micro-F1" in html


def test_multilabel_serve(ml_run):
    from textlora.prediction import load

    run = ml_run / "run"
    with serving(run) as base:
        texts = pd.read_csv(ml_run / "test.csv")["text"].head(5).tolist()
        status, body = _call(base + "/v1/classify", {"texts": texts})
        assert status == 200, body
        probs = load(run).predict_proba(texts)
        assert [p["labels"] for p in body["predictions"]] == [np.flatnonzero(p >= 0.5).tolist() for p in probs]
        assert [p["label_names"] for p in body["predictions"]] == [[NAMES[j] for j in np.flatnonzero(p >= 0.5)] for p in probs]


def test_separator_labels(tmp_path, tiny_bert):
    df = make_multilabel(60, seed=3)
    df["label"] = df["label"].map(lambda v: "|".join(json.loads(v)))
    df.to_csv(tmp_path / "train.csv", index=False)
    cfg = write_config(
        tmp_path / "c.yaml",
        tiny_bert,
        tmp_path / "train.csv",
        tmp_path / "run",
        data={"train": str(tmp_path / "train.csv"), "multi_label": True, "label_separator": "|"},
        train={"epochs": 1},
    )
    assert main(["train", "--config", str(cfg)]) == 0
    assert json.loads((tmp_path / "run" / "labels.json").read_text()) == NAMES
    assert all(1 <= len(json.loads(v)) <= 2 for v in pd.read_csv(tmp_path / "run" / "dev.csv")["label"])


def test_multilabel_bad_input(tmp_path, tiny_bert, capsys):
    df = make_multilabel(30, seed=4)

    def train_on(frame, multi=True):
        frame.to_csv(tmp_path / "t.csv", index=False)
        return write_config(tmp_path / "c.yaml", tiny_bert, tmp_path / "t.csv", tmp_path / "run", data={"train": str(tmp_path / "t.csv"), "multi_label": multi})

    bad = df.copy()
    bad.loc[4, "label"] = "[]"
    fails(capsys, ["train", "--config", str(train_on(bad))], "row 6: empty label list in column 'label'")
    bad = df.copy()
    bad.loc[2, "label"] = '["sports", business]'
    fails(capsys, ["train", "--config", str(train_on(bad))], "row 4: label list '[\"sports\", business]' in column 'label' is not valid JSON")
    fails(capsys, ["train", "--config", str(train_on(df, multi=False))], "row 2: label")
    err = fails(capsys, ["train", "--config", str(train_on(df, multi=False))], "set data.multi_label: true")
    assert "is a list" in err


def test_multilabel_hf_export_gives_sigmoids_in_pipeline(ml_run):
    """The exported folder says multi_label_classification, so transformers' pipeline applies a sigmoid a class."""
    from transformers import pipeline

    from textlora.prediction import Classifier

    out = ml_run / "hf"
    assert main(["export", "--model", str(ml_run / "run"), "--output", str(out), "--format", "hf"]) == 0
    texts = pd.read_csv(ml_run / "test.csv")["text"].head(4).tolist()
    scores = pipeline("text-classification", model=str(out), device="cpu", top_k=None)(texts)
    got = np.array([[next(s["score"] for s in row if s["label"] == n) for n in NAMES] for row in scores])
    assert np.allclose(got, Classifier(ml_run / "run", precision="fp32").predict_proba(texts), atol=1e-4)
