"""Scale-out on torchrun: 2 CPU processes (gloo) train a valid run directory and shard prediction."""

import json
import os
import subprocess
import sys

import pandas as pd

from textlora.cli import main

from .conftest import free_port, write_config

# The same test under `accelerate launch --cpu --num_processes 2 -m textlora train ...` was run by hand
# (accelerate sets the same RANK/WORLD_SIZE/MASTER_* variables that torchrun does).


def _torchrun(*args, timeout=240):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "textlora",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_process_ddp_train_and_sharded_predict(tmp_path, tiny_bert, data_dir):
    single = write_config(tmp_path / "single.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "single", train={"epochs": 2})
    assert main(["train", "--config", str(single)]) == 0
    ddp = write_config(tmp_path / "ddp.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "ddp", train={"epochs": 2})
    r = _torchrun("train", "--config", str(ddp))
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((tmp_path / "single" / "metrics.json").read_text())
    b = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert a.keys() == b.keys()
    assert a["history"][0].keys() == b["history"][0].keys()
    # each process takes half the batches: half the optimizer steps per epoch at twice the global batch
    assert b["total_steps"] * 2 == a["total_steps"]
    assert (tmp_path / "ddp" / "textlora.json").is_file() and (tmp_path / "ddp" / "adapter_model.safetensors").is_file()
    assert r.stdout.count("run directory:") == 1  # one rank reports, one rank writes

    # resume under DDP: an interrupted copy holding only the first checkpoint finishes the same way
    import shutil

    first = sorted((tmp_path / "ddp" / "checkpoints").iterdir())[0]
    (tmp_path / "ddp2" / "checkpoints").mkdir(parents=True)
    shutil.copytree(first, tmp_path / "ddp2" / "checkpoints" / first.name)
    ddp2 = write_config(tmp_path / "ddp2.yaml", tiny_bert, data_dir / "train.csv", tmp_path / "ddp2", train={"epochs": 2})
    r = _torchrun("train", "--config", str(ddp2), "--resume", "last")
    assert r.returncode == 0, r.stderr[-3000:]
    c = json.loads((tmp_path / "ddp2" / "metrics.json").read_text())
    assert c["steps_done"] == b["steps_done"]
    assert [e["lr"] for e in c["train_log"]] == [e["lr"] for e in b["train_log"]]
    assert [h["accuracy"] for h in c["history"]] == [h["accuracy"] for h in b["history"]]

    out = tmp_path / "pred.csv"
    r = _torchrun("predict", "--model", str(tmp_path / "ddp"), "--data", str(data_dir / "unlabelled.csv"), "--output", str(out), "--with-probs")
    assert r.returncode == 0, r.stderr[-3000:]
    sharded = pd.read_csv(out)
    assert (
        main(["predict", "--model", str(tmp_path / "ddp"), "--data", str(data_dir / "unlabelled.csv"), "--output", str(tmp_path / "one.csv"), "--with-probs"])
        == 0
    )
    one = pd.read_csv(tmp_path / "one.csv")
    assert sharded["ID"].tolist() == one["ID"].tolist() == list(range(100, 124))
    assert (sharded["Label"] == one["Label"]).all()
    assert abs(sharded.iloc[:, 2:].to_numpy() - one.iloc[:, 2:].to_numpy()).max() < 1e-4


def test_flags_use_a_backend_that_takes_their_tensors_on_cuda(monkeypatch):
    """On CUDA the group is nccl for the gradients; the per-step flags (signals, early stopping) are CPU
    tensors, so the group must also route CPU tensors (to gloo), or the first step stops in nccl."""
    import torch
    import torch.distributed as dist

    from textlora import runtime

    seen = {}
    sent = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend=None, **kw: seen.update(backend=backend))
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None: sent.append(t))
    monkeypatch.setattr(dist, "broadcast", lambda t, src: sent.append(t))
    info, device = runtime.init_distributed()
    assert device.type == "cuda"
    info.any_flag(True)
    info.broadcast_flag(False)

    def devices(backend: str) -> set[str]:
        """The device types a backend string takes: 'nccl' -> cuda only, 'gloo' -> both, 'cpu:gloo,cuda:nccl' -> both."""
        taken = set()
        for part in backend.split(","):
            dev, _, name = part.rpartition(":")
            taken |= {dev} if dev else ({"cuda"} if name == "nccl" else {"cpu", "cuda"})
        return taken

    assert "nccl" in seen["backend"]  # the gradients still go through nccl
    assert len(sent) == 2 and all(t.device.type in devices(seen["backend"]) for t in sent), (seen, [t.device for t in sent])


def test_two_process_generate_equals_one_process(tmp_path, tiny_gpt2):
    """generate under torchrun: each process takes every other batch, process 0 writes one file in
    row order, and it holds exactly the rows one process writes (batch k seeds its own sampling)."""
    import yaml

    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(yaml.safe_dump({"classes": {"sports": ["the team", "a goal"], "business": ["the market"], "science": ["nasa space"]}}))
    args = ["generate", "--model", str(tiny_gpt2), "--prompts", str(prompts), "--rows_per_class", "7", "--batch_size", "4", "--precision", "fp32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "textlora", *args, "--output", str(tmp_path / "one.csv")], capture_output=True, text=True, env=env, timeout=240)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _torchrun(*args, "--output", str(tmp_path / "two.csv"))
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = pd.read_csv(tmp_path / "one.csv", keep_default_na=False), pd.read_csv(tmp_path / "two.csv", keep_default_na=False)
    assert len(a) > 0 and a["batch"].nunique() > 2
    pd.testing.assert_frame_equal(a, b)
    assert json.loads((tmp_path / "two.generate.json").read_text())["processes"] == 2
    assert not list(tmp_path.glob("two.csv.partial*"))  # every process's partial file was merged and removed
    assert two.stdout.count("wrote ") == 2 and "process 0 of 2" in two.stdout  # process 0 reports (two lines), the other stays quiet
