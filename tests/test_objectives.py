"""Target objectives (train.target_objective): the losses against their definitions, the mixed loss
training through the LoRA (from the prefix cache too), a saved run without the MLM head, exact resume,
too few target texts skipped with a line, and the pipeline passing its target texts."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
import yaml

from textlora.cli import main
from textlora.objectives import MIN_TEXTS, contrastive_loss, mask_tokens

from .conftest import fails, make_texts, write_config
from .test_prefix import _train

TOP = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"], "bias": "all", "layers": 1}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTLORA_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def target_file(tmp_path):
    """Unlabelled texts of the same topics (enough for an objective: MIN_TEXTS)."""
    df = make_texts(MIN_TEXTS // 3 + 10, seed=5).drop(columns=["label"])
    df.to_csv(tmp_path / "target.csv", index=False)
    return tmp_path / "target.csv"


def _cfg(tmp_path, tiny_bert, data_dir, name, target, lora=TOP, **train):
    train = {"epochs": 2, "batch_size": 8, "learning_rate": 0.01, "precision": "fp32", "logging_steps": 1, "eval_batch_size": 16, **train}
    path = write_config(tmp_path / f"{name}.yaml", tiny_bert, data_dir / "train.csv", tmp_path / name, train=train, lora=lora)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["target_texts"] = str(target)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _metrics(tmp_path, name) -> dict:
    return json.loads((tmp_path / name / "metrics.json").read_text())


def test_contrastive_loss_is_infonce():
    torch.manual_seed(0)
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    na, nb = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    sims = (na @ nb.T / 0.05).numpy()
    expected = np.mean([np.log(np.exp(sims[i]).sum()) - sims[i, i] for i in range(5)])
    assert contrastive_loss(a, b).item() == pytest.approx(expected, rel=1e-5)
    # each text finding its own second view (far from the others) costs almost nothing
    assert contrastive_loss(torch.eye(5) * 3, torch.eye(5) * 3).item() < 1e-6


def test_masking_follows_bert():
    torch.manual_seed(0)
    special = [0, 2, 3]  # pad, cls, sep
    ids = torch.randint(5, 100, (64, 40))
    ids[:, 0], ids[:, 30], ids[:, 31:] = 2, 3, 0
    mask = (ids != 0).long()
    masked, targets = mask_tokens(ids, mask, mask_id=4, vocab_size=100, special_ids=special)
    chosen = targets != -100
    assert not chosen[:, 0].any() and not chosen[:, 30:].any()  # never a special token or padding
    assert torch.equal(targets[chosen], ids[chosen])
    assert masked[~chosen].equal(ids[~chosen])  # what is not chosen is untouched
    rate = chosen.sum().item() / (64 * 29)
    assert 0.12 < rate < 0.18
    as_mask = (masked[chosen] == 4).float().mean().item()
    assert 0.7 < as_mask < 0.9
    # a batch too short for 15% still gets one token to predict
    one = torch.tensor([[2, 50, 3]])
    _, t = mask_tokens(one, torch.ones_like(one), 4, 100, special)
    assert (t != -100).sum() == 1 and t[0, 1] == 50


@pytest.mark.parametrize("kind", ["contrastive", "mlm"])
def test_the_mixed_loss_trains_and_the_run_is_a_plain_adapter(tmp_path, tiny_bert, data_dir, target_file, kind, capsys):
    epochs = 6 if kind == "contrastive" else 2  # the tiny model's texts are near-copies of each other: telling them apart takes a while
    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, kind, target_file, target_objective=kind, epochs=epochs))]) == 0
    out = capsys.readouterr().out
    m = _metrics(tmp_path, kind)
    n = m["target_objective"]["texts"]  # the file's distinct texts less any the dev split holds
    assert f"target objective: {kind} on {n} target texts" in out and MIN_TEXTS <= n <= MIN_TEXTS + 30
    assert m["target_objective"]["used"] and m["target_objective"]["weight"] == pytest.approx(round(n / (n + 90), 4))
    losses = [e["target_loss"] for e in m["train_log"]]
    assert len(losses) == len(m["train_log"]) > 10
    assert np.mean(losses[-12:]) < np.mean(losses[:12]) - 0.05  # the target objective is learnt
    assert m["best"]["accuracy"] > 0.8  # and the classifier still is
    from safetensors import safe_open

    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "plain", target_file, max_steps=1))]) == 0

    def keys(run):
        with safe_open(str(tmp_path / run / "adapter_model.safetensors"), "pt") as f:
            return sorted(f.keys())

    assert keys(kind) == keys("plain")  # the same adapter as a run without the objective: no head in it
    if kind == "mlm":
        assert m["target_objective"]["head_params"] > 0
        ckpt = sorted((tmp_path / kind / "checkpoints").glob("step-*"))[-1]
        with safe_open(str(ckpt / "trainable.safetensors"), "pt") as f:
            assert any(k.startswith("target_head.") for k in f.keys())  # the head is in checkpoints (exact resume), not in the run
    from textlora.prediction import load

    assert load(str(tmp_path / kind), precision="fp32").logits(["the goal in the match"]).shape == (1, 3)


def test_the_two_views_differ_even_where_dropout_is_off(tiny_bert):
    from transformers import BertForSequenceClassification

    from textlora.objectives import _pooled, dropout_at_least

    model = BertForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    ids, mask = torch.tensor([[2, 10, 11, 12, 3]]), torch.ones(1, 5, dtype=torch.long)
    assert torch.equal(_pooled(model, ids, mask), _pooled(model, ids, mask))  # p = 0: one view
    with dropout_at_least(model, 0.1):
        assert not torch.allclose(_pooled(model, ids, mask), _pooled(model, ids, mask))
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))  # as it was


def test_contrastive_runs_from_the_prefix_cache_as_without_it(tmp_path, tiny_bert, data_dir, target_file, monkeypatch):
    monkeypatch.setattr("textlora.objectives.VIEW_DROPOUT", 0.0)  # no dropout: two passes of a text agree, and so do the two paths
    model = {"model": {"dropout": 0.0}}
    for name, cache in (("plain", "off"), ("cached", "auto")):
        cfg = _cfg(tmp_path, tiny_bert, data_dir, name, target_file, target_objective="contrastive", prefix_cache=cache)
        raw = yaml.safe_load(cfg.read_text())
        raw["model"].update(model["model"])
        cfg.write_text(yaml.safe_dump(raw))
        assert main(["train", "--config", str(cfg)]) == 0
    plain, cached = _metrics(tmp_path, "plain"), _metrics(tmp_path, "cached")
    assert cached["prefix_cache"]["used"] and cached["prefix_cache"]["texts"] > 200  # the target texts are in it
    assert [e["target_loss"] for e in cached["train_log"]] == pytest.approx([e["target_loss"] for e in plain["train_log"]], rel=1e-4, abs=1e-5)
    assert [e["loss"] for e in cached["train_log"]] == pytest.approx([e["loss"] for e in plain["train_log"]], rel=1e-4)


def test_a_killed_mlm_run_resumes_exactly(tmp_path, tiny_bert, data_dir, target_file):
    steps = {"target_objective": "mlm", "max_steps": 12, "eval_strategy": "steps", "eval_steps": 4}
    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "ref", target_file, **steps))]) == 0
    cfg = _cfg(tmp_path, tiny_bert, data_dir, "crash", target_file, **steps)
    r = _train(cfg, fault="step:6")
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    r = _train(cfg, "--resume", "last")
    assert r.returncode == 0 and "resuming at step 4" in r.stdout, r.stderr[-2000:]
    a, b = _metrics(tmp_path, "ref"), _metrics(tmp_path, "crash")
    assert [e["target_loss"] for e in b["train_log"]] == pytest.approx([e["target_loss"] for e in a["train_log"]], rel=1e-5)
    assert [e["loss"] for e in b["train_log"]] == pytest.approx([e["loss"] for e in a["train_log"]], rel=1e-5)


def test_too_few_target_texts_skip_the_objective_with_a_line(tmp_path, tiny_bert, data_dir, capsys):
    few = tmp_path / "few.csv"
    make_texts(20, seed=9).drop(columns=["label"]).to_csv(few, index=False)
    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "few", few, target_objective="mlm"))]) == 0
    assert f"train.target_objective: mlm skipped: 60 target texts in {few}" in capsys.readouterr().out
    m = _metrics(tmp_path, "few")
    assert m["target_objective"]["used"] is False and "target_loss" not in m["train_log"][0]


def test_dev_and_eval_set_texts_are_left_out(tmp_path, tiny_bert, data_dir, target_file):
    import pandas as pd

    from textlora.config import config_from_dict
    from textlora.data import load_splits
    from textlora.objectives import target_texts

    held = pd.read_csv(data_dir / "test.csv")
    both = pd.concat([pd.read_csv(target_file), held[["text"]], held[["text"]].head(3)])
    both.to_csv(tmp_path / "both.csv", index=False)
    cfg = config_from_dict(yaml.safe_load(_cfg(tmp_path, tiny_bert, data_dir, "x", tmp_path / "both.csv").read_text()))
    cfg.data.eval_sets = {"test": str(data_dir / "test.csv")}
    splits = load_splits(cfg.data, cfg.seed)
    texts = target_texts(cfg.data, splits)
    assert not set(texts) & (set(held["text"]) | set(splits.val_texts))
    assert len(texts) == len(set(texts)) == len(set(pd.read_csv(target_file)["text"]) - set(splits.val_texts))


def test_an_objective_without_target_texts_is_one_line(tmp_path, tiny_bert, data_dir, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "run", train={"target_objective": "contrastive"})
    fails(
        capsys,
        ["train", "--config", str(cfg)],
        "config: data.target_texts: expected a file of target texts for train.target_objective: contrastive, found None",
    )
    fails(
        capsys,
        ["train", "--config", str(cfg), "--train.target_objective", "simcse"],
        "config: train.target_objective: expected none, contrastive or mlm, found 'simcse'",
    )
