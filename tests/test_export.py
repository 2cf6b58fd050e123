"""Export: merged HF folder in transformers.pipeline, ONNX in onnxruntime (fp32 and int8), predict on ONNX."""

import numpy as np
import pandas as pd
import pytest

from textlora.cli import main

from .conftest import make_texts


@pytest.fixture(scope="module")
def run(trained):
    return trained


def test_hf_export_works_in_pipeline(run):
    from transformers import pipeline

    from textlora.prediction import load

    assert main(["export", "--model", str(run / "run"), "--output", str(run / "hf"), "--format", "hf"]) == 0
    texts = pd.read_csv(run / "test.csv")["text"].tolist()
    clf = pipeline("text-classification", model=str(run / "hf"), device="cpu")
    labels = [r["label"] for r in clf(texts)]
    ours = load(run / "run")
    expected = [ours.label_names[k] for k in ours.logits(texts).argmax(axis=1)]
    assert labels == expected


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_onnx_export_runs_in_onnxruntime_and_predict(run, quantize):
    pytest.importorskip("onnxruntime")
    from textlora.prediction import Classifier, load

    out = run / f"onnx-{quantize}"
    argv = ["export", "--model", str(run / "run"), "--output", str(out), "--format", "onnx"] + (["--quantize", quantize] if quantize else [])
    assert main(argv) == 0
    texts = make_texts(10, seed=5)["text"].tolist()
    onnx_clf = load(out)
    torch_clf = Classifier(run / "run", precision="fp32")
    a, b = onnx_clf.logits(texts), torch_clf.logits(texts)
    if quantize is None:
        assert np.allclose(a, b, atol=1e-4)
    else:
        assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9
    assert main(["predict", "--model", str(out), "--data", str(run / "test.csv"), "--output", str(run / f"pred-{quantize}.csv")]) == 0
    assert len(pd.read_csv(run / f"pred-{quantize}.csv")) == 30


def test_export_refuses_overwrite_and_bad_flags(run, capsys):
    (run / "exists").mkdir(exist_ok=True)
    assert main(["export", "--model", str(run / "run"), "--output", str(run / "exists")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "--model", str(run / "run"), "--output", str(run / "x"), "--quantize", "int8"]) == 2
    assert "needs --format onnx" in capsys.readouterr().err
