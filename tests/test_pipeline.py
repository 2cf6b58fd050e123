"""textlora pipeline end to end on a tiny GPT-2 and BERT: stages cached, a killed run resumed at its
stage, prompts made from the data, labels by name whatever order a prompt file has, and the errors."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import torch
import yaml

from textlora.cli import main

from .conftest import fails, make_texts


def pipeline_config(root, tiny_bert, tiny_gpt2, **sections) -> dict:
    cfg = {
        "output_dir": str(root / "out"),
        "seed": 7,
        "data": {"train": str(root / "source.csv"), "val_fraction": 0.2, "eval_sets": {"target": str(root / "target_test.csv")}},
        "target": {"texts": str(root / "target.csv")},
        "model": {"name": str(tiny_bert), "max_length": "auto"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"], "bias": "none"},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 0.01, "precision": "fp32", "eval_batch_size": 16},
        "adapt": {"model": str(tiny_gpt2), "lora_targets": ["c_attn"], "epochs": 1, "batch_size": 8, "heldout": 4, "precision": "fp32"},
        "generate": {"rows_per_class": 8, "batch_size": 8, "length_max": 12, "precision": "fp32"},
        "filter": {"min_words": 1},
        "synthetic": {"prompts": "instruct", "dev_fraction": 0.25, "trial_rows": 0},  # the trial: tests/test_check.py
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def write(path, cfg) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _subprocess(argv, fault=None):
    env = {k: v for k, v in os.environ.items() if k != "TEXTLORA_FAULT"}
    if fault:
        env["TEXTLORA_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "textlora", *argv], env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=300)


def test_pipeline_runs_caches_and_resumes_a_killed_run_at_its_stage(task, tiny_bert, tiny_gpt2, capsys):
    cfg_path = write(task / "p.yaml", pipeline_config(task, tiny_bert, tiny_gpt2))
    assert main(["pipeline", "--config", cfg_path]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    root = task / "out"
    assert lines[-2] == f"run: {root / 'classifier'}" and lines[-1] == f"predictions: {root / 'predictions.csv'}"
    for stage in ("adapt", "generate", "filter", "train", "evaluate", "predict"):
        assert f"== {stage}: " in out
    pred = pd.read_csv(root / "predictions.csv")
    assert list(pred.columns) == ["ID", "Label"] and pred["ID"].tolist() == [f"t{i}" for i in range(36)]
    summary = json.loads((root / "pipeline.json").read_text())
    assert set(summary["metrics"]) == {"dev", "target", "synthetic"} and summary["metrics"]["target"]["n"] == 9
    target = summary["metrics"]["target"]  # each accuracy with its standard error (near-copy texts one unit)
    assert f"target accuracy {target['accuracy']:.4f} +- {target['accuracy_se']:.4f} (n=9" in out and target["near_copies"]["threshold"] == 0.3
    # every run's figures say which machine made them: "AMD EPYC" alone named two CPUs 2x apart in speed
    machine = summary["machine"]
    assert machine["torch_capability"] == torch.backends.cpu.get_cpu_capability() and machine["threads"] == torch.get_num_threads()
    assert f"machine: {machine['cpu']}" in out and machine["cpu"]
    rows = pd.read_csv(root / "synthetic" / "rows.csv", keep_default_na=False)
    assert set(rows["label"]) == {"sports", "business", "science"}  # labels are class names
    held, trained = pd.read_csv(root / "synthetic" / "heldout.csv"), pd.read_csv(root / "synthetic" / "train.csv")
    assert len(held) > 0 and not set(held["text"]) & set(trained["text"])
    # the held-out generated rows and the target sample never reach the dev split; the synthetic rows train
    run_metrics = json.loads((root / "classifier" / "metrics.json").read_text())
    assert run_metrics["data"]["extra_rows"] == len(trained) and set(run_metrics["best"]["eval_sets"]) == {"target", "synthetic"}
    lm = json.loads((root / "lm" / "adapt_metrics.json").read_text())
    assert lm["excluded_texts"] == 9  # the labelled target sample's texts are not adapted on
    assert f"note: label check skipped: {len(trained)} generated rows" in out  # too few to judge (tests/test_check.py)

    # a second run reuses every stage
    assert main(["pipeline", "--config", cfg_path]) == 0
    again = capsys.readouterr().out
    for stage in ("adapt", "generate", "filter", "train"):
        assert f"== {stage}: " in again and "(cached)" in again.split(f"== {stage}: ")[1].splitlines()[0], again
    assert pd.read_csv(root / "predictions.csv").equals(pred)

    # a changed classifier setting redoes training only; killed in it, the rerun continues there
    per_epoch = run_metrics["total_steps"] // 2
    r = _subprocess(["pipeline", "--config", cfg_path, "--train.epochs", "3"], fault=f"step:{per_epoch + 2}")  # after the first checkpoint
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert "(cached)" in r.stdout.split("== filter: ")[1].splitlines()[0]
    r = _subprocess(["pipeline", "--config", cfg_path, "--train.epochs", "3"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "train: continuing" in r.stdout and "resuming at step" in r.stdout
    for stage in ("adapt", "generate", "filter"):
        assert "(cached)" in r.stdout.split(f"== {stage}: ")[1].splitlines()[0]
    assert json.loads((root / "classifier" / "metrics.json").read_text())["steps_done"] > run_metrics["steps_done"]


def test_pipeline_source_only_and_self_training(task, tiny_bert, tiny_gpt2, capsys):
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, synthetic={"enabled": False}, self_training={"rounds": 1, "min_confidence": 0.0})
    assert main(["pipeline", "--config", write(task / "p.yaml", cfg)]) == 0
    out = capsys.readouterr().out
    assert "== adapt" not in out and "== pseudo-label 1: " in out and "== self-training 1: " in out
    assert out.strip().splitlines()[-2] == f"run: {task / 'out' / 'round1' / 'classifier'}"
    pseudo = pd.read_csv(task / "out" / "round1" / "pseudo.csv")
    test_texts = set(pd.read_csv(task / "target_test.csv")["text"])
    assert len(pseudo) > 0 and not set(pseudo["text"]) & test_texts  # the eval set's texts are never pseudo-labelled
    metrics = json.loads((task / "out" / "round1" / "classifier" / "metrics.json").read_text())
    assert metrics["data"]["extra_rows"] == len(pseudo)
    assert "method: self-training round 1: kept (the latest classifier (no labelled target rows to choose by))" in out


def test_automatic_prompts_from_the_class_names_and_the_source_rows(task, tiny_bert, tiny_gpt2):
    from textlora.augment.prompts import instruct_prompts, source_prompts

    names = ["negative", "positive"]
    inst = instruct_prompts(names)
    assert list(inst) == names and all("positive" in p for p in inst["positive"]) and len(inst["negative"]) >= 3
    texts = ["great sound and fine build", "broke after a week", "works great so far", "returned it at once"]
    labels = ["positive", "negative", "positive", "negative"]
    src = source_prompts(texts, labels, names, per_class=5, words=2, seed=0)
    assert sorted(src["positive"]) == ["great sound", "works great"] and sorted(src["negative"]) == ["broke after", "returned it"]

    # source mode inside the pipeline: openings of the training split only (never of dev rows), kept in the rows
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, synthetic={"prompts": "source", "source_words": 2})
    assert main(["pipeline", "--config", write(task / "p.yaml", cfg)]) == 0
    made = yaml.safe_load((task / "out" / "prompts.yaml").read_text())["classes"]
    dev = pd.read_csv(task / "out" / "classifier" / "dev.csv")
    split = pd.read_csv(task / "out" / "source_train_split.csv")
    dev_openings = {" ".join(t.split()[:2]) for t in dev["text"]} - {" ".join(t.split()[:2]) for t in split["text"]}
    assert set(made) == {"sports", "business", "science"}
    for name, prompts in made.items():
        ok = {" ".join(t.split()[:2]) for t in split[split["label"] == name]["text"]}
        assert set(prompts) <= ok and not set(prompts) & dev_openings
    rows = pd.read_csv(task / "out" / "synthetic" / "rows.csv", keep_default_na=False)
    assert all(t.startswith(p) for t, p in zip(rows["text"], rows["prompt"]))


def test_label_conditioned_adaptation_trains_on_labelled_source_rows(task, tiny_bert, tiny_gpt2, capsys):
    shared = task / "shared"  # the LM and the generated rows in a folder of their own, as several pipelines may share them
    cfg = pipeline_config(
        task, tiny_bert, tiny_gpt2, synthetic={"prompts": "labelled"}, adapt={"output_dir": str(shared / "lm")}, generate={"output": str(shared / "rows.csv")}
    )
    assert main(["pipeline", "--config", write(task / "p.yaml", cfg)]) == 0
    lm = json.loads((shared / "lm" / "adapt_metrics.json").read_text())
    assert (shared / "rows.csv").is_file() and (task / "out" / "synthetic" / "train.csv").is_file()
    assert lm["labelled_rows"] > 0 and lm["train_texts"] == lm["target_texts"] + lm["labelled_rows"]
    made = yaml.safe_load((task / "out" / "prompts.yaml").read_text())["classes"]
    assert made == {"sports": ["sports:"], "business": ["business:"], "science": ["science:"]}
    assert "labelled source rows" in capsys.readouterr().out


def test_a_reordered_prompt_file_gives_the_same_training_labels(tmp_path, tiny_gpt2):
    from textlora.augment.generate import GenerateConfig, generate
    from textlora.config import DataConfig
    from textlora.data import load_splits

    classes = {"sports": ["the team", "a goal"], "business": ["the market"], "science": ["nasa space", "the chip"]}
    reordered = dict(reversed(list(classes.items())))
    make_texts(10, seed=1, names="str").to_csv(tmp_path / "train.csv", index=False)
    names = ["sports", "business", "science"]
    labels = []
    for i, c in enumerate((classes, reordered)):
        (tmp_path / f"p{i}.yaml").write_text(yaml.safe_dump({"classes": c}, sort_keys=False))
        cfg = GenerateConfig(
            model=str(tiny_gpt2), prompts=str(tmp_path / f"p{i}.yaml"), output=str(tmp_path / f"g{i}.csv"), rows_per_class=5, batch_size=4, precision="fp32"
        )
        generate(cfg, label_names=names)
        rows = pd.read_csv(tmp_path / f"g{i}.csv", keep_default_na=False)
        assert all(p in classes[y] for p, y in zip(rows["prompt"], rows["label"]))  # each row is labelled by its prompt's class
        splits = load_splits(DataConfig(train=str(tmp_path / "train.csv"), label_names=names, extra_train=[str(tmp_path / f"g{i}.csv")]), seed=0)
        labels.append((splits.train_texts, splits.train_labels))
    assert labels[0][0] == labels[1][0]
    np.testing.assert_array_equal(labels[0][1], labels[1][1])
    # without the classifier's names the file's own order would number the classes differently: the names still agree
    assert set(pd.read_csv(tmp_path / "g1.csv")["label"]) == set(names)


def test_pipeline_bad_input_is_one_line(task, tiny_bert, tiny_gpt2, capsys):
    base = pipeline_config(task, tiny_bert, tiny_gpt2)
    p = task / "bad.yaml"

    def bad(cfg, message):
        fails(capsys, ["pipeline", "--config", write(p, cfg)], message)

    no_train = {k: v for k, v in base.items()}
    no_train["data"] = {k: v for k, v in base["data"].items() if k != "train"}
    bad(no_train, "data.train: no training file given")
    bad({**base, "target": {}}, "target.texts: expected a file of unlabelled target texts")
    (task / "empty.csv").write_text("id,text\n")
    bad({**base, "target": {"texts": str(task / "empty.csv")}}, f"{task / 'empty.csv'}: no rows")
    bad({**base, "target": {"texts": str(task / "target.csv"), "text_column": "body"}}, "missing text column 'body'")
    bad({**base, "data": {**base["data"], "text_column": "body"}}, "missing text column 'body'")
    bad({**base, "data": {**base["data"], "label_names": ["sports", "business", "science", "weather"]}}, "class 'weather' has no rows")
    (task / "prompts.yaml").write_text(yaml.safe_dump({"classes": {"sports": ["a"], "business": ["b"], "sciencе": ["c"]}}))
    bad({**base, "synthetic": {"prompts": str(task / "prompts.yaml")}}, "prompts")
    (task / "prompts.yaml").write_text(yaml.safe_dump({"classes": {"sports": ["a"], "business": ["b"], "science": ["c"], "weather": ["d"]}}))
    bad({**base, "synthetic": {"prompts": str(task / "prompts.yaml")}}, "class 'weather' is not a class of the training data")
    bad({**base, "adapt": {**base["adapt"], "texts": "x.csv"}}, "adapt.texts: set by the pipeline")
    bad({**base, "bogus": 1}, "unknown key 'bogus'")
    bad({**base, "synthetic": {**base["synthetic"], "processes": 0}}, "synthetic.processes: expected an integer >= 1, found 0")
    bad({**base, "synthetic": {**base["synthetic"], "check_max_noise": 2}}, "synthetic.check_max_noise: expected a number in [0, 1], found 2")
    assert not (task / "out" / "predictions.csv").exists()


def test_a_classifier_model_that_is_not_installed_fails_before_any_stage(task, tiny_bert, tiny_gpt2, capsys, monkeypatch):
    """An alias whose package is missing (here: mpnet) is one line before adaptation spends minutes."""
    import textlora.sources

    monkeypatch.setattr(textlora.sources, "MPNET_PARTS", ("textlora-test-no-such-package",))
    monkeypatch.setenv("TEXTLORA_CACHE", str(task / "cache"))  # not unpacked before either
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, model={"name": "mpnet"})
    fails(capsys, ["pipeline", "--config", write(task / "c.yaml", cfg)], "model 'mpnet' needs the PyPI package textlora-test-no-such-package")
    assert not (task / "out" / "lm").exists()


def test_training_needs_a_training_file(tmp_path, tiny_bert, capsys):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "model": {"name": str(tiny_bert)}}))
    fails(capsys, ["train", "--config", str(tmp_path / "c.yaml")], "data.train: no training file given")
    assert not (tmp_path / "run").exists()


def test_generation_in_two_processes_writes_the_same_rows(task, tiny_bert, tiny_gpt2, capsys):
    """synthetic.processes 2 runs the generate stage under torchrun; the rows equal one process's."""
    shared = {"adapt": {"output_dir": str(task / "lm")}}
    one = pipeline_config(task, tiny_bert, tiny_gpt2, output_dir=str(task / "one"), **shared)
    assert main(["pipeline", "--config", write(task / "one.yaml", one)]) == 0
    two = pipeline_config(task, tiny_bert, tiny_gpt2, output_dir=str(task / "two"), synthetic={"processes": 2}, **shared)
    assert main(["pipeline", "--config", write(task / "two.yaml", two)]) == 0
    assert "generate: 2 processes of 1 thread(s) under torchrun" in capsys.readouterr().out
    a, b = (pd.read_csv(task / d / "synthetic" / "rows.csv", keep_default_na=False) for d in ("one", "two"))
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)
    assert json.loads((task / "two" / "synthetic" / "rows.generate.json").read_text())["processes"] == 2


def test_labelled_target_rows_train_choose_the_checkpoint_and_the_run(task, tiny_bert, tiny_gpt2, capsys):
    # 12 target texts a person labelled (of the 36 unlabelled ones): half choose, half train
    target = pd.read_csv(task / "target.csv")
    truth = pd.read_csv(task / "target_test.csv")  # the same texts' labels (the task's first 9 rows are these texts)
    labelled = target.iloc[9:21].assign(label=[None] * 12)
    labels = dict(zip(make_texts(12, seed=3, names="str")["text"], make_texts(12, seed=3, names="str")["label"]))
    labelled["label"] = [labels[t] for t in labelled["text"]]
    labelled.loc[labelled.index[-1], "label"] = ""  # skipped by the person: not a row
    labelled.to_csv(task / "labels.csv", index=False)
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, synthetic={"enabled": False}, self_training={"rounds": 1, "min_confidence": 0.0})
    cfg["target"]["labelled"] = str(task / "labels.csv")
    assert main(["pipeline", "--config", write(task / "p.yaml", cfg)]) == 0
    out = capsys.readouterr().out
    root = task / "out"
    dev, trained = pd.read_csv(root / "labelled" / "labelled.csv"), pd.read_csv(root / "labelled" / "train.csv")
    assert len(dev) + len(trained) == 11 and not set(dev["id"]) & set(trained["id"]) and len(dev) >= 4
    m = json.loads((root / "classifier" / "metrics.json").read_text())
    assert m["metric_for_best"] == "labelled.accuracy" and m["data"]["extra_rows"] == len(trained)
    chosen = min(m["history"], key=lambda h: (-h["eval_sets"]["labelled"]["accuracy"], h["eval_sets"]["labelled"]["loss"]))
    assert m["best"]["step"] == chosen["step"]  # the labelled rows chose the epoch (a tie: their lower loss)
    summary = json.loads((root / "pipeline.json").read_text())
    assert summary["metrics"]["labelled"]["n"] == len(dev) and "accuracy_se" in summary["metrics"]["labelled"]
    assert any(n.startswith(f"target.labelled: 11 labelled target texts, {len(dev)} as the target dev set") for n in summary["notes"])
    # the pseudo-labels never take the target dev set's texts; the final run is the better of the two on it
    pseudo = pd.read_csv(root / "round1" / "pseudo.csv")
    assert not set(pseudo["text"]) & set(dev["text"]) and not set(pseudo["text"]) & set(truth["text"])
    runs = {s["stage"]: s["eval_sets"]["labelled"] for s in summary["stages"] if s["stage"] in ("train", "self-training 1")}
    best = "train" if runs["train"] >= runs["self-training 1"] else "self-training 1"
    assert summary["run"] == str(root / ("classifier" if best == "train" else "round1/classifier"))
    assert f"labelled accuracy {summary['metrics']['labelled']['accuracy']:.4f} +- " in out


def test_labelled_rows_repeated_count_that_many_times_in_training(task, tiny_bert, tiny_gpt2, capsys):
    target = pd.read_csv(task / "target.csv")
    labels = dict(zip(make_texts(12, seed=3, names="str")["text"], make_texts(12, seed=3, names="str")["label"]))
    labelled = target.iloc[9:21].assign(label=lambda f: [labels[t] for t in f["text"]])
    labelled.to_csv(task / "labels.csv", index=False)
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, synthetic={"enabled": False})
    cfg["target"] |= {"labelled": str(task / "labels.csv"), "labelled_repeat": 3}
    assert main(["pipeline", "--config", write(task / "p.yaml", cfg)]) == 0
    root = task / "out"
    dev, trained = pd.read_csv(root / "labelled" / "labelled.csv"), pd.read_csv(root / "labelled" / "train.csv")
    distinct = trained.drop_duplicates()
    assert len(trained) == 3 * len(distinct) and len(dev) + len(distinct) == 12 and not set(dev["id"]) & set(distinct["id"])
    assert json.loads((root / "classifier" / "metrics.json").read_text())["data"]["extra_rows"] == len(trained)
    assert f"{len(distinct)} trained on (each 3 times)" in capsys.readouterr().out
    cfg["target"]["labelled_repeat"] = 0
    fails(capsys, ["pipeline", "--config", write(task / "p.yaml", cfg), "--overwrite"], "target.labelled_repeat: expected an integer >= 1")


def test_a_labels_file_with_an_unknown_id_or_class_is_one_line(task, tiny_bert, tiny_gpt2, capsys):
    target = pd.read_csv(task / "target.csv")
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, synthetic={"enabled": False})
    cfg["target"]["labelled"] = str(task / "labels.csv")
    path = write(task / "p.yaml", cfg)
    pd.DataFrame({"id": [target["id"][0], "nope"], "text": ["a", "b"], "label": ["sports", "sports"]}).to_csv(task / "labels.csv", index=False)
    fails(capsys, ["pipeline", "--config", path], f"{task / 'labels.csv'}: row 3: id 'nope' is not in {task / 'target.csv'}")
    pd.DataFrame({"id": [target["id"][0]], "text": ["a"], "label": ["cooking"]}).to_csv(task / "labels.csv", index=False)
    fails(capsys, ["pipeline", "--config", path], f"{task / 'labels.csv'}: row 2: label 'cooking' is not a class (business, science, sports)")
    assert not (task / "out" / "classifier").exists()


def test_the_target_objective_learns_from_the_pipelines_target_texts(task, tiny_bert, tiny_gpt2, capsys, monkeypatch):
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, synthetic={"enabled": False}, train={"target_objective": "contrastive", "logging_steps": 1})
    path = write(task / "p.yaml", cfg)
    assert main(["pipeline", "--config", path]) == 0  # 36 target texts: too few, skipped with a line, never an error
    out = capsys.readouterr().out
    assert "train: train.target_objective contrastive skipped: 27 target texts in" in out  # the 9 eval-set texts left out
    assert "method: target objective (contrastive): not run (27 target texts in" in out
    monkeypatch.setattr("textlora.objectives.MIN_TEXTS", 20)
    assert main(["pipeline", "--config", path, "--output_dir", str(task / "out2")]) == 0
    out = capsys.readouterr().out
    assert "target objective contrastive on 27 target texts (weight" in out and "skipped" not in out
    assert "method: target objective (contrastive): kept (weight " in out
    m = json.loads((task / "out2" / "classifier" / "metrics.json").read_text())
    assert m["target_objective"]["texts"] == 27 and "target_loss" in m["train_log"][-1]


def test_with_lora_layers_the_target_texts_are_cached_and_predicted_from_the_cache(task, tiny_bert, tiny_gpt2, monkeypatch):
    import pandas as pd

    from textlora.prediction import load

    monkeypatch.setenv("TEXTLORA_CACHE", str(task / "cache"))
    cfg = pipeline_config(task, tiny_bert, tiny_gpt2, synthetic={"enabled": False}, lora={"layers": 1})
    assert main(["pipeline", "--config", write(task / "p.yaml", cfg)]) == 0
    run = task / "out" / "classifier"
    texts = pd.read_csv(task / "target.csv")["text"].tolist()
    held = set(pd.read_csv(task / "target_test.csv")["text"]) | set(pd.read_csv(run / "dev.csv")["text"])
    assert any(t not in held for t in texts)  # texts that only the target file holds: cached for prediction alone
    clf = load(str(run), precision="fp32", cached=True)
    clf.logits(texts)
    assert clf.from_cache == len(texts)
