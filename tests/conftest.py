"""Tiny models built from config, an in-memory tokenizer, and small labelled files: no hub, seconds each."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

CLASS_WORDS = {
    "sports": ["goal", "match", "team", "coach", "season", "player", "league", "cup"],
    "business": ["stock", "market", "price", "profit", "bank", "shares", "trade", "deal"],
    "science": ["space", "nasa", "software", "computer", "research", "internet", "chip", "genome"],
}
FILLER = ["the", "a", "of", "in", "on", "and", "to", "new", "says", "after", "week", "today"]


def make_vocab() -> list[str]:
    words = sorted({w for ws in CLASS_WORDS.values() for w in ws} | set(FILLER))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-"]


def make_tokenizer(folder: Path):
    """A BERT WordPiece tokenizer over a small vocabulary built in memory, saved to ``folder``."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(make_vocab())}, do_lower_case=True)
    tok.save_pretrained(str(folder))
    return tok


def make_texts(n_per_class: int, seed: int = 0, names=None) -> pd.DataFrame:
    """Separable texts: each holds 3 words of its class among filler words."""
    rng = random.Random(seed)
    rows = []
    for label, (name, words) in enumerate(CLASS_WORDS.items()):
        for _ in range(n_per_class):
            toks = rng.sample(words, 3) + rng.sample(FILLER, rng.randint(2, 8))
            rng.shuffle(toks)
            rows.append({"text": " ".join(toks), "label": name if names == "str" else label})
    rng.shuffle(rows)
    return pd.DataFrame(rows)


def pretrain_tiny_bert(folder: Path, steps: int = 150):
    """A 2-layer, 16-wide BERT pre-trained for a moment on the synthetic topics, saved as a bare encoder.

    A randomly initialised encoder this small gives LoRA nothing to adapt; a brief full training
    gives it features, as a real pre-trained model has. Only the encoder (``BertModel``) is saved,
    so the classification head starts fresh, as it does on a real base model.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tok = make_tokenizer(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, max_position_embeddings=64, num_labels=3
    )
    model = BertForSequenceClassification(config)
    df = make_texts(40, seed=100)
    enc = tok(df["text"].tolist(), padding=True, return_tensors="pt")
    y = torch.tensor(df["label"].to_numpy())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(**enc).logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.bert.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny pre-trained BERT encoder folder with its tokenizer (see ``pretrain_tiny_bert``)."""
    return pretrain_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def data_dir(tmp_path) -> Path:
    make_texts(40, seed=1).to_csv(tmp_path / "train.csv", index=False)
    make_texts(10, seed=2).to_csv(tmp_path / "test.csv", index=False)
    unl = make_texts(8, seed=3).drop(columns=["label"])
    unl.insert(0, "id", range(100, 100 + len(unl)))
    unl.to_csv(tmp_path / "unlabelled.csv", index=False)
    return tmp_path


def write_config(path: Path, model_dir: Path, train_file: Path, out: Path, **sections) -> Path:
    """A small training config for the tiny model; ``sections`` override whole keys (train={...})."""
    import yaml

    cfg = {
        "output_dir": str(out),
        "seed": 7,
        "model": {"name": str(model_dir), "max_length": 32},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"], "bias": "none"},
        "data": {"train": str(train_file), "val_fraction": 0.25, "label_names": ["sports", "business", "science"]},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 0.01, "precision": "fp32", "logging_steps": 2, "eval_batch_size": 16},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def make_tiny_gpt2(folder: Path) -> Path:
    """A 2-layer, 32-wide GPT-2 with a word-level tokenizer built in memory over the test vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[EOS]", *sorted({w for ws in CLASS_WORDS.values() for w in ws} | set(FILLER))]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=128, n_embd=32, n_layer=2, n_head=2, eos_token_id=2, bos_token_id=2, pad_token_id=0))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_bert) -> Path:
    """One tiny run trained through the CLI (4 epochs) beside its data files, shared by the tests that need a model.

    Layout: train.csv, test.csv (labelled), unlabelled.csv (id, text), c.yaml, run/.
    """
    from textlora.cli import main

    root = tmp_path_factory.mktemp("trained")
    make_texts(40, seed=1).to_csv(root / "train.csv", index=False)
    make_texts(10, seed=2).to_csv(root / "test.csv", index=False)
    unl = make_texts(8, seed=3).drop(columns=["label"])
    unl.insert(0, "id", range(100, 100 + len(unl)))
    unl.to_csv(root / "unlabelled.csv", index=False)
    cfg = write_config(root / "c.yaml", tiny_bert, root / "train.csv", root / "run", train={"epochs": 4})
    assert main(["train", "--config", str(cfg)]) == 0
    return root


def fails(capsys, argv: list[str], message: str) -> str:
    """Run the CLI and assert: exit code 2, ``message`` in one line on stderr, no traceback."""
    from textlora.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def roberta_base_shaped(num_labels: int = 4, vocab_size: int = 50265):
    """roberta-base's architecture from its published config, random weights (no download)."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    cfg = RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        num_labels=num_labels,
    )
    return RobertaForSequenceClassification(cfg)


@pytest.fixture
def task(tmp_path):
    """A pipeline task: labelled source rows (string labels), unlabelled target texts (id, text) and a labelled target sample."""
    make_texts(30, seed=1, names="str").to_csv(tmp_path / "source.csv", index=False)
    target = make_texts(12, seed=3, names="str")
    target[["text", "label"]].iloc[:9].to_csv(tmp_path / "target_test.csv", index=False)
    unl = target.drop(columns=["label"])
    unl.insert(0, "id", [f"t{i}" for i in range(len(unl))])
    unl.to_csv(tmp_path / "target.csv", index=False)
    return tmp_path
