"""Labelling rounds (textlora.rounds, the page's background retraining): a round starts from the run's
weights and is a function of its labels, the prefix cache changes nothing, and the page re-ranks."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from textlora.cli import main

from .conftest import fails, make_texts, write_config

NAMES = ["sports", "business", "science"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTLORA_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def pool():
    return make_texts(20, seed=11)  # 60 texts with their true labels (the simulated person's answers)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_round_starts_from_the_run_and_depends_on_its_labels_alone(trained, pool):
    from textlora.prediction import load
    from textlora.rounds import Learner

    run = trained / "run"
    before = _digest(run / "adapter_model.safetensors")
    learner = Learner(run, pool["text"].tolist(), strategy="combined")
    answers = {k: NAMES[pool["label"][k]] for k in range(12)} | {12: ""}  # twelve labels and a skip
    first, second = learner.round(answers, 30), learner.round(answers, 30)
    assert first.order == second.order and first.labelled == 12  # the same labels, the same ranking: each round starts afresh
    assert len(first.order) == 30 and not set(first.order) & set(answers)
    trained_probs, _ = learner.score()
    none = learner.round({}, 30)  # no labels: nothing trains, the run's own weights rank
    probs, _ = learner.score()
    assert np.allclose(probs, load(str(run), precision="fp32").predict_proba(pool["text"].tolist()), atol=1e-4)
    assert not np.allclose(probs, trained_probs, atol=1e-3) and none.labelled == 0  # the round's training moved the model
    assert _digest(run / "adapter_model.safetensors") == before  # the run on disk is never touched


def test_a_round_ranks_a_sample_of_a_large_pool(trained, pool):
    from textlora.rounds import Learner

    learner = Learner(trained / "run", pool["text"].tolist(), strategy="margin", score_limit=20)
    answers = {k: NAMES[pool["label"][k]] for k in range(6)}
    a, b = learner.round(answers, 50), learner.round(answers, 50)
    assert a.order == b.order and len(a.order) == 20 and not set(a.order) & set(answers)  # 20 of the 54 unanswered, the same 20 for the same labels
    probs, _ = learner.score(a.order)
    top = np.sort(probs, axis=1)
    assert np.all(np.diff(top[:, -1] - top[:, -2]) >= -1e-6)  # margin's order: the smallest gap first
    assert len(learner.round(answers, 50, whole=True).order) == 50


def test_a_round_from_the_prefix_cache_ranks_as_without_it(tmp_path, tiny_bert, trained, pool):
    from textlora.rounds import Learner

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"], "bias": "all", "layers": 1}
    cfg = write_config(tmp_path / "top.yaml", tiny_bert, trained / "train.csv", tmp_path / "top", lora=lora, model={"max_length": 32, "dropout": 0.0})
    assert main(["train", "--config", str(cfg)]) == 0
    answers = {k: NAMES[pool["label"][k]] for k in range(10)}
    cached = Learner(tmp_path / "top", pool["text"].tolist())
    plain = Learner(tmp_path / "top", pool["text"].tolist(), cache=False)
    assert cached.cache is not None and plain.cache is None
    a, b = cached.round(answers, 25), plain.round(answers, 25)
    assert np.allclose(cached.score()[0], plain.score()[0], atol=1e-4)
    assert a.order == b.order


def test_the_page_ranks_again_after_each_round(trained, pool, tmp_path):
    from textlora.labelling import open_store

    data = tmp_path / "pool.csv"
    table = pool.drop(columns=["label"])
    table.insert(0, "id", [f"p{k}" for k in range(len(table))])
    table.to_csv(data, index=False)
    store = open_store(str(data), str(tmp_path / "labels.csv"), str(trained / "run"), None, None, 8, "text", 0, round_size=3)
    assert store.learner is not None and store.progress()["model"] == {"round": 0, "labels": 0, "running": False}
    truth = dict(zip(table["id"], (NAMES[y] for y in pool["label"])))
    for _ in range(3):
        shown = store.next()["id"]
        assert store.answer(shown, truth[shown])[0] == 200
    assert store.wait_for_round(120)
    model = store.progress()["model"]
    assert model["round"] == 1 and model["labels"] == 3 and model["seconds"] > 0
    answered = set(pd.read_csv(tmp_path / "labels.csv")["id"])
    assert len(answered) == 3 and not answered & {store.ids[k] for k in store.queue}
    for _ in range(2):  # two more: not yet a round
        shown = store.next()["id"]
        store.answer(shown, truth[shown])
    assert store.wait_for_round(60) and store.progress()["model"]["round"] == 1


def test_a_negative_round_size_is_one_line(trained, capsys):
    fails(
        capsys,
        ["label", "--data", str(trained / "unlabelled.csv"), "--labels", "l.csv", "--model", str(trained / "run"), "--round-size", "-1"],
        "--round-size: expected an integer >= 0, found -1",
    )
