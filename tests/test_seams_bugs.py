"""Bugs found while drawing the code's seams, each pinned by a test that failed before its fix:

- the pipeline's training stage was cached by the base model's *name*, so a local model folder whose
  weights changed was wrongly reused;
- ``train`` released its output lock only on success, so a caller that keeps the exception (a
  notebook keeps the last traceback) could not train into the same folder again;
- a pipeline with no eval sets (dev alone) failed in its evaluate stage;
- one model and one file gave two accuracies in bf16: the training loop scores unmerged LoRA in
  length-sorted batches, ``evaluate`` merged LoRA in other batches, and rows near a tie flipped.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from textlora.cli import main
from textlora.errors import UserError

from .conftest import make_texts, pretrain_tiny_bert, write_config


def _source_only(task, model, **data) -> str:
    cfg = {
        "output_dir": str(task / "out"),
        "seed": 7,
        "data": {"train": str(task / "source.csv"), "val_fraction": 0.2, **data},
        "target": {"texts": str(task / "target.csv")},
        "model": {"name": str(model), "max_length": 32},
        "lora": {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["query", "value"], "bias": "none"},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 0.01, "precision": "fp32"},
        "synthetic": {"enabled": False},
    }
    path = task / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_a_changed_local_model_folder_retrains_in_the_pipeline(task, tiny_bert, capsys):
    model = task / "model"
    shutil.copytree(tiny_bert, model)
    path = _source_only(task, model, eval_sets={"target": str(task / "target_test.csv")})
    assert main(["pipeline", "--config", path]) == 0
    capsys.readouterr()
    shutil.rmtree(model)
    pretrain_tiny_bert(model, steps=20)  # the same name, other weights
    assert main(["pipeline", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "(cached)" not in out.split("== train: ")[1].splitlines()[0], out


def test_a_pipeline_with_no_eval_sets_evaluates_its_dev_split(task, tiny_bert, capsys):
    assert main(["pipeline", "--config", _source_only(task, tiny_bert)]) == 0
    summary = json.loads((task / "out" / "pipeline.json").read_text())
    assert set(summary["metrics"]) == {"dev"} and summary["metrics"]["dev"]["n"] > 0


def test_a_failed_train_releases_its_output_lock(tmp_path, tiny_bert):
    from textlora.config import load_config
    from textlora.training import train

    bad = tmp_path / "bad.csv"
    make_texts(10, seed=1).assign(label=0).to_csv(bad, index=False)  # one class: refused after the lock is taken
    good = tmp_path / "train.csv"
    make_texts(20, seed=1).to_csv(good, index=False)
    out = tmp_path / "run"
    with pytest.raises(UserError) as kept:  # the exception, and with it train's frame, stays alive
        train(load_config(write_config(tmp_path / "a.yaml", tiny_bert, bad, out, data={"label_names": None})))
    assert "in use" not in str(kept.value)
    cfg = load_config(write_config(tmp_path / "b.yaml", tiny_bert, good, out, train={"epochs": 1}))
    assert train(cfg, overwrite=True) == out  # not "in use by another textlora process (pid <this one>)"


def _tied_model(tiny_bert):
    """A tiny classifier whose two logits are large and close for every text: rounded to bf16 (a step
    of 1/32 at 5), they tie or swap, as rows near a tie do on a real model."""
    from transformers import AutoModelForSequenceClassification

    from textlora.config import LoraSettings
    from textlora.models import apply_lora

    torch.manual_seed(3)
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2, ignore_mismatched_sizes=True)
    with torch.no_grad():
        base.classifier.weight.mul_(0.05)
        base.classifier.bias.fill_(5.0)
    model = apply_lora(base, LoraSettings(r=2, alpha=4, dropout=0.0, target_modules=["query", "value"], bias="none"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a LoRA update that merging moves in bf16
    return model.eval()


def test_one_model_one_file_one_answer_whatever_the_batches_and_merge(tiny_bert):
    import copy

    from textlora.models import load_tokenizer
    from textlora.runtime import encode_texts, predict_logits

    model = _tied_model(tiny_bert)
    merged = copy.deepcopy(model).merge_and_unload().eval()
    tok = load_tokenizer(str(tiny_bert))
    texts = make_texts(200, seed=5)["text"].tolist()
    enc = encode_texts(tok, texts, 32)
    exact = predict_logits(merged, enc, tok.pad_token_id, batch_size=7, precision="fp32").argmax(1)
    answers = [
        predict_logits(m, enc, tok.pad_token_id, batch_size=b, precision="bf16").argmax(1) for m, b in ((model, 32), (merged, 32), (model, 5), (merged, 64))
    ]
    for a in answers:
        assert np.array_equal(a, exact), f"{int((a != exact).sum())} of {len(exact)} rows differ from fp32"


def test_training_and_evaluate_give_one_accuracy(tmp_path, tiny_bert):
    from textlora.config import load_config
    from textlora.evaluation import evaluate
    from textlora.training import train

    make_texts(60, seed=1).to_csv(tmp_path / "train.csv", index=False)
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, tmp_path / "train.csv", tmp_path / "run", train={"epochs": 1, "precision": "bf16", "eval_batch_size": 5})
    run = train(load_config(cfg))
    best = json.loads((run / "metrics.json").read_text())["best"]
    assert evaluate(str(run), str(run / "dev.csv"))["accuracy"] == best["accuracy"]
