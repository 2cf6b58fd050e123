"""Head types (linear, mlp, mean) and adapter methods (DoRA, VeRA): counts against peft, padding,
training through the CLI, reloading, ONNX export, and the planner's choice of head."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from textlora.budget import GROUPS, choose_head, choose_plan, count_plan
from textlora.cli import main
from textlora.config import LoraSettings
from textlora.heads import install_head
from textlora.models import apply_lora, count_trainable, load_base_model, load_classifier

from .conftest import fails, make_texts, roberta_base_shaped, write_config

LABELS = ["sports", "business", "science"]


def _tiny_roberta():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    cfg = RobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, num_labels=3)
    return RobertaForSequenceClassification(cfg)


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("head", ["standard", "linear", "mlp", "mean"])
@pytest.mark.parametrize("method, bias", [("lora", "all"), ("dora", "lora_only"), ("vera", "none")])
def test_planner_arithmetic_matches_peft_for_heads_and_methods(tiny_bert, family, head, method, bias):
    base = load_base_model(str(tiny_bert), LABELS, weights=False) if family == "bert" else _tiny_roberta()
    targets = GROUPS["all-linear"]
    lora, head_n, nb = count_plan(base, targets, 8, bias, head, method, head_hidden=16)
    install_head(base, head, 16, family)
    b = count_trainable(apply_lora(base, LoraSettings(r=8, alpha=16, target_modules=targets, bias=bias, method=method)))
    assert (lora, head_n, nb) == (b.lora, b.head, b.bias)
    assert b.other == 0


@pytest.mark.parametrize("head", ["linear", "mlp", "mean"])
def test_pooled_heads_ignore_padding(tiny_bert, head):
    model = load_base_model(str(tiny_bert), LABELS, head=head, head_hidden=8).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3, 0, 0, 0], [2, 5, 6, 7, 8, 9, 10, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask).logits[0]
        alone = model(input_ids=ids[:1, :5], attention_mask=mask[:1, :5]).logits[0]
    assert torch.allclose(batched, alone, atol=1e-5)


def test_mean_head_differs_from_first_token(tiny_bert):
    torch.manual_seed(0)
    mean = load_base_model(str(tiny_bert), LABELS, head="mean").eval()
    torch.manual_seed(0)
    first = load_base_model(str(tiny_bert), LABELS, head="linear").eval()
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    with torch.no_grad():
        assert not torch.allclose(mean(input_ids=ids).logits, first(input_ids=ids).logits)


def test_choose_head(tiny_bert, tmp_path):
    bert = load_base_model(str(tiny_bert), LABELS, weights=False)
    assert choose_head(bert, 1_000_000) == "standard"  # BERT's own head is one small linear layer
    roberta = roberta_base_shaped(vocab_size=1000)
    assert choose_head(roberta, 1_000_000) == "linear"  # roberta-base's own head alone is 592k
    plan = choose_plan(roberta, 1_000_000, "auto")
    assert plan.head_kind == "linear" and 900_000 < plan.total <= 1_000_000
    built = install_head(roberta, "linear", 64, "roberta")
    assert count_trainable(apply_lora(built, LoraSettings(r=plan.r, target_modules=plan.target_modules, bias=plan.bias))).total == plan.total
    # a sentence-transformers folder that says it pools by the mean gets the mean head
    import shutil

    st = tmp_path / "st"
    shutil.copytree(tiny_bert, st)
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}))
    assert choose_head(load_base_model(str(st), LABELS, weights=False), 1_000_000) == "mean"


@pytest.mark.parametrize("head, method", [("mean", "dora"), ("mlp", "vera"), ("linear", "lora"), ("standard", "vera")])
def test_train_reload_and_export_with_head_and_method(tiny_bert, data_dir, tmp_path, capsys, head, method):
    pytest.importorskip("onnxruntime")
    from textlora.prediction import Classifier, load

    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", run, lora={"method": method, "r": 16 if method == "vera" else 4})
    assert main(["train", "--config", str(cfg), "--model.head", head, "--model.head_hidden", "8"]) == 0
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["best"]["accuracy"] > 0.5  # it learned (3 classes)
    texts = make_texts(10, seed=5)["text"].tolist()
    merged = Classifier(run, precision="fp32")
    unmerged, tokenizer, _, _ = load_classifier(run, merge=False)
    with torch.no_grad():
        direct = unmerged(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    assert np.allclose(merged.logits(texts), direct, atol=1e-4)  # merged (but VeRA), length-sorted batches == the adapter as trained
    assert main(["predict", "--model", str(run), "--data", str(data_dir / "test.csv"), "--output", str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 30
    assert main(["export", "--model", str(run), "--output", str(tmp_path / "onnx"), "--format", "onnx"]) == 0
    assert np.allclose(load(tmp_path / "onnx").logits(texts), merged.logits(texts), atol=1e-4)
    capsys.readouterr()  # progress bars so far
    hf = ["export", "--model", str(run), "--output", str(tmp_path / "hf"), "--format", "hf"]
    fails(capsys, hf, f"model.head is {head}" if head != "standard" else "VeRA run cannot be merged")


def test_head_on_a_model_without_classifier_is_refused(tiny_bert):
    from textlora.errors import UserError

    model = load_base_model(str(tiny_bert), LABELS, weights=False)
    del model.classifier
    with pytest.raises(UserError, match="no 'classifier' module"):
        install_head(model, "mean", 8, "x")
