"""The budget planner: its arithmetic against peft's own count, its choice, and its refusals."""

import pytest
import yaml

from textlora.budget import GROUPS, choose_plan, count_plan
from textlora.cli import main
from textlora.config import LoraSettings
from textlora.errors import UserError
from textlora.models import apply_lora, count_trainable

from .conftest import roberta_base_shaped, write_config


def _base(tiny_bert, num_labels=3):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=num_labels, ignore_mismatched_sizes=True)


@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("r, bias", [(1, "none"), (4, "all"), (8, "lora_only")])
def test_planner_arithmetic_matches_peft(tiny_bert, group, r, bias):
    base = _base(tiny_bert)
    lora, head, nb = count_plan(base, GROUPS[group], r, bias)
    b = count_trainable(apply_lora(base, LoraSettings(r=r, alpha=2 * r, target_modules=GROUPS[group], bias=bias)))
    assert (lora, head, nb) == (b.lora, b.head, b.bias)


def test_roberta_shaped_plan_fills_a_million():
    base = roberta_base_shaped(vocab_size=1000)  # the embeddings are frozen either way
    plan = choose_plan(base, 1_000_000)
    assert plan.total <= 1_000_000
    assert plan.total > 900_000  # fills the budget well
    built = count_trainable(apply_lora(base, LoraSettings(r=plan.r, alpha=2 * plan.r, target_modules=plan.target_modules, bias=plan.bias)))
    assert built.total == plan.total


@pytest.mark.parametrize("budget", [100, 1_000, 10_000])
def test_plan_respects_budget_or_refuses(tiny_bert, budget):
    base = _base(tiny_bert)
    try:
        plan = choose_plan(base, budget)
    except UserError as e:
        assert "cannot hold the standard classifier head and the smallest lora adapter" in str(e)
        assert budget < 1_000
    else:
        assert plan.total <= budget
        assert count_trainable(apply_lora(base, LoraSettings(r=plan.r, target_modules=plan.target_modules, bias=plan.bias))).total == plan.total


def test_budget_plan_verb_and_lora_auto(tiny_bert, data_dir, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "run", train={"max_steps": 2})
    assert main(["budget", "--config", str(cfg), "--plan", "--max-trainable-params", "3000"]) == 0
    out = capsys.readouterr().out
    assert "<- plan" in out and "within budget" in out
    assert main(["budget", "--config", str(cfg), "--plan", "--max-trainable-params", "60"]) == 2
    assert "cannot hold the standard classifier head" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--lora", "auto", "--budget.max_trainable_params", "3000"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["lora"]["auto"] is False and saved["lora"]["r"] >= 1
    import json

    total = json.loads((tmp_path / "run" / "metrics.json").read_text())["trainable_params"]["total"]
    assert 0 < total <= 3000


def test_refusal_names_the_exact_minimum(tiny_bert):
    import re

    base = _base(tiny_bert)
    with pytest.raises(UserError) as e:
        choose_plan(base, 10)
    needed = int(re.search(r"needs at least ([\d,]+)", str(e.value)).group(1).replace(",", ""))
    plan = choose_plan(base, needed)  # exactly the minimum fits: rank 1 on query and value, no biases
    assert (plan.total, plan.r, plan.group, plan.bias) == (needed, 1, "query+value", "none")
    with pytest.raises(UserError):
        choose_plan(base, needed - 1)
