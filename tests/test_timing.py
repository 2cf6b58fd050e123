"""The planner's time budget: a plan's minutes from measured per-layer costs, the most layers that
fit ``budget.max_train_minutes``, and ``textlora budget`` printing the estimate."""

from __future__ import annotations

import json

import pytest
import yaml

from textlora.cli import main
from textlora.timing import Timing, choose_layers

from .conftest import fails, write_config


def _timing(**changes) -> Timing:
    sizes = dict(forward_s=1.0, train_s=3.0, num_layers=4, batch_size=10, length=16, train_rows=100, eval_rows=20, cached_texts=120)
    return Timing(**{**sizes, **changes})


def test_minutes_follow_the_layers_trained_and_the_cache():
    t = _timing()
    # all 4 layers: 10 steps x 4 layers x 3 s, and 2 eval batches x 4 layers x 1 s; no cache
    assert t.cache_minutes(4) == 0
    assert t.epoch_minutes(4) == pytest.approx((10 * 4 * 3 + 2 * 4 * 1) / 60)
    # top 1 with the cache: 12 batches of texts x 3 frozen layers once, then 1 layer a step and an eval batch
    assert t.cache_minutes(1) == pytest.approx(12 * 3 * 1 / 60)
    assert t.epoch_minutes(1) == pytest.approx((10 * 3 + 2 * 1) / 60)
    # top 1 without the cache: every step runs the 3 frozen layers forward too, and eval all 4
    assert t.epoch_minutes(1, cache=False) == pytest.approx((10 * (3 + 3) + 2 * 4) / 60)
    assert t.total_minutes(1, epochs=3) == pytest.approx(t.cache_minutes(1) + 3 * t.epoch_minutes(1))
    assert "top 1 of 4 layers with the prefix cache" in t.describe(1, 3)


def test_the_most_layers_that_fit_are_chosen():
    t = _timing()
    every = t.total_minutes(4, 2)
    assert choose_layers(t, every + 0.01, 2) == (4, True)
    assert choose_layers(t, t.total_minutes(2, 2) + 0.001, 2) == (2, True)
    assert choose_layers(t, t.total_minutes(1, 2) / 2, 2) == (1, False)  # nothing fits: the cheapest, said so


def test_training_fits_its_layers_to_the_minutes(tmp_path, tiny_bert, data_dir, capsys, monkeypatch):
    monkeypatch.setenv("TEXTLORA_CACHE", str(tmp_path / "cache"))
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"], "bias": "none"}
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "run", lora=lora, train={"epochs": 1}, budget={"max_train_minutes": 1e-9})
    assert main(["train", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "budget.max_train_minutes 1e-09: LoRA on the top 1 of 2 layers does not fit" in out
    assert json.loads((tmp_path / "run" / "adapter_config.json").read_text())["layers_to_transform"] == [1]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["lora"]["layers"] == [1]
    # minutes to spare: every layer, no cache
    cfg = write_config(tmp_path / "d.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "all", lora=lora, train={"epochs": 1}, budget={"max_train_minutes": 600})
    assert main(["train", "--config", str(cfg)]) == 0
    assert "LoRA on all 2 layers fits" in capsys.readouterr().out
    assert json.loads((tmp_path / "all" / "adapter_config.json").read_text()).get("layers_to_transform") is None


def test_budget_prints_the_estimate(tmp_path, tiny_bert, data_dir, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "run", lora={"layers": 1})
    assert main(["budget", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "estimated on this machine (top 1 of 2 layers with the prefix cache)" in out and "min an epoch" in out
    assert main(["budget", "--config", str(cfg), "--no-estimate"]) == 0
    assert "estimated" not in capsys.readouterr().out


def test_a_time_budget_that_is_not_positive_is_one_line(tmp_path, tiny_bert, data_dir, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "run", budget={"max_train_minutes": 0})
    fails(capsys, ["train", "--config", str(cfg)], "budget.max_train_minutes: expected a number of minutes > 0")
