"""Streamed prediction: a file read, predicted and written chunk by chunk gives the same output, row for row."""

import pandas as pd
import pytest

from textlora.prediction import predict

from .conftest import make_texts


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
        assert streamed.read_text() == whole.read_text()
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
        outs.append((out.read_text(), json.loads(out.with_suffix(".report.json").read_text())))
    assert outs[0] == outs[1] == outs[2]
    kept = pd.read_csv(tmp_path / "p4.csv")
    assert len(kept) > 0 and not {"u3", "u17"} & set(kept["id"]) and outs[0][1]["excluded"] == 2
    assert kept["id"].tolist() == sorted(kept["id"], key=lambda s: int(s[1:]))  # input order
