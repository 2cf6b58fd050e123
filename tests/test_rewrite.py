"""Source-anchored rewriting (textlora.augment.rewrite) on a tiny GPT-2: which words are masked, the
rows' own words kept around the fills, provenance, the two filters, and the pipeline's mode."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
import yaml

from textlora.augment.rewrite import DomainWords, RewriteConfig, rewrite
from textlora.cli import main

from .conftest import CLASS_WORDS

SOURCE_ONLY = ["today", "week"]  # filler that only the source rows use
TARGET_ONLY = ["new", "says"]  # filler that only the target texts use
SHARED = ["the", "a", "of", "in", "on", "and", "to"]


def _rows(n_per_class: int, marks: list[str], seed: int, labelled: bool = True) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for name, words in CLASS_WORDS.items():
        for _ in range(n_per_class):
            toks = rng.sample(words[:6], 3) + rng.sample(SHARED, 3) + rng.sample(marks, 1)
            rng.shuffle(toks)
            if name == "sports" and labelled:
                toks.append("cup")  # a source-only word that tells the class: never masked
            rows.append({"text": " ".join(toks), "label": name})
    rng.shuffle(rows)
    df = pd.DataFrame(rows)
    return df if labelled else df.drop(columns=["label"])


@pytest.fixture
def domains(tmp_path):
    _rows(20, SOURCE_ONLY, seed=1).to_csv(tmp_path / "source.csv", index=False)
    target = _rows(20, TARGET_ONLY, seed=2, labelled=False)
    target.insert(0, "id", [f"t{i}" for i in range(len(target))])
    target.to_csv(tmp_path / "target.csv", index=False)
    return tmp_path


def test_masks_source_words_that_do_not_tell_the_classes_apart(domains):
    source = pd.read_csv(domains / "source.csv")
    target = pd.read_csv(domains / "target.csv")
    words = DomainWords(source["text"].tolist(), target["text"].tolist(), 1, source["label"].tolist())
    assert words.source_share("today") > 0.9 and words.source_share("says") < 0.1 and 0.3 < words.source_share("the") < 0.7
    assert words.label_info("cup") > 0.5 and words.label_info("today") < 0.2
    cfg = RewriteConfig(source="-", target="-", output="-", ngram=1, min_count=3)
    text = "the goal today cup a week match"
    masked = {text[a:b] for a, b in words.spans(text, cfg)}
    assert masked == {"today", "week"}  # not "cup" (it tells sports apart), not the shared words
    assert len(words.spans(text, RewriteConfig(source="-", target="-", output="-", ngram=1, max_spans=1))) == 1


def test_rewritten_rows_keep_their_own_words_label_and_provenance(domains, tiny_gpt2, capsys):
    cfg = RewriteConfig(
        model=str(tiny_gpt2), source=str(domains / "source.csv"), target=str(domains / "target.csv"), output=str(domains / "rows.csv"),
        rows_per_class=5, ngram=1, label_filter=False, domain_filter=False, batch_size=4, precision="fp32",
    )  # fmt: skip
    rewrite(cfg, label_names=list(CLASS_WORDS))
    rows = pd.read_csv(domains / "rows.csv")
    source = pd.read_csv(domains / "source.csv")
    summary = json.loads((domains / "rows.rewrite.json").read_text())
    assert summary["rows"] == 15 and summary["rows_written"] == len(rows) == summary["changed"]
    for _, r in rows.iterrows():
        assert r["label"] == source["label"][r["source_row"]] and r["original"] == source["text"][r["source_row"]]
        spans = json.loads(r["spans"])
        assert spans and all(s["masked"] in SOURCE_ONLY for s in spans)
        rebuilt = r["original"]
        for s in spans:  # the row is its source row with each masked word replaced by its fill, nothing else
            head, _, rest = rebuilt.partition(s["masked"])
            rebuilt = head + "\0" + s["fill"] + "\0" + rest
        assert " ".join(rebuilt.replace("\0", " ").split()) == r["text"]
    capsys.readouterr()
    rewrite(cfg, label_names=list(CLASS_WORDS), reuse=True)
    assert "reusing" in capsys.readouterr().out  # same settings and inputs: not written again


def test_the_filters_keep_rows_that_keep_their_label_and_read_as_target(domains, monkeypatch):
    def fill(cfg, chosen):
        # per chosen row: its words with the source filler swapped for target filler (kept), left as it
        # was but for one word (a source text still: dropped), or its class words replaced by another
        # class's (its label lost: dropped)
        out = []
        for k, (i, name, text, _) in enumerate(chosen):
            new = text.replace("today", "new").replace("week", "says")
            if k % 3 == 1:
                new = text.replace(" the ", " a ") if " the " in text else text + " of"
            elif k % 3 == 2:
                other = [w for n, ws in CLASS_WORDS.items() if n != name for w in ws[:6]]
                new = " ".join(other[j % len(other)] if w in CLASS_WORDS[name] or w == "cup" else w for j, w in enumerate(new.split()))
            out.append({"text": new, "label": name, "source_row": i, "original": text, "spans": "[]", "model": "m", "seed": 0, "kind": k % 3})
        return out

    monkeypatch.setattr("textlora.augment.rewrite._fill", fill)
    cfg = RewriteConfig(source=str(domains / "source.csv"), target=str(domains / "target.csv"), output=str(domains / "rows.csv"), rows_per_class=9, ngram=1)
    rewrite(cfg, label_names=list(CLASS_WORDS))
    every = pd.read_csv(domains / "rows.all.csv")
    assert every.loc[every["kind"] == 0, "kept"].all() and not every.loc[every["kind"] > 0, "kept"].any()
    assert (every.loc[every["kind"] == 1, "domain_probe"] == "source").all() and (
        every.loc[every["kind"] == 2, "label_probe"] != every.loc[every["kind"] == 2, "label"]
    ).all()
    kept = pd.read_csv(domains / "rows.csv")
    assert len(kept) == (every["kind"] == 0).sum() == json.loads((domains / "rows.rewrite.json").read_text())["rows_written"]


def test_pipeline_rewrite_mode_trains_on_rewritten_source_rows(domains, tiny_bert, tiny_gpt2, capsys):
    from .test_pipeline import pipeline_config

    pd.read_csv(domains / "source.csv").iloc[:9].to_csv(domains / "target_test.csv", index=False)  # an eval set (labels by name)
    cfg = pipeline_config(
        domains, tiny_bert, tiny_gpt2, synthetic={"prompts": "rewrite"}, rewrite={"ngram": 1, "rows_per_class": 6, "domain_filter": False, "precision": "fp32"}
    )
    path = domains / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["pipeline", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "source rows rewritten" in out and "== filter: " in out
    rows = pd.read_csv(domains / "out" / "synthetic" / "rows.csv")
    assert {"source_row", "spans", "original"} <= set(rows.columns) and len(rows) > 0
    split = pd.read_csv(domains / "out" / "source_train_split.csv")
    assert set(rows["original"]) <= set(split["text"])  # rewritten from the training split, never from dev rows


def test_a_bad_rewrite_setting_is_one_line(domains, tiny_bert, tiny_gpt2, capsys):
    from .conftest import fails
    from .test_pipeline import pipeline_config

    cfg = pipeline_config(domains, tiny_bert, tiny_gpt2, synthetic={"prompts": "rewrite"}, rewrite={"max_label_info": 2})
    path = domains / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    fails(capsys, ["pipeline", "--config", str(path)], "rewrite.max_label_info")
    cfg["rewrite"] = {"source": "x.csv"}
    path.write_text(yaml.safe_dump(cfg))
    fails(capsys, ["pipeline", "--config", str(path)], "rewrite.source: set by the pipeline")


def _fills(target_like: bool):
    """A stand-in for the LM: every row rewritten into target filler, or left a source text."""

    def fill(cfg, chosen):
        swap = {"today": "new", "week": "says"} if target_like else {"the": "a"}
        return [
            {"text": " ".join(swap.get(w, w) for w in text.split()) + ("" if target_like else " of"), "label": name, "source_row": i, "original": text, "spans": "[]", "model": cfg.model, "seed": 0}
            for i, name, text, _ in chosen
        ]

    return fill


def test_the_trial_stops_rewriting_when_its_filters_would_keep_too_few_rows(domains, tiny_bert, tiny_gpt2, capsys, monkeypatch):
    from .test_pipeline import pipeline_config

    pd.read_csv(domains / "source.csv").iloc[:9].to_csv(domains / "target_test.csv", index=False)
    cfg = pipeline_config(domains, tiny_bert, tiny_gpt2, synthetic={"prompts": "rewrite", "trial_rows": 30}, rewrite={"ngram": 1, "rows_per_class": 20})
    path = domains / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr("textlora.augment.rewrite._fill", _fills(target_like=False))  # every rewrite still reads as a source text
    assert main(["pipeline", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "== trial: " in out and "30 source rows rewritten by the base LM, 0 kept (~0 of the full run's 60) -> stop" in out
    for stage in ("adapt", "generate", "filter"):
        assert f"== {stage}: 0 s (skipped: the trial: 0 of 30 rewrites" in out
    method = json.loads((domains / "out" / "pipeline.json").read_text())["methods"][0]
    assert method["ran"] is False and "fewer than the 50 rows the label check needs" in method["evidence"]

    monkeypatch.setattr("textlora.augment.rewrite._fill", _fills(target_like=True))  # target-like rewrites: the method runs
    assert main(["pipeline", "--config", str(path), "--output_dir", str(domains / "out2")]) == 0
    out = capsys.readouterr().out
    assert "-> go on" in out and "source rows rewritten, " in out.split("== generate: ")[1].splitlines()[0]
