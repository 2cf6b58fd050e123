import pytest

from textlora.config import Config, load_config, parse_overrides
from textlora.errors import UserError


def test_defaults_are_valid():
    cfg = Config()
    assert cfg.budget.max_trainable_params == 1_000_000
    assert cfg.model.name == "minilm"


def test_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\nlora:\n  r: 8\n")
    cfg = load_config(path, ["--train.epochs", "5", "--lora.target_modules=[query,value]", "--train.learning_rate", "1e-4"])
    assert cfg.train.epochs == 5.0
    assert cfg.lora.r == 8
    assert cfg.lora.target_modules == ["query", "value"]
    assert cfg.train.learning_rate == pytest.approx(1e-4)


def test_every_notebook_knob_is_expressible(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(
        """
model: {name: roberta-base}
lora: {r: 4, alpha: 64, dropout: 0.1, target_modules: [query, key, value], bias: all}
budget: {max_trainable_params: 1000000}
data: {min_words: 3, max_words: 200, val_fraction: 0.1}
train: {epochs: 10, batch_size: 64, eval_batch_size: 64, learning_rate: 2.0e-5, weight_decay: 0.01,
        warmup_ratio: 0.1, optimizer: adamw, grad_accum: 2, gradient_checkpointing: true, precision: fp32,
        logging_steps: 10, eval_strategy: steps, eval_steps: 100, save_total_limit: 3, metric_for_best: macro_f1,
        early_stopping_patience: 2, num_workers: 2}
seed: 1
"""
    )
    cfg = load_config(path)
    assert cfg.lora.bias == "all" and cfg.train.gradient_checkpointing and cfg.train.metric_for_best == "macro_f1"
    assert not hasattr(cfg.train, "num_workers")  # a retired setting: old configs still load, with a note
    assert "train.num_workers is ignored" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epochz: 3\n", "unknown key 'train.epochz'"),
        ("trian:\n  epochs: 3\n", "unknown key 'trian'"),
        ("train:\n  epochs: many\n", "train.epochs: expected a number, found 'many'"),
        ("lora:\n  r: 2.5\n", "lora.r: expected an integer, found 2.5"),
        ("lora:\n  bias: some\n", "lora.bias: expected none, all or lora_only, found 'some'"),
        ("model:\n  truncation: middle\n", "model.truncation: expected head or head_tail, found 'middle'"),
        ("train: [1, 2]\n", "train: expected a mapping"),
        ("train:\n  epochs: [3\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(path)


def test_bad_override_names_the_key():
    with pytest.raises(UserError, match="unknown key 'train.nope'"):
        load_config(None, ["--train.nope", "1"])
    with pytest.raises(UserError, match="missing a value"):
        parse_overrides(["--train.epochs"])
