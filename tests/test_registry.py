"""The model registry: an encoder family registered here, in a test file, trains end to end with its
own LoRA targets, planner groups and offline alias; the shipped families answer for their models;
the device seam decides in one place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from textlora import registry
from textlora.cli import main
from textlora.registry import Family, Source

from .conftest import make_texts, make_tokenizer


def _tiny_electra(folder: Path) -> Path:
    from transformers import ElectraConfig, ElectraModel

    tok = make_tokenizer(folder)
    torch.manual_seed(0)
    cfg = ElectraConfig(
        vocab_size=len(tok), embedding_size=16, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, max_position_embeddings=64
    )
    ElectraModel(cfg).save_pretrained(str(folder))
    return folder


@pytest.fixture
def electra(tmp_path, monkeypatch):
    folder = _tiny_electra(tmp_path / "electra")
    monkeypatch.setattr(registry, "FAMILIES", list(registry.FAMILIES))  # restored after the test
    family = registry.register(
        Family(
            "electra",
            ("electra",),
            "encoder",
            {"all-linear": ["query", "key", "value", "dense"], "attention": ["query", "value"], "query+value": ["query", "value"]},
            "layer",
            sources=(Source("tiny-electra", "test-org/tiny-electra", lambda: folder, lambda: True),),
        )
    )
    return family


def test_a_family_registered_in_a_test_file_trains_end_to_end(electra, tmp_path, capsys):
    make_texts(30, seed=1).to_csv(tmp_path / "train.csv", index=False)
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "model": {"name": "tiny-electra", "max_length": 32},  # its alias: the registry finds the folder
        "lora": {"r": 2, "alpha": 4, "dropout": 0.0},  # no targets: the family's attention group
        "data": {"train": str(tmp_path / "train.csv"), "label_names": ["sports", "business", "science"]},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 0.01, "precision": "fp32"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 0
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["lora"]["target_modules"] == ["query", "value"]
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["query", "value"] and adapter["base_model_name_or_path"] == "test-org/tiny-electra"
    assert main(["predict", "--model", str(run), "--data", str(tmp_path / "train.csv"), "--output", str(tmp_path / "p.csv")]) == 0
    capsys.readouterr()
    # the planner chooses among the family's own groups
    assert main(["budget", "--config", str(tmp_path / "c.yaml"), "--plan", "--max-trainable-params", "2000"]) == 0
    out = capsys.readouterr().out
    assert "all-linear" in out and "attention+output" not in out


@pytest.mark.parametrize(
    "model_type, family, targets",
    [
        ("bert", "bert", ["query", "key", "value"]),
        ("roberta", "roberta", ["query", "key", "value"]),
        ("mpnet", "mpnet", ["q", "k", "v"]),
        ("deberta-v2", "deberta", ["query_proj", "key_proj", "value_proj"]),
        ("distilbert", "distilbert", ["q_lin", "k_lin", "v_lin"]),
        ("llama", "llama", ["q_proj", "k_proj", "v_proj"]),
        ("gpt2", "gpt2", ["c_attn"]),
    ],
)
def test_each_shipped_family_answers_for_its_models(model_type, family, targets):
    found = registry.family_for(model_type)
    assert found.name == family and found.default_targets == targets
    assert registry.family_for("no-such-type") is None


def test_unset_targets_resolve_to_the_family_s_own_names(tiny_bert, tiny_gpt2):
    from textlora.resolve import default_targets

    assert default_targets(str(tiny_bert)) == ["query", "key", "value"]
    assert default_targets(str(tiny_gpt2)) == ["c_attn"]


def test_the_device_seam_decides_in_one_place(monkeypatch):
    from textlora import device

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert device.encoder_attention("auto", cpu) == "eager" and device.encoder_attention("auto", cuda) == "sdpa"
    assert device.encoder_attention("sdpa", cpu) == "sdpa"
    assert device.lm_training_attention(cpu, "bf16") == "eager" and device.lm_training_attention(cpu, "fp32") is None
    assert device.fused_adamw(cuda) and not device.fused_adamw(cpu)
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert device.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert device.resolve_precision("auto", cpu) == "bf16"
    with pytest.raises(Exception, match="fp16 is for CUDA devices"):
        device.resolve_precision("fp16", cpu)
    assert device.onnx_providers()[-1] == "CPUExecutionProvider"
