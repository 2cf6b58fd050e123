"""The target-domain features: eval sets in every run, evaluate on several files, pseudo-labels
(threshold, balance, provenance, never in dev), and the adapt/generate caches."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from textlora.cli import main

from .conftest import fails, make_texts, write_config


def test_eval_sets_reach_metrics_log_card_and_report(tmp_path, tiny_bert, data_dir, capsys):
    target = tmp_path / "target.csv"
    make_texts(6, seed=9, names="str").to_csv(target, index=False)  # names, while train.csv has indices: both work
    cfg = write_config(
        tmp_path / "c.yaml",
        tiny_bert,
        data_dir / "train.csv",
        tmp_path / "run",
        data={"eval_sets": {"target": str(target)}},
        train={"epochs": 2, "metric_for_best": "target.accuracy"},
    )
    assert main(["train", "--config", str(cfg)]) == 0
    log = capsys.readouterr().out
    assert "target accuracy" in log and "(n=18)" in log
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(m["history"]) == 2 and all(h["eval_sets"]["target"]["n"] == 18 for h in m["history"])
    best = min(m["history"], key=lambda h: (-h["eval_sets"]["target"]["accuracy"], h["eval_sets"]["target"]["loss"]))  # a tie: the lower loss
    assert m["best"]["step"] == best["step"] and m["metric_for_best"] == "target.accuracy"
    card = (tmp_path / "run" / "README.md").read_text()
    assert "| target |" in card and f"{m['best']['eval_sets']['target']['accuracy']:.4f}" in card
    assert main(["report", "--model", str(tmp_path / "run")]) == 0
    html = (tmp_path / "run" / "report.html").read_text()
    assert "id='eval-sets'" in html and str(target) in html


def test_eval_set_errors(tmp_path, tiny_bert, data_dir, capsys):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["the team won", "stock fell"], "label": ["sports", "weather"]}).to_csv(bad, index=False)
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "run", data={"eval_sets": {"target": str(bad)}})
    fails(capsys, ["train", "--config", str(cfg)], f"{bad}: row 3: label 'weather' is not a known class")
    assert not (tmp_path / "run").exists()
    cfg = write_config(tmp_path / "c2.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "run", train={"metric_for_best": "target.accuracy"})
    fails(capsys, ["train", "--config", str(cfg)], "train.metric_for_best: expected an eval set named in data.eval_sets")


def test_evaluate_several_files(trained, tmp_path, capsys):
    other = tmp_path / "other.csv"
    make_texts(5, seed=11).to_csv(other, index=False)
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(trained / "run"), "--data", str(trained / "test.csv"), str(other), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"== {other}" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {str(trained / "test.csv"), str(other)} and m[str(other)]["n"] == 15
    assert (out / "confusion_matrix.other.png").is_file() and (out / "confusion_matrix.test.json").is_file()
    one = main(["evaluate", "--model", str(trained / "run"), "--data", str(other)])
    assert one == 0 and "accuracy" in capsys.readouterr().out


def test_select_threshold_cap_and_balance():
    from textlora.pseudolabel import select

    probs = np.array([[0.95, 0.05], [0.6, 0.4], [0.99, 0.01], [0.1, 0.9], [0.97, 0.03], [0.3, 0.7]])
    assert select(probs, 0.9, None, False).tolist() == [0, 2, 3, 4]
    assert select(probs, 0.9, 2, False).tolist() == [2, 3, 4]  # the two most confident class-0 rows
    assert select(probs, 0.9, None, True).tolist() == [2, 3]  # class 1 has one confident row
    assert select(probs, 0.5, None, True).tolist() == [2, 3, 4, 5]


def test_pseudolabel_provenance_report_and_never_in_dev(trained, tmp_path, tiny_bert, capsys):
    run, unl = trained / "run", trained / "unlabelled.csv"
    exclude = tmp_path / "exclude.csv"
    pd.read_csv(unl).head(3).to_csv(exclude, index=False)
    out = tmp_path / "pl.csv"
    assert main(["pseudolabel", "--model", str(run), "--data", str(unl), "--output", str(out), "--min-confidence", "0.0", "--exclude", str(exclude)]) == 0
    df = pd.read_csv(out)
    report = json.loads((tmp_path / "pl.report.json").read_text())
    assert report["texts"] == 24 and report["excluded"] == 3 and len(df) == report["rows_written"] == 21
    assert not set(df["id"]) & set(pd.read_csv(exclude)["id"])
    assert {"text", "label", "label_id", "confidence", "teacher", "source", "id"} <= set(df.columns)
    assert set(df["teacher"]) == {str(run)} and set(df["label"]) <= {"sports", "business", "science"}
    assert sum(report["per_class"].values()) == 21 and report["confidence_all"]["n"] == 21
    # a threshold nobody reaches: every class is reported empty, not silently dropped
    assert main(["pseudolabel", "--model", str(run), "--data", str(unl), "--output", str(tmp_path / "none.csv"), "--min-confidence", "1.0"]) == 0
    assert "warning: class 'sports' got no pseudo-labels" in capsys.readouterr().out
    assert json.loads((tmp_path / "none.report.json").read_text())["classes_with_no_rows"] == ["sports", "business", "science"]
    # the rows train, and never reach the dev split
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, trained / "train.csv", tmp_path / "student", data={"extra_train": [str(out)]}, train={"epochs": 1})
    assert main(["train", "--config", str(cfg)]) == 0
    dev = set(pd.read_csv(tmp_path / "student" / "dev.csv")["text"])
    assert not dev & set(df["text"])
    counts = json.loads((tmp_path / "student" / "metrics.json").read_text())["data"]
    assert counts["extra_rows"] == 21
    # the report of the student shows the pseudo-labels' report, as it shows a filter report
    assert main(["report", "--model", str(tmp_path / "student")]) == 0
    html = (tmp_path / "student" / "report.html").read_text()
    assert "no filter or pseudolabel report found" not in html and "confidence_all" in html


@pytest.mark.parametrize(
    "content, message",
    [("id,text\n", "no rows"), ("id,words\n1,hello\n", "missing text column 'text'")],
)
def test_pseudolabel_bad_input(trained, tmp_path, capsys, content, message):
    bad = tmp_path / "u.csv"
    bad.write_text(content)
    fails(capsys, ["pseudolabel", "--model", str(trained / "run"), "--data", str(bad), "--output", str(tmp_path / "o.csv")], message)
    assert not (tmp_path / "o.csv").exists()


def _gen(tiny_gpt2, prompts, out, *extra):
    argv = ["generate", "--model", str(tiny_gpt2), "--prompts", str(prompts), "--output", str(out), "--rows_per_class", "4", "--batch_size", "4"]
    return main(argv + ["--length_mean", "6", "--length_max", "10", "--precision", "fp32", *extra])


def test_generate_reuse_and_invalidation(tmp_path, tiny_gpt2, monkeypatch, capsys):
    import yaml

    import textlora.augment.generate as gen

    prompts = tmp_path / "p.yaml"
    prompts.write_text(yaml.safe_dump({"classes": {"sports": ["the team"], "business": ["the market"]}}, sort_keys=False))
    out = tmp_path / "g.csv"
    assert _gen(tiny_gpt2, prompts, out) == 0
    calls = []
    real = gen._generate_batch

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(gen, "_generate_batch", counted)
    assert _gen(tiny_gpt2, prompts, out, "--reuse") == 0 and calls == []  # unchanged: reused
    assert "reusing" in capsys.readouterr().out
    assert _gen(tiny_gpt2, prompts, out, "--reuse", "--top_k", "5") == 0 and len(calls) == 2  # a setting changed
    prompts.write_text(yaml.safe_dump({"classes": {"sports": ["a goal"], "business": ["the market"]}}, sort_keys=False))
    assert _gen(tiny_gpt2, prompts, out, "--reuse", "--top_k", "5") == 0 and len(calls) == 4  # an input changed
    assert set(pd.read_csv(out).query("label == 'sports'")["prompt"]) == {"a goal"}
    assert _gen(tiny_gpt2, prompts, out, "--reuse", "--top_k", "5") == 0 and len(calls) == 4
    assert _gen(tiny_gpt2, prompts, out, "--overwrite", "--top_k", "5") == 0 and len(calls) == 6  # --overwrite redoes it
    capsys.readouterr()
    fails(capsys, ["generate", "--model", str(tiny_gpt2), "--prompts", str(prompts), "--output", str(out)], "already exists")


def test_adapt_reuse_exclude_and_invalidation(tmp_path, tiny_gpt2, capsys, monkeypatch):
    texts = tmp_path / "t.csv"
    df = make_texts(12, seed=4).drop(columns=["label"])
    df.to_csv(texts, index=False)
    held = tmp_path / "held.csv"
    df.head(5).to_csv(held, index=False)
    out = tmp_path / "a"
    base = [
        "adapt",
        "--model",
        str(tiny_gpt2),
        "--texts",
        str(texts),
        "--output_dir",
        str(out),
        "--heldout",
        "4",
        "--max_texts",
        "null",
        "--precision",
        "fp32",
        "--lora_targets",
        "[c_attn]",
    ]
    assert main(base + ["--exclude", f"[{held}]"]) == 0
    m = json.loads((out / "adapt_metrics.json").read_text())
    assert m["excluded_texts"] == 5 and m["train_texts"] + m["heldout_texts"] == 36 - 5
    capsys.readouterr()
    assert main(base + ["--exclude", f"[{held}]", "--reuse"]) == 0 and "reusing" in capsys.readouterr().out
    # the same files and folder named by other paths (another checkout, a relative path): still reused
    monkeypatch.chdir(tmp_path)
    relative = [{str(texts): "t.csv", str(out): "a"}.get(a, a) for a in base]
    assert main(relative + ["--exclude", "[held.csv]", "--reuse"]) == 0 and "reusing" in capsys.readouterr().out
    assert main(base + ["--reuse"]) == 0 and "reusing" not in capsys.readouterr().out  # the exclusion changed
    assert json.loads((out / "adapt_metrics.json").read_text())["excluded_texts"] == 0


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn(seed):
    """Macro-F1 follows scikit-learn's rule: the mean over the classes in y_true or y_pred."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    from textlora.metrics import compute_metrics

    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 3, 40)  # class 3 never occurs in y_true
    y_pred = np.where(rng.random(40) < 0.6, y_true, rng.integers(0, 4, 40))
    m = compute_metrics(y_true, y_pred, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0)
    assert [m["per_class"][n]["f1"] for n in "abcd"] == pytest.approx(f.tolist())
    assert [m["per_class"][n]["precision"] for n in "abcd"] == pytest.approx(p.tolist())


DISTINCT = [
    "The central bank raised interest rates by half a point on Tuesday",
    "A late goal sent the home side through to the cup final",
    "Researchers found water ice in craters near the lunar south pole",
    "Oil prices fell after the cartel agreed to pump more crude",
    "The veteran striker signed a two year contract with his old club",
    "A new chip design doubles battery life in phones, its maker says",
    "Shares of the retailer jumped after holiday sales beat forecasts",
    "The marathon record fell by eleven seconds in Berlin this morning",
    "Astronomers spotted a comet that will pass Earth next spring",
    "The airline cut two thousand jobs as fuel costs kept rising",
    "Rain delayed the tennis semifinal for three hours",
    "A software flaw let hackers read private messages for months",
]
TEMPLATE = [
    f"{c}'s Government Announces Plans to Build New {t} Across the Country"
    for c, t in [("Kenya", "Schools"), ("Peru", "Roads"), ("Laos", "Hospitals"), ("Chad", "Ports"), ("Fiji", "Bridges"), ("Oman", "Dams")]
]


def _tfidf_components(texts, threshold):
    """The reference: scikit-learn's TF-IDF (words and word pairs, sublinear tf), scipy's components."""
    from scipy.sparse.csgraph import connected_components
    from sklearn.feature_extraction.text import TfidfVectorizer

    x = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts)
    return connected_components((x @ x.T) >= threshold, directed=False)[1]


def _same_group(g):
    g = np.asarray(g)
    return g[:, None] == g[None, :]


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5])
def test_near_copy_groups_are_the_tfidf_components_scikit_learn_gives(threshold):
    from textlora.metrics import near_copy_groups

    texts = DISTINCT + TEMPLATE + make_texts(8, seed=4)["text"].tolist() + ["", "a"]  # no words: a group of its own
    got = near_copy_groups(texts, threshold)
    assert got.shape == (len(texts),)
    assert (_same_group(got) == _same_group(_tfidf_components(texts, threshold))).all()


def test_accuracy_se_counts_a_group_of_near_copies_as_one_unit():
    from textlora.metrics import accuracy_se, near_copy_groups

    texts = DISTINCT + TEMPLATE
    groups = near_copy_groups(texts)
    assert len(set(groups[len(DISTINCT) :])) == 1 and len(set(groups)) == len(DISTINCT) + 1  # the template is one group
    correct = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0] + [0] * len(TEMPLATE), dtype=float)
    n, p = len(correct), correct.mean()
    # every row its own unit: the sample standard error of a proportion
    assert accuracy_se(correct) == pytest.approx(np.sqrt(p * (1 - p) / (n - 1)))
    # cluster-robust: k units, each the sum of its rows' residuals
    units = [correct[:12] - p] + [np.array([np.sum(correct[12:] - p)])]
    residuals = np.concatenate(units)
    k = len(residuals)
    assert accuracy_se(correct, groups) == pytest.approx(np.sqrt(k / (k - 1) * np.sum(residuals**2)) / n)
    assert accuracy_se(correct, groups) > 1.5 * accuracy_se(correct)  # six rows wrong together move the accuracy as one
    assert accuracy_se(np.ones(5)) == 0.0 and np.isnan(accuracy_se(np.ones(1)))


def test_evaluate_reports_the_accuracy_with_its_standard_error(trained, tmp_path, capsys):
    from textlora.metrics import accuracy_se, near_copy_groups
    from textlora.prediction import load

    sample = make_texts(5, seed=12)
    copies = pd.DataFrame({"text": [sample["text"][0] + " " + w for w in ("again", "more", "still", "too")], "label": sample["label"][0]})  # near-copies
    sample = pd.concat([sample, copies], ignore_index=True)
    path = tmp_path / "sample.csv"
    sample.to_csv(path, index=False)
    assert main(["evaluate", "--model", str(trained / "run"), "--data", str(path), "--output-dir", str(tmp_path / "ev")]) == 0
    printed = capsys.readouterr().out
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    texts = sample["text"].tolist()
    clf = load(str(trained / "run"))
    correct = clf.predict_proba(texts).argmax(1) == sample["label"].to_numpy()
    groups = near_copy_groups(texts)
    assert len(set(groups[[0, -4, -3, -2, -1]])) == 1  # the text and its four copies
    sizes = np.bincount(groups)
    assert m["near_copies"] == {"groups": int((sizes > 1).sum()), "rows": int(sizes[sizes > 1].sum()), "threshold": 0.3}
    assert m["accuracy_se"] == pytest.approx(accuracy_se(correct, groups))
    assert f"accuracy  {m['accuracy']:.4f} +- {m['accuracy_se']:.4f} SE" in printed
    assert f"{m['near_copies']['rows']} of {len(sample)} rows are near-copies in {m['near_copies']['groups']} group" in printed


def test_model_card_names_the_dev_file_when_one_is_given(tmp_path, tiny_bert, data_dir):
    """With data.dev the dev rows come from that file, not from a stratified share of the training file."""
    rows = pd.read_csv(data_dir / "train.csv")
    rows.iloc[:12].to_csv(tmp_path / "dev.csv", index=False)
    rows.iloc[12:].to_csv(tmp_path / "train.csv", index=False)
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, tmp_path / "train.csv", tmp_path / "run", data={"dev": str(tmp_path / "dev.csv")}, train={"epochs": 1})
    assert main(["train", "--config", str(cfg)]) == 0
    card = (tmp_path / "run" / "README.md").read_text()
    assert "stratified" not in card
    assert f"12 dev rows (the file `{tmp_path / 'dev.csv'}`" in card
    # without data.dev the card still says how the split was made
    cfg = write_config(tmp_path / "c2.yaml", tiny_bert, tmp_path / "train.csv", tmp_path / "run2", train={"epochs": 1})
    assert main(["train", "--config", str(cfg)]) == 0
    assert "(stratified 25% of the training file, seed 7" in (tmp_path / "run2" / "README.md").read_text()
