"""Top-k LoRA with a cached frozen prefix: the same training as without the cache, an ordinary peft
adapter, a cache that is rebuilt when it does not match, and a kill while caching or training resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from textlora.cli import main

from .conftest import fails, write_config

TOP = dict(
    lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"], "bias": "all", "layers": 1}, model={"max_length": 32, "dropout": 0.0}
)


def _cfg(tmp_path, tiny_bert, data_dir, name, **train):
    return write_config(tmp_path / f"{name}.yaml", tiny_bert, data_dir / "train.csv", tmp_path / name, train={"epochs": 2, **train}, **TOP)


def _metrics(tmp_path, name) -> dict:
    return json.loads((tmp_path / name / "metrics.json").read_text())


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTLORA_CACHE", str(tmp_path / "cache"))


def test_cached_and_uncached_training_agree(tmp_path, tiny_bert, data_dir, capsys):
    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "plain", prefix_cache="off"))]) == 0
    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "cached"))]) == 0
    out = capsys.readouterr().out
    assert "prefix cache: the output of layers 0-0 for" in out and "computed" in out
    plain, cached = _metrics(tmp_path, "plain"), _metrics(tmp_path, "cached")
    assert cached["prefix_cache"]["used"] and cached["prefix_cache"]["where"] == "memory" and not plain["prefix_cache"]["used"]
    assert [e["loss"] for e in cached["train_log"]] == pytest.approx([e["loss"] for e in plain["train_log"]], rel=1e-4)
    assert [h["loss"] for h in cached["history"]] == pytest.approx([h["loss"] for h in plain["history"]], rel=1e-4)
    from textlora.prediction import load

    texts = __import__("pandas").read_csv(data_dir / "test.csv")["text"].tolist()
    a, b = load(str(tmp_path / "plain"), precision="fp32").logits(texts), load(str(tmp_path / "cached"), precision="fp32").logits(texts)
    assert np.allclose(a, b, atol=1e-4)
    # only the top layer and the head train: the lower layer's biases stay frozen, and the budget counts what trains
    assert cached["trainable_params"]["bias"] == plain["trainable_params"]["bias"] > 0
    saved = yaml.safe_load((tmp_path / "cached" / "config.yaml").read_text())
    assert saved["lora"]["layers"] == [1]  # top 1 of 2, as indices
    # a second seed (another split of the same rows, in another order) reads the cache back, and trains as without it
    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "seed8")), "--seed", "8"]) == 0
    assert "read back" in capsys.readouterr().out
    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "seed8-plain", prefix_cache="off")), "--seed", "8"]) == 0
    a, b = _metrics(tmp_path, "seed8"), _metrics(tmp_path, "seed8-plain")
    assert [e["loss"] for e in a["train_log"]] == pytest.approx([e["loss"] for e in b["train_log"]], rel=1e-4)
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], rel=1e-4)


def test_a_run_with_lora_layers_loads_in_plain_peft(tmp_path, tiny_bert, data_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "run"))]) == 0
    run = tmp_path / "run"
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert adapter["layers_to_transform"] == [1] and adapter["layers_pattern"] == "layer"
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3)
    model = PeftModel.from_pretrained(base, str(run)).eval()
    tok = AutoTokenizer.from_pretrained(str(run))
    texts = ["the goal in the match", "stock market profit today"]
    with torch.no_grad():
        theirs = model(**tok(texts, return_tensors="pt", padding=True)).logits.numpy()
    from textlora.prediction import load

    assert np.allclose(theirs, load(str(run), precision="fp32").logits(texts), atol=1e-4)


def test_a_cache_that_does_not_match_is_rebuilt(tmp_path, tiny_bert, data_dir, capsys):
    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "a"))]) == 0
    (states,) = (tmp_path / "cache" / "prefix").glob("*/states.bin")
    with open(states, "r+b") as f:
        f.truncate(states.stat().st_size // 2)
    capsys.readouterr()
    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "b"))]) == 0
    out = capsys.readouterr().out
    assert "(truncated); rebuilding it" in out
    assert [e["loss"] for e in _metrics(tmp_path, "b")["train_log"]] == pytest.approx([e["loss"] for e in _metrics(tmp_path, "a")["train_log"]], rel=1e-5)


def _train(cfg, *extra, fault=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TEXTLORA_FAULT", None)
    if fault:
        env["TEXTLORA_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "textlora", "train", "--config", str(cfg), *extra], env=env, capture_output=True, text=True, timeout=180)


def test_killed_while_caching_or_training_resumes(tmp_path, tiny_bert, data_dir):
    steps = {"max_steps": 12, "eval_strategy": "steps", "eval_steps": 4, "logging_steps": 1}
    ref = _cfg(tmp_path, tiny_bert, data_dir, "ref", **steps)
    assert main(["train", "--config", str(ref)]) == 0
    for folder in (tmp_path / "cache" / "prefix").glob("*/"):  # start without the cache
        __import__("shutil").rmtree(folder)
    cfg = _cfg(tmp_path, tiny_bert, data_dir, "crash", **steps)
    r = _train(cfg, fault="prefix:2")
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert not list((tmp_path / "cache" / "prefix").glob("[!.]*/"))  # nothing half-written is taken for a cache
    r = _train(cfg, "--overwrite", fault="step:6")
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert "computed" in r.stdout
    r = _train(cfg, "--resume", "last")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "read back" in r.stdout and "resuming at step 4" in r.stdout
    a, b = _metrics(tmp_path, "ref"), _metrics(tmp_path, "crash")
    assert [e["loss"] for e in b["train_log"]] == pytest.approx([e["loss"] for e in a["train_log"]], rel=1e-5)


@pytest.mark.parametrize(
    "layers, message",
    [
        (3, "lora.layers: expected a number of top layers in 1..2 (the model has 2), found 3"),
        ([5], "lora.layers: expected layer indices in 0..1, found [5]"),
        ([], "lora.layers: expected a number of top layers >= 1, or a non-empty list"),
    ],
)
def test_lora_layers_out_of_range_is_one_line(tmp_path, tiny_bert, data_dir, capsys, layers, message):
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "run", lora={**TOP["lora"], "layers": layers})
    fails(capsys, ["train", "--config", str(cfg)], message)


@pytest.mark.parametrize("bias", ["all", "lora_only", "none"])
def test_the_planner_counts_top_k_as_peft_trains_it(tiny_bert, bias):
    from transformers import AutoModelForSequenceClassification

    from textlora.budget import count_plan
    from textlora.config import LoraSettings
    from textlora.models import apply_lora, count_trainable

    def base():
        return AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3)

    lora, head, nb = count_plan(base(), ["query", "value", "dense"], 4, bias, layers=[1])
    b = count_trainable(apply_lora(base(), LoraSettings(r=4, alpha=8, target_modules=["query", "value", "dense"], bias=bias, layers=1)))
    assert (b.lora, b.head, b.bias) == (lora, head, nb)
    full = count_plan(base(), ["query", "value", "dense"], 4, bias)
    assert lora < full[0] and (nb < full[2] or bias == "none")


@pytest.mark.parametrize("aside", [True, False])
def test_rows_near_a_tie_are_scored_without_the_bf16_cache(tiny_bert, tmp_path, aside):
    """The cache stores bf16 states; the fp32 pass over rows near a tie must not read them, or the
    training loop's accuracy and ``evaluate``'s differ (measured: 0.9093 against 0.9084 on one run)."""
    import copy

    from transformers import AutoModelForSequenceClassification

    from textlora.config import LoraSettings
    from textlora.models import apply_lora, load_tokenizer
    from textlora.prefix import attached, prefix_cache
    from textlora.runtime import encode_texts, predict_logits

    from .conftest import make_texts

    torch.manual_seed(3)
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    with torch.no_grad():  # large, close logits: rows near a tie are the rule (tests/test_seams_bugs.py)
        base.classifier.weight.mul_(0.05)
        base.classifier.bias.fill_(5.0)
    model = apply_lora(base, LoraSettings(r=2, alpha=4, dropout=0.0, target_modules=["query", "value"], bias="none", layers=1)).eval()
    tok = load_tokenizer(str(tiny_bert))
    enc = encode_texts(tok, make_texts(100, seed=5)["text"].tolist(), 32)
    exact = predict_logits(copy.deepcopy(model).merge_and_unload(), enc, tok.pad_token_id, precision="fp32").argmax(1)
    cache = prefix_cache(model, enc, 1, precision="bf16", device=torch.device("cpu"), root=tmp_path / "c", max_memory_gb=1)
    cache.data += (3.0 * torch.randn(cache.data.shape)).to(cache.data.dtype)  # stored states off by more than bf16's rounding, to show which pass reads them
    with attached(model, cache, 1) as att:
        got = predict_logits(model, enc, tok.pad_token_id, precision="bf16", exact=att.aside if aside else None).argmax(1)
    same = np.array_equal(got, exact)
    assert same if aside else not same  # without setting the cache aside, the fp32 pass still reads the stored states


def test_a_new_text_set_computes_only_its_new_texts(tmp_path, tiny_bert, capsys):
    from transformers import AutoModel, AutoTokenizer

    from textlora.prefix import prefix_cache

    from .conftest import make_texts

    model, tok = AutoModel.from_pretrained(str(tiny_bert)), AutoTokenizer.from_pretrained(str(tiny_bert))
    texts = make_texts(10, seed=5)["text"].tolist()
    enc = [tok(t)["input_ids"] for t in texts]
    first, second = enc[:20], enc[10:]  # 10 texts in both

    def cache(encoded, root):
        return prefix_cache(model, encoded, 1, precision="fp32", device="cpu", root=root, max_memory_gb=1.0, batch_size=4)

    cache(first, tmp_path / "shared")
    capsys.readouterr()
    grown = cache(second, tmp_path / "shared")
    distinct_second = len({tuple(e) for e in second})
    shared = len({tuple(e) for e in first} & {tuple(e) for e in second})
    assert f"{shared:,} of {distinct_second:,} texts read from earlier caches of the same model; computing {distinct_second - shared:,}" in capsys.readouterr().out
    fresh = cache(second, tmp_path / "fresh")  # the same text set computed from nothing
    assert json.loads((grown.path / "manifest.json").read_text())["reused"] == shared
    ids = torch.tensor([e + [0] * (40 - len(e)) for e in second])
    mask = (torch.arange(40)[None, :] < torch.tensor([len(e) for e in second])[:, None]).long()
    assert torch.allclose(grown.states(ids, mask), fresh.states(ids, mask), atol=1e-5)


def test_evaluate_and_predict_score_the_texts_training_cached_through_the_top_layers(tmp_path, tiny_bert, data_dir, monkeypatch):
    """A run trained with ``lora.layers`` scores the texts its training cached (its rows, dev split and
    eval sets) from the cache, any other text through the whole model, and gives the whole model's answers."""
    import pandas as pd

    from textlora import prefix
    from textlora.prediction import load

    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "run"))]) == 0
    seen = pd.read_csv(data_dir / "train.csv")["text"].tolist()[:12]
    new = [f"{t} and something never seen before" for t in pd.read_csv(data_dir / "test.csv")["text"].tolist()[:9]]
    texts = [t for pair in zip(seen, new) for t in pair] + seen[9:]  # mixed, so the two parts must be put back in order
    whole = load(str(tmp_path / "run"), precision="fp32").logits(texts)
    clf = load(str(tmp_path / "run"), precision="fp32", cached=True)
    assert np.allclose(clf.logits(texts), whole, atol=1e-4)
    assert clf.from_cache == 12  # the 12 training texts; the 9 new ones ran through every layer
    # the cached pass really reads the stored states: states off by much change the answers
    real = prefix.CachedStates.states
    monkeypatch.setattr(prefix.CachedStates, "states", lambda self, ids, mask: real(self, ids, mask) + 5.0)
    off = load(str(tmp_path / "run"), precision="fp32", cached=True).logits(texts)
    hit = np.isin(np.arange(len(texts)), [i for i, t in enumerate(texts) if t in seen])
    assert not np.allclose(off[hit], whole[hit], atol=1e-2) and np.allclose(off[~hit], whole[~hit], atol=1e-4)
    # a run trained with `train.prefix_cache: off` reads no cache either
    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "plain", prefix_cache="off"))]) == 0
    clf = load(str(tmp_path / "plain"), precision="fp32", cached=True)
    clf.logits(texts)
    assert clf.from_cache == 0


def test_target_texts_join_the_cache_without_changing_training(tmp_path, tiny_bert, data_dir, capsys):
    """With ``lora.layers`` and ``data.target_texts`` (no objective), the target texts' states are cached
    with the rows', so predicting them later reads them back; training is the same, and so is the
    pipeline's stage key. Above ``train.prefix_cache_memory_gb`` they are left out, with a line."""
    import pandas as pd

    from textlora.config import load_config
    from textlora.prediction import load
    from textlora.stages.classifier import train_key

    from .conftest import make_texts

    target = make_texts(20, seed=11).drop(columns=["label"])
    target["text"] = target["text"] + " in the target domain"
    target.to_csv(tmp_path / "target.csv", index=False)
    plain = _cfg(tmp_path, tiny_bert, data_dir, "plain")
    with_target = write_config(
        tmp_path / "t.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "t", train={"epochs": 2}, **{**TOP, "data": {
            "train": str(data_dir / "train.csv"), "val_fraction": 0.25, "label_names": ["sports", "business", "science"], "target_texts": str(tmp_path / "target.csv")}},
    )
    assert main(["train", "--config", str(plain)]) == 0 and main(["train", "--config", str(with_target)]) == 0
    a, b = _metrics(tmp_path, "plain"), _metrics(tmp_path, "t")
    assert b["prefix_cache"]["texts"] == a["prefix_cache"]["texts"] + len(set(target["text"]))
    assert [e["loss"] for e in b["train_log"]] == pytest.approx([e["loss"] for e in a["train_log"]], rel=1e-5)
    texts = pd.read_csv(tmp_path / "target.csv")["text"].tolist()
    clf = load(str(tmp_path / "t"), precision="fp32", cached=True)
    assert np.allclose(clf.logits(texts), load(str(tmp_path / "t"), precision="fp32").logits(texts), atol=1e-4) and clf.from_cache == len(texts)
    assert train_key(load_config(str(with_target))) == train_key(load_config(str(plain)))  # the stage is not redone for texts it only caches
    capsys.readouterr()
    assert main(["train", "--config", str(with_target), "--output_dir", str(tmp_path / "small"), "--train.prefix_cache_memory_gb", "0.000001"]) == 0
    assert f"prefix cache: the {len(set(target['text'])):,} target texts left out" in capsys.readouterr().out
    assert _metrics(tmp_path, "small")["prefix_cache"]["texts"] == a["prefix_cache"]["texts"]


def test_the_labelling_ranking_reads_the_cache_when_it_holds_every_text(tmp_path, tiny_bert, data_dir, monkeypatch):
    import pandas as pd

    from textlora import prefix
    from textlora.active import probabilities_and_embeddings

    assert main(["train", "--config", str(_cfg(tmp_path, tiny_bert, data_dir, "run", precision="auto"))]) == 0  # the precision inference takes
    seen = pd.read_csv(data_dir / "train.csv")["text"].tolist()[:10]
    probs, pooled = probabilities_and_embeddings(str(tmp_path / "run"), seen)
    monkeypatch.setenv("TEXTLORA_CACHE", str(tmp_path / "empty"))
    whole, whole_pooled = probabilities_and_embeddings(str(tmp_path / "run"), seen)
    assert np.allclose(probs, whole, atol=2e-2) and np.allclose(pooled, whole_pooled, atol=5e-2)
    monkeypatch.setenv("TEXTLORA_CACHE", str(tmp_path / "cache"))
    real = prefix.CachedStates.states
    monkeypatch.setattr(prefix.CachedStates, "states", lambda self, ids, mask: real(self, ids, mask) + 5.0)
    shifted, _ = probabilities_and_embeddings(str(tmp_path / "run"), seen)
    assert not np.allclose(shifted, probs, atol=1e-2)  # the pass read the cached states


def test_the_cache_folder_keeps_under_its_size_limit_dropping_the_least_recently_used(tmp_path, tiny_bert, monkeypatch, capsys):
    """Caches pile up across runs (one a text set and model): a new one drops the least recently used
    others until the folder is under TEXTLORA_PREFIX_CACHE_GB; one read back counts as used, one in use by
    another process (its lock held) and one used in the last minute are never dropped."""
    from transformers import AutoModel, AutoTokenizer

    from textlora.errors import UserError
    from textlora.fsutil import hold_lock
    from textlora.prefix import MANIFEST, prefix_cache

    from .conftest import make_texts

    model, tok = AutoModel.from_pretrained(str(tiny_bert)), AutoTokenizer.from_pretrained(str(tiny_bert))
    enc = [tok(t)["input_ids"] for t in make_texts(10, seed=5)["text"].tolist()]
    root = tmp_path / "prefix"

    def cache(part, where=root):
        return prefix_cache(model, part, 1, precision="fp32", device="cpu", root=where, max_memory_gb=1.0, batch_size=4)

    def size(c):
        return sum(f.stat().st_size for f in c.path.iterdir())

    def age(c, seconds):  # as if last used this much earlier
        t = os.path.getmtime(c.path / MANIFEST) - seconds
        os.utime(c.path / MANIFEST, (t, t))

    a, b, c = cache(enc[:5]), cache(enc[5:10]), cache(enc[10:15])
    for k, x in enumerate((a, b, c)):
        age(x, 3600 * (3 - k))  # a the oldest, then b, then c
    cache(enc[:5])  # a read back: now the most recently used
    for x in (a, b, c):
        age(x, 120)  # out of the last minute's grace, the order kept: b, c, a
    d_size = size(cache(enc[15:20], tmp_path / "probe"))
    c_size = size(c)
    limit = size(a) + size(b) + d_size + c_size / 2  # room for all but c
    monkeypatch.setenv("TEXTLORA_PREFIX_CACHE_GB", repr(limit / 2**30))
    capsys.readouterr()
    with hold_lock(root / f".{b.path.name}.lock", what="b"):  # b in use elsewhere: kept though the least recently used
        d = cache(enc[15:20])
    out = capsys.readouterr().out
    assert {p.name for p in root.iterdir() if p.is_dir()} == {a.path.name, b.path.name, d.path.name}, out
    assert f"prefix cache: removed 1 least recently used cache ({c_size / 2**20:.2f} MB) to stay under TEXTLORA_PREFIX_CACHE_GB" in out
    # at a limit of 0 every cache goes but the new one and those used in the last minute (another process may be about to read them)
    monkeypatch.setenv("TEXTLORA_PREFIX_CACHE_GB", "0")
    e = cache([enc[0][:-1] + enc[1][1:]])  # a text no cache holds: nothing copied, nothing touched
    assert {p.name for p in root.iterdir() if p.is_dir()} == {d.path.name, e.path.name}
    assert not (root / f".{a.path.name}.lock").exists()
    # a limit that is not a number is one line naming it
    monkeypatch.setenv("TEXTLORA_PREFIX_CACHE_GB", "lots")
    with pytest.raises(UserError, match="TEXTLORA_PREFIX_CACHE_GB: expected a number of GB >= 0, found 'lots'"):
        cache(enc[3:8])
