"""Crash safety: SIGKILL at a step, during evaluation and half-way through a checkpoint write,
then --resume last finishes with the same steps and metrics as an uninterrupted run; SIGTERM
stops cleanly with a resumable checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from textlora.cli import main

from .conftest import write_config

STEPS = dict(max_steps=24, eval_strategy="steps", eval_steps=6, logging_steps=1, save_total_limit=2)


def _train(cfg, *extra, fault=None, timeout=120):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TEXTLORA_FAULT", None)
    if fault:
        env["TEXTLORA_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "textlora", "train", "--config", str(cfg), *extra], env=env, capture_output=True, text=True, timeout=timeout)


def _same_run(a: dict, b: dict):
    assert b["steps_done"] == a["steps_done"]
    assert [e["step"] for e in b["train_log"]] == [e["step"] for e in a["train_log"]]
    assert [e["lr"] for e in b["train_log"]] == [e["lr"] for e in a["train_log"]]
    assert [e["loss"] for e in b["train_log"]] == pytest.approx([e["loss"] for e in a["train_log"]], rel=1e-5)
    assert [(h["step"], h["accuracy"]) for h in b["history"]] == [(h["step"], h["accuracy"]) for h in a["history"]]
    assert [h["loss"] for h in b["history"]] == pytest.approx([h["loss"] for h in a["history"]], rel=1e-5)


def test_sigkill_at_step_eval_and_checkpoint_write_then_resume(tmp_path, tiny_bert, data_dir):
    ref_cfg = write_config(tmp_path / "ref.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "ref", train=STEPS)
    assert main(["train", "--config", str(ref_cfg)]) == 0
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())

    cfg = write_config(tmp_path / "crash.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "crash", train=STEPS)
    ckpts = tmp_path / "crash" / "checkpoints"
    r = _train(cfg, fault="step:9")  # killed in step 9: step-6 is the last checkpoint
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000006"]
    r = _train(cfg, "--resume", "last", fault="eval:1")  # killed while evaluating step 12
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000006"]
    r = _train(cfg, "--resume", "last", fault="checkpoint:1")  # killed half-way writing step-12
    assert r.returncode == -signal.SIGKILL, r.stderr
    names = sorted(p.name for p in ckpts.iterdir())
    assert "step-00000006" in names and "step-00000012" not in names and any(n.startswith(".step-00000012") for n in names)
    assert not (tmp_path / "crash" / "textlora.json").exists()
    r = _train(cfg, "--resume", "last")
    assert r.returncode == 0, r.stderr
    assert "resuming at step 6" in r.stdout
    _same_run(ref, json.loads((tmp_path / "crash" / "metrics.json").read_text()))
    assert not any(p.name.startswith(".") for p in ckpts.iterdir())  # the half-written one was cleaned up


def test_sigterm_saves_a_resumable_checkpoint(tmp_path, tiny_bert, data_dir):
    steps = dict(STEPS, max_steps=400, eval_steps=100, logging_steps=10)
    ref_cfg = write_config(tmp_path / "ref.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "ref", train=steps)
    assert main(["train", "--config", str(ref_cfg)]) == 0
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    cfg = write_config(tmp_path / "t.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "t", train=steps)
    proc = subprocess.Popen(
        [sys.executable, "-m", "textlora", "train", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout.readline().startswith("textlora:")  # the loop is about to start
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("training finished before SIGTERM arrived")  # a very fast machine
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by signal 15" in err and "--resume last" in err
    saved = sorted((tmp_path / "t" / "checkpoints").iterdir())[-1]
    assert saved.name != "step-00000400"
    assert main(["train", "--config", str(cfg), "--resume", "last"]) == 0
    _same_run(ref, json.loads((tmp_path / "t" / "metrics.json").read_text()))


def test_truncated_latest_checkpoint_falls_back_to_the_newest_valid_one(tmp_path, tiny_bert, data_dir, capsys):
    from .conftest import fails

    steps = dict(STEPS, save_total_limit=5)
    ref_cfg = write_config(tmp_path / "ref.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "ref", train=steps)
    assert main(["train", "--config", str(ref_cfg)]) == 0
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "c", train=steps)
    r = _train(cfg, fault="step:20")  # killed in step 20: checkpoints at 6, 12, 18
    assert r.returncode == -signal.SIGKILL, r.stderr
    ckpts = tmp_path / "c" / "checkpoints"
    latest = ckpts / "step-00000018" / "trainable.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])  # truncated, as a dying disk or a full one leaves it
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--resume", "last"]) == 0
    out = capsys.readouterr().out
    assert "warning: checkpoint step-00000018 is damaged (trainable.safetensors does not match its checksum)" in out
    assert "resuming at step 12" in out
    _same_run(ref, json.loads((tmp_path / "c" / "metrics.json").read_text()))
    for ckpt in ckpts.iterdir():  # every checkpoint damaged: one line, exit 2
        (ckpt / "optim.pt").unlink()
    fails(capsys, ["train", "--config", str(cfg), "--resume", "last"], "every checkpoint in")


def test_disk_full_while_writing_keeps_the_previous_checkpoint_and_output(tmp_path, tiny_bert, data_dir, trained):
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "c", train=STEPS)
    r = _train(cfg, fault="enospc:2")  # the second checkpoint write (step 12) hits a full disk
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("textlora train:")]  # the rest is the progress bar
    assert len(errors) == 1 and "no space left on device" in errors[0] and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in (tmp_path / "c" / "checkpoints").iterdir()) == ["step-00000006"]
    assert main(["train", "--config", str(cfg), "--resume", "last"]) == 0  # and it resumes from there
    # an output file: the old one stays as it was
    out = tmp_path / "pred.csv"
    out.write_text("old\n")
    env = {**os.environ, "TEXTLORA_FAULT": "enospc:1"}
    argv = ["predict", "--model", str(trained / "run"), "--data", str(trained / "unlabelled.csv"), "--output", str(out), "--overwrite"]
    r = subprocess.run([sys.executable, "-m", "textlora", *argv], env=env, capture_output=True, text=True, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("textlora predict:")]
    assert r.returncode == 2 and len(errors) == 1 and "no space left on device" in errors[0], r.stderr
    assert out.read_text() == "old\n"


def _adapt_argv(gpt2, texts, out, *extra):
    return ["adapt", "--model", str(gpt2), "--texts", str(texts), "--output_dir", str(out), "--lora_targets", "[c_attn]",
            "--epochs", "3", "--batch_size", "8", "--heldout", "10", "--max_texts", "null", "--precision", "fp32",
            "--learning_rate", "5e-3", "--save_steps", "4", *extra]


def _adapt(argv, fault=None, timeout=120):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TEXTLORA_FAULT", None)
    if fault:
        env["TEXTLORA_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "textlora", *argv], env=env, capture_output=True, text=True, timeout=timeout)


def test_adapt_killed_at_a_step_resumes_with_the_same_result(tmp_path, tiny_gpt2):
    from .conftest import make_texts

    texts = tmp_path / "target.csv"
    make_texts(20, seed=4).drop(columns=["label"]).to_csv(texts, index=False)  # 60 texts: 50 train, 7 steps an epoch, 21 in all
    assert main(_adapt_argv(tiny_gpt2, texts, tmp_path / "ref")) == 0
    ref = json.loads((tmp_path / "ref" / "adapt_metrics.json").read_text())
    out = tmp_path / "crash"
    r = _adapt(_adapt_argv(tiny_gpt2, texts, out), fault="adapt_step:11")  # killed in step 11: step 8 is saved
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not out.exists()  # the output appears only when complete
    r = _adapt(_adapt_argv(tiny_gpt2, texts, out))
    assert r.returncode == 0, r.stderr
    assert "resuming adapt at step 8" in r.stdout
    got = json.loads((out / "adapt_metrics.json").read_text())
    assert got["steps"] == ref["steps"] == 21
    assert got["losses"] == pytest.approx(ref["losses"], rel=1e-5)
    assert got["perplexity_after"] == pytest.approx(ref["perplexity_after"], rel=1e-5)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())  # its checkpoints are cleaned up
    # a changed setting starts afresh instead of resuming another adaptation's checkpoints
    r = _adapt(_adapt_argv(tiny_gpt2, texts, tmp_path / "other", "--learning_rate", "1e-3"), fault="adapt_step:6")
    r = _adapt(_adapt_argv(tiny_gpt2, texts, tmp_path / "other", "--learning_rate", "2e-3"))
    assert r.returncode == 0 and "resuming" not in r.stdout, r.stdout


def test_adapt_sigterm_saves_and_a_second_adapt_is_refused(tmp_path, tiny_gpt2, capsys):
    from textlora.augment.adapt import lock_path
    from textlora.fsutil import hold_lock

    from .conftest import make_texts

    texts = tmp_path / "target.csv"
    make_texts(200, seed=4).drop(columns=["label"]).to_csv(texts, index=False)
    out = tmp_path / "adapted"
    argv = _adapt_argv(tiny_gpt2, texts, out, "--epochs", "20", "--save_steps", "1000")
    proc = subprocess.Popen([sys.executable, "-m", "textlora", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout.readline().startswith("adapt:")  # the loop is about to start
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "run the same command again to continue" in err
    assert list((out.parent / f"{out.name}.partial" / "checkpoints").iterdir())
    held = hold_lock(lock_path(out), what="test")  # another process adapting into the same folder
    try:
        r = _adapt(argv)
        assert r.returncode == 2 and "is in use by another textlora process" in r.stderr
    finally:
        held.close()
