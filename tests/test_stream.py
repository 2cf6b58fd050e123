"""Streamed prediction: a file read, predicted and written chunk by chunk gives the same output, row for row.

"The same" is: the same rows, IDs, labels and selections, and probabilities equal to fp32 rounding.
The chunk decides which texts share a batch and so each batch's padded shape; in fp32 a matmul of
another shape may sum in another order, and on an Intel Xeon without bf16 (b84de14) a probability
moved by ~1e-8, which flips the 6th printed decimal of one value in a hundred.
"""

import numpy as np
import pandas as pd
import pytest

from textlora.prediction import predict

from .conftest import make_texts

FP32 = 2e-6  # a printed probability (6 decimals) may differ by one in its last place, plus fp32 noise


def assert_same_rows(a, b):
    """Two CSV outputs hold the same rows: every column equal, float columns to within FP32."""
    x, y = pd.read_csv(a, keep_default_na=False), pd.read_csv(b, keep_default_na=False)
    assert list(x.columns) == list(y.columns) and len(x) == len(y)
    for col in x.columns:
        if x[col].dtype.kind == "f":
            assert np.allclose(x[col], y[col], rtol=0, atol=FP32), col
        else:
            assert x[col].tolist() == y[col].tolist(), col


def assert_same_report(a, b):
    """Two reports are equal, their float values to within fp32 rounding."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            assert_same_report(a[k], b[k])
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=FP32)
    else:
        assert a == b


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".tsv"])
def test_streamed_predict_equals_the_whole_file(trained, tmp_path, suffix):
    df = make_texts(13, seed=9)  # 39 rows, no id column: IDs are the row index across chunks
    df["text"] = df["text"] + [" " + "goal " * (i % 7) for i in range(len(df))]  # lengths differ, so sorting matters
    src = tmp_path / f"texts{suffix}"
    if suffix == ".csv":
        df.to_csv(src, index=False)
    elif suffix == ".tsv":
        df.to_csv(src, sep="\t", index=False)
    elif suffix == ".jsonl":
        df.to_json(src, orient="records", lines=True)
    else:
        df.to_parquet(src, index=False)
    model = str(trained / "run")
    whole = predict(model, data=str(src), output=str(tmp_path / "whole.csv"), with_probs=True, chunk_rows=10_000)
    for chunk in (1, 5, 16):
        streamed = predict(model, data=str(src), output=str(tmp_path / f"s{chunk}.csv"), with_probs=True, chunk_rows=chunk)
        assert_same_rows(streamed, whole)
    out = pd.read_csv(whole)
    assert out["ID"].tolist() == list(range(39)) and len(out) == 39


def test_streamed_predict_names_the_row_of_a_bad_text_in_a_later_chunk(trained, tmp_path):
    from textlora.errors import UserError

    df = make_texts(4, seed=9).drop(columns=["label"])
    df.insert(0, "id", range(len(df)))
    df.loc[9, "text"] = "   "  # file row 11 (the header is row 1): in the third chunk of 4
    src = tmp_path / "bad.csv"
    df.to_csv(src, index=False)
    (tmp_path / "out.csv").write_text("kept\n")
    with pytest.raises(UserError, match=r"bad.csv: row 11: empty text"):
        predict(str(trained / "run"), data=str(src), output=str(tmp_path / "out.csv"), overwrite=True, chunk_rows=4)
    assert (tmp_path / "out.csv").read_text() == "kept\n"  # the previous output is intact


def test_a_header_alone_is_no_rows(trained, tmp_path):
    from textlora.errors import UserError

    (tmp_path / "h.csv").write_text("id,text\n")
    with pytest.raises(UserError, match="no rows"):
        predict(str(trained / "run"), data=str(tmp_path / "h.csv"), output=str(tmp_path / "o.csv"), chunk_rows=4)


def test_streamed_pseudolabel_equals_one_chunk(trained, tmp_path):
    import json

    from textlora.pseudolabel import pseudolabel

    df = make_texts(10, seed=11).drop(columns=["label"])
    df.insert(0, "id", [f"u{i}" for i in range(len(df))])
    src = tmp_path / "u.csv"
    df.to_csv(src, index=False)
    exclude = tmp_path / "ex.csv"
    df.iloc[[3, 17]][["text"]].to_csv(exclude, index=False)
    outs = []
    for chunk in (10_000, 4, 1):
        out = pseudolabel(
            str(trained / "run"), str(src), str(tmp_path / f"p{chunk}.csv"), min_confidence=0.4, balance=True, exclude=[str(exclude)], chunk_rows=chunk
        )
        outs.append((out, json.loads(out.with_suffix(".report.json").read_text())))
    for out, report in outs[1:]:
        assert_same_rows(out, outs[0][0])
        assert_same_report(report, outs[0][1])
    kept = pd.read_csv(tmp_path / "p4.csv")
    assert len(kept) > 0 and not {"u3", "u17"} & set(kept["id"]) and outs[0][1]["excluded"] == 2
    assert kept["id"].tolist() == sorted(kept["id"], key=lambda s: int(s[1:]))  # input order
