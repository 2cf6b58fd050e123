"""The label check on generated rows: the probe against scikit-learn, the verdict on rows whose
labels follow their texts and on rows whose labels do not, and what the pipeline does with each."""

import json
import random

import numpy as np
import pandas as pd

from textlora.augment.check import MIN_ROWS, Probe, features, label_check, label_check_folds
from textlora.cli import main

from .conftest import make_texts
from .test_pipeline import pipeline_config, write


def _split(df):
    return df["text"].tolist(), df["label"].astype(str).tolist()


def test_the_probe_is_tfidf_logistic_regression_as_scikit_learn_fits_it():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train, test = make_texts(60, seed=1), make_texts(40, seed=2)
    rng = random.Random(0)
    labels = [v if rng.random() > 0.3 else rng.randrange(3) for v in train["label"]]  # noisy labels: the penalty matters
    X, y = train["text"].tolist(), [str(v) for v in labels]
    ours = Probe().fit(X, y).predict(test["text"].tolist())
    vec = TfidfVectorizer(analyzer=features, min_df=2, sublinear_tf=True)
    theirs = LogisticRegression(C=4.0, max_iter=5000, tol=1e-8).fit(vec.fit_transform(X), y).predict(vec.transform(test["text"].tolist()))
    assert np.mean(np.array(ours) == theirs) >= 0.98
    assert np.mean(np.array(ours) == test["label"].astype(str).to_numpy()) > 0.9


def _relabel(rows, share, seed):
    """``share`` of the rows get another class's label, at random."""
    rng = np.random.default_rng(seed)
    labels = rows["label"].to_numpy().copy()
    flip = rng.permutation(len(rows))[: int(round(share * len(rows)))]
    labels[flip] = [(v + rng.integers(1, 3)) % 3 for v in labels[flip]]
    return rows.assign(label=labels)


def test_the_check_estimates_the_share_of_mislabelled_rows():
    source, dev = _split(make_texts(40, seed=1)), _split(make_texts(15, seed=2))
    rows = make_texts(50, seed=3)
    clean = label_check(source, dev, _split(rows), max_noise=0.25, seed=0)
    assert clean["passed"] and clean["noise"] < 0.05 and clean["dev"] > 0.9 and clean["heldout_rows"] == 30
    for share in (0.3, 0.6):
        r = label_check(source, dev, _split(_relabel(rows, share, seed=4)), max_noise=0.25, seed=0)
        assert abs(r["noise"] - share) < 0.12 and not r["passed"], (share, r)
        assert set(r["per_class"]) == {"0", "1", "2"}
    # max_noise is the rule: at 1 even rows with 60% wrong labels pass
    assert label_check(source, dev, _split(_relabel(rows, 0.6, seed=4)), max_noise=1.0, seed=0)["passed"]


def test_a_probe_near_chance_on_dev_skips_the_check():
    def scrambled(df):  # labels that no text carries
        return df.assign(label=np.random.default_rng(0).permutation(df["label"].to_numpy()))

    r = label_check(
        _split(scrambled(make_texts(40, seed=1))), _split(make_texts(15, seed=2)), _split(scrambled(make_texts(50, seed=3))), max_noise=0.25, seed=0
    )
    assert "too near chance" in r["skipped"] and "passed" not in r


def test_the_pipeline_drops_rows_that_fail_the_check_and_says_so(task, tiny_bert, tiny_gpt2, capsys):
    # a random tiny GPT-2 writes rows that carry nothing of their class: the probe cannot learn them
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, generate={"rows_per_class": 30, "batch_size": 16, "length_max": 12, "precision": "fp32"})
    cfg_path = write(task / "p.yaml", cfg)
    assert main(["pipeline", "--config", cfg_path]) == 0
    out = capsys.readouterr().out
    root = task / "out"
    trained = pd.read_csv(root / "synthetic" / "train.csv")
    assert len(trained) >= MIN_ROWS
    check = json.loads((root / "stages.json").read_text())["filter"]["data"]["check"]
    assert check["passed"] is False and "rows dropped" in out
    assert json.loads((root / "classifier" / "metrics.json").read_text())["data"]["extra_rows"] == 0
    summary = json.loads((root / "pipeline.json").read_text())
    assert any("failed the label check" in n for n in summary["notes"]) and "note: the generated rows failed the label check" in out
    assert summary["methods"] == [{"method": "synthetic rows (prompts: instruct)", "ran": True, "kept": False, "evidence": f"label check: ~{check['noise']:.0%} mislabelled (above {check['max_noise']})"}]
    assert "synthetic" in summary["metrics"]  # the held-out rows still measure the final classifier

    # synthetic.check: false keeps them (only filter and what follows rerun)
    assert main(["pipeline", "--config", cfg_path, "--synthetic.check", "false"]) == 0
    out = capsys.readouterr().out
    assert "(cached)" in out.split("== generate: ")[1].splitlines()[0] and "(cached)" not in out.split("== filter: ")[1].splitlines()[0]
    assert json.loads((root / "classifier" / "metrics.json").read_text())["data"]["extra_rows"] == len(trained)
    assert "label check" not in out


def test_label_check_folds_holds_out_every_row_once():
    source, dev = _split(make_texts(40, seed=1)), _split(make_texts(15, seed=2))
    rows = make_texts(20, seed=3)
    clean = label_check_folds(source, dev, _split(rows), max_noise=0.25, folds=5, seed=0)
    assert clean["heldout_rows"] == len(rows) and clean["passed"] and clean["noise"] < 0.05
    noisy = label_check_folds(source, dev, _split(_relabel(rows, 0.5, seed=4)), max_noise=0.25, folds=5, seed=0)
    assert noisy["heldout_rows"] == len(rows) and abs(noisy["noise"] - 0.5) < 0.15 and not noisy["passed"], noisy


def test_the_trial_stops_a_generator_whose_rows_carry_no_labels_after_its_first_batch(task, tiny_bert, tiny_gpt2, capsys):
    # a random tiny GPT-2 writes rows that carry nothing of their class: one batch of them is judged
    # before any adaptation, and adapt, generate and filter never run
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, synthetic={"trial_rows": 60}, generate={"rows_per_class": 30, "batch_size": 64})
    cfg_path = write(task / "p.yaml", cfg)
    assert main(["pipeline", "--config", cfg_path]) == 0
    out = capsys.readouterr().out
    root = task / "out"
    trial = pd.read_csv(root / "trial" / "rows.csv")
    assert set(trial["batch"]) == {0} and json.loads((root / "trial" / "rows.generate.json").read_text())["rows_planned"] == 60
    for stage in ("adapt", "generate", "filter"):
        assert f"== {stage}: 0 s (skipped: the trial's rows failed the label check" in out
    assert not (root / "lm").exists() and not (root / "synthetic").exists()
    assert json.loads((root / "classifier" / "metrics.json").read_text())["data"]["extra_rows"] == 0
    summary = json.loads((root / "pipeline.json").read_text())
    kept = json.loads((root / "stages.json").read_text())["trial"]["rows"]
    assert any(n.startswith(f"stopped early: {kept} rows written before adaptation failed the label check") for n in summary["notes"]), summary["notes"]
    (method,) = summary["methods"]
    assert method["ran"] is False and method["kept"] is False and method["evidence"].startswith("the trial: ~")
    assert "method: synthetic rows (prompts: instruct): not run (the trial: ~" in out
    assert "synthetic" not in summary["metrics"]
    # a rerun keeps the verdict without generating again; trial_rows: 0 runs the method anyway
    assert main(["pipeline", "--config", cfg_path]) == 0
    assert "== trial: " in (out := capsys.readouterr().out) and "(cached)" in out.split("== trial: ")[1].splitlines()[0]
    assert main(["pipeline", "--config", cfg_path, "--synthetic.trial_rows", "0"]) == 0
    out = capsys.readouterr().out
    assert "== trial: 0 s (skipped: synthetic.trial_rows is 0)" in out and "== adapt: 0 s (skipped" not in out and (root / "lm").is_dir()


def test_rows_that_carry_their_labels_pass_the_trial_and_the_method_runs(task, tiny_bert, tiny_gpt2, capsys):
    # prompts: source keeps each row's opening of a real source row, whose words carry the class
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, synthetic={"prompts": "source", "trial_rows": 60, "source_words": 8}, generate={"batch_size": 64})
    assert main(["pipeline", "--config", write(task / "p.yaml", cfg)]) == 0
    out = capsys.readouterr().out
    trial = json.loads((task / "out" / "stages.json").read_text())["trial"]["data"]["check"]
    assert trial["passed"] and trial["heldout_rows"] >= 50, trial
    assert "-> go on" in out and "skipped" not in out.split("== train")[0]
    assert (task / "out" / "lm" / "adapt_metrics.json").is_file()
