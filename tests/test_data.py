import numpy as np
import pandas as pd
import pytest

from textlora.config import DataConfig
from textlora.data import encode_labels, label_names_for, load_splits, read_texts, stratified_split
from textlora.errors import UserError

from .conftest import make_texts


def test_csv_quirks_are_handled(tmp_path):
    """BOM, CRLF, embedded newlines and quotes are read, not rejected."""
    path = tmp_path / "q.csv"
    path.write_bytes('\ufefftext,label\r\n"He said ""hi""\r\nthen left",1\r\nplain,0\r\n'.encode())
    frame = read_texts(str(path))
    assert frame.texts == ['He said "hi"\r\nthen left', "plain"]
    assert frame.labels == [1, 0]


@pytest.mark.parametrize("suffix", ["tsv", "jsonl", "parquet"])
def test_other_formats(tmp_path, suffix):
    df = pd.DataFrame({"sentence": ["a b", "c d"], "y": ["pos", "neg"]})
    path = tmp_path / f"f.{suffix}"
    if suffix == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif suffix == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    frame = read_texts(str(path), "sentence", "y")
    assert frame.texts == ["a b", "c d"] and frame.labels == ["pos", "neg"]
    assert label_names_for(frame.labels, None, str(path)) == ["neg", "pos"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "file is empty"),
        ("text,label\n", "no rows"),
        ("words,label\na,1\n", "missing text column 'text'"),
        ("text,lab\na,1\n", "missing label column 'label'"),
        ("text,label\na,1\n   ,0\n", "row 3: empty text"),
        ("text,label\na,1\nb,\n", "row 3: empty label"),
        ("text,label\na,1\nb,sports\n", "mixes integer and string labels"),
        ("text,text,label\na,b,1\n", "duplicate column name 'text'"),
    ],
)
def test_bad_files_name_file_and_row(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as e:
        read_texts(str(path))
    assert str(path) in str(e.value)


def test_invalid_utf8(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\n\xff\xfe broken,1\n")
    with pytest.raises(UserError, match="not valid UTF-8"):
        read_texts(str(path))


def test_unknown_label_names_the_row(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("text,label\na,0\nb,7\n")
    frame = read_texts(str(path))
    with pytest.raises(UserError, match="row 3: label 7 is not a known class"):
        encode_labels(frame, ["x", "y"])


def test_stratified_split_is_seeded_disjoint_and_balanced():
    y = np.repeat([0, 1, 2], [100, 50, 30])
    tr, va = stratified_split(y, 0.2, seed=3, source="s")
    tr2, va2 = stratified_split(y, 0.2, seed=3, source="s")
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert not set(tr) & set(va) and len(tr) + len(va) == len(y)
    assert np.bincount(y[va]).tolist() == [20, 10, 6]
    _, va3 = stratified_split(y, 0.2, seed=4, source="s")
    assert not np.array_equal(va, va3)


def test_single_class_and_tiny_class_are_refused():
    with pytest.raises(UserError, match="only one class"):
        stratified_split(np.zeros(10, dtype=int), 0.2, 0, "f.csv")
    with pytest.raises(UserError, match="class 1 has 1 row"):
        stratified_split(np.array([0, 0, 0, 1]), 0.2, 0, "f.csv")


def test_extra_rows_go_to_train_only_and_filter_applies_to_train(tmp_path):
    make_texts(20, seed=1).to_csv(tmp_path / "train.csv", index=False)
    extra = pd.DataFrame({"text": [f"synthetic row {i} goal match team" for i in range(30)], "label": 0})
    extra.to_csv(tmp_path / "extra.csv", index=False)
    cfg = DataConfig(train=str(tmp_path / "train.csv"), extra_train=[str(tmp_path / "extra.csv")], val_fraction=0.25, min_words=6)
    splits = load_splits(cfg, seed=0)
    assert not any(t.startswith("synthetic") for t in splits.val_texts)
    assert sum(t.startswith("synthetic") for t in splits.train_texts) == 30
    assert all(len(t.split()) >= 6 for t in splits.train_texts)
    assert any(len(t.split()) < 6 for t in splits.val_texts)  # the dev split is not filtered
    # the dev split does not depend on the extra rows
    plain = load_splits(DataConfig(train=str(tmp_path / "train.csv"), val_fraction=0.25), seed=0)
    assert plain.val_texts == splits.val_texts


def test_explicit_dev_file_replaces_the_split(tmp_path):
    make_texts(20, seed=1).to_csv(tmp_path / "train.csv", index=False)
    make_texts(4, seed=2).to_csv(tmp_path / "dev.csv", index=False)
    splits = load_splits(DataConfig(train=str(tmp_path / "train.csv"), dev=str(tmp_path / "dev.csv"), label_names=["sports", "business", "science"]), seed=0)
    assert len(splits.train_texts) == 60 and len(splits.val_texts) == 12
    assert splits.val_texts == pd.read_csv(tmp_path / "dev.csv")["text"].tolist()


def test_head_tail_truncation_keeps_both_ends_of_a_long_text(tmp_path):
    """model.truncation: head_tail keeps the first quarter and the end of a text that is too long,
    with the model's special tokens around it; texts that fit are tokenized as with head."""
    from textlora.runtime import encode_texts

    from .conftest import make_tokenizer

    tok = make_tokenizer(tmp_path / "tok")
    words = [f"{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    long_text, short_text = " ".join(words), "a b c"
    head = encode_texts(tok, [long_text, short_text], 10)
    both = encode_texts(tok, [long_text, short_text], 10, truncation="head_tail")
    cls, sep = tok.cls_token_id, tok.sep_token_id
    assert head[0] == [cls, *tok.convert_tokens_to_ids(list("abcdefgh")), sep]
    assert both[0] == [cls, *tok.convert_tokens_to_ids(list("ab") + list("uvwxyz")), sep]
    assert both[1] == head[1] == [cls, *tok.convert_tokens_to_ids(list("abc")), sep]
    with pytest.raises(UserError, match="model.truncation"):
        encode_texts(tok, [long_text], 10, truncation="middle")


def test_measuring_long_texts_does_not_warn_of_indexing_errors(tmp_path):
    """head_tail truncation and the length measures tokenize whole texts on purpose: transformers
    must not warn that running them "will result in indexing errors" (they never run untruncated)."""
    from textlora.resolve import generation_lengths, length_from_percentile
    from textlora.runtime import encode_texts

    from .conftest import make_tokenizer

    tok = make_tokenizer(tmp_path / "tok")
    tok.model_max_length = 12
    long_text = " ".join("abcdefghijklmnopqrstuvwxyz")
    encode_texts(tok, [long_text], 10, truncation="head_tail")
    length_from_percentile(tok, [long_text] * 3, 12, 90)
    generation_lengths(tok, [long_text] * 3, 12)
    assert "sequence-length-is-longer-than-the-specified-maximum" not in tok.deprecation_warnings


def test_a_run_trained_with_head_tail_predicts_with_it(tmp_path, tiny_bert):
    """model.truncation is saved with the run and used again at prediction: a long text is predicted
    exactly as the words head_tail keeps of it (and the head's cut would differ)."""
    from textlora.cli import main
    from textlora.prediction import Classifier

    from .conftest import write_config

    make_texts(20, seed=1).to_csv(tmp_path / "train.csv", index=False)
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, tmp_path / "train.csv", tmp_path / "run", train={"epochs": 1})
    assert main(["train", "--config", str(cfg), "--model.max_length", "10", "--model.truncation", "head_tail"]) == 0
    clf = Classifier(tmp_path / "run", precision="fp32")
    assert clf.config.model.truncation == "head_tail"
    words = "goal match team coach the a of in on and stock market price profit bank shares".split()
    kept = words[:2] + words[-6:]  # 8 words fit beside [CLS] and [SEP]: a quarter from the start, the rest from the end
    long_text, kept_text, head_text = " ".join(words), " ".join(kept), " ".join(words[:8])
    logits = clf.logits([long_text, kept_text, head_text])
    assert np.array_equal(logits[0], logits[1])
    assert not np.allclose(logits[0], logits[2])
