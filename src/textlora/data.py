"""Reading labelled and unlabelled text files, checking them, splitting and filtering them.

Sources: local CSV, TSV, JSONL and Parquet files, and Hugging Face hub datasets written
``hf:NAME[:SPLIT]`` (needs the ``datasets`` package and a network). Every problem a user can
cause is a :class:`UserError` that names the file, the column or the row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from textlora.errors import UserError

MAX_CHARS = 20_000  # longer texts are cut here before tokenizing (the tokenizer truncates further)


@dataclass
class TextFrame:
    """Texts (and labels, when the file has them) read from one source."""

    source: str
    texts: list  # str each, or (text, pair text) tuples when read with a pair column
    labels: list | None  # raw label values as read: all int or all str (multi-label: a list of them per row)
    ids: list | None  # the `id` column, if present
    rows: list[int]  # the row number of each entry in the source file (1-based, header = row 1)


def read_table(source: str) -> pd.DataFrame:
    """A file (or ``hf:`` dataset) as a table of its columns; every problem is one line naming the file."""
    if source.startswith("hf:"):
        return _read_hub(source)
    tables = list(read_table_chunks(source, None))
    return tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)


def read_table_chunks(source: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """``source`` as consecutive tables of at most ``chunk_rows`` rows (None: one table), read as they are
    needed: CSV/TSV and JSONL are parsed chunk by chunk and Parquet batch by batch, so memory stays flat.
    ``.json`` files and hub datasets are read whole and then sliced. Every problem is one line naming the file."""
    if source.startswith("hf:"):
        df = _read_hub(source)
        yield from (df.iloc[i : i + chunk_rows] for i in range(0, len(df), chunk_rows)) if chunk_rows else [df]
        return
    path = Path(source)
    if not path.exists():
        raise UserError(f"{source}: file not found")
    if path.is_dir():
        raise UserError(f"{source}: is a directory, expected a CSV, TSV, JSONL or Parquet file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet"):
        raise UserError(f"{source}: unknown file type '{suffix}', expected .csv, .tsv, .jsonl or .parquet")
    header = None
    try:
        for df in _parse(path, suffix, chunk_rows):
            cols = [str(c) for c in df.columns]
            if header is None:
                header = _raw_header(path) if suffix in (".csv", ".tsv", ".txt") else cols
                dupes = sorted({c for c in header if header.count(c) > 1})
                if dupes:
                    raise UserError(f"{source}: duplicate column name {', '.join(repr(d) for d in dupes)} in the header")
            df.columns = cols
            yield df
    except UserError:
        raise
    except PermissionError:
        raise UserError(f"{source}: permission denied") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{source}: not valid UTF-8 (byte {e.start})") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{source}: file is empty") from None
    except (ValueError, pd.errors.ParserError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{source}: cannot be parsed ({first})") from None


def _parse(path: Path, suffix: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    if suffix in (".csv", ".tsv", ".txt"):
        kw = dict(sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False, encoding="utf-8-sig")  # utf-8-sig: a byte-order mark is fine
        if chunk_rows is None:
            yield pd.read_csv(path, **kw)
            return
        with pd.read_csv(path, chunksize=chunk_rows, **kw) as reader:
            empty = True
            for df in reader:
                empty = False
                yield df
            if empty:  # a header alone: one empty table, so that callers see the columns
                yield pd.read_csv(path, nrows=0, **kw)
    elif suffix == ".jsonl" and chunk_rows is not None:
        with pd.read_json(path, lines=True, dtype=False, encoding="utf-8", chunksize=chunk_rows) as reader:
            yield from reader
    elif suffix in (".jsonl", ".json"):
        df = pd.read_json(path, lines=suffix == ".jsonl", dtype=False, encoding="utf-8")
        yield from (df.iloc[i : i + chunk_rows] for i in range(0, len(df), chunk_rows)) if chunk_rows else [df]
    elif chunk_rows is None:
        yield pd.read_parquet(path)
    else:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()


def _raw_header(path: Path) -> list[str]:
    """The header row as written (pandas silently renames a duplicate 'a' to 'a.1')."""
    import csv

    with open(path, encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","), [])


def _read_hub(source: str) -> pd.DataFrame:
    parts = source[3:].split(":")
    name, split = parts[0], parts[1] if len(parts) > 1 else "train"
    try:
        import datasets
    except ImportError:
        raise UserError(f"{source}: hub datasets need the 'datasets' package (pip install datasets)") from None
    try:
        return datasets.load_dataset(name, split=split).to_pandas()
    except Exception as e:  # network, unknown name, unknown split
        raise UserError(f"{source}: cannot load from the Hugging Face hub ({type(e).__name__}: {str(e)[:200]})") from None


def _row_of(source: str, i: int) -> int:
    """1-based row number in the source file for the i-th record (header is row 1 for tables)."""
    return i + 2 if not source.startswith("hf:") and Path(source).suffix.lower() in (".csv", ".tsv", ".txt") else i + 1


def _is_list_text(value) -> bool:
    return isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]")


def _parse_label_list(value, source: str, row: int, column: str, separator: str | None) -> list:
    """A multi-label row's labels: a list (JSONL, Parquet), a JSON list in text, or text split on ``separator``."""
    import json

    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
    elif isinstance(value, str) and separator is not None:
        items = [x.strip() for x in value.split(separator) if x.strip()]
    elif _is_list_text(value):
        try:
            items = json.loads(value)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}: row {row}: label list {value[:60]!r} in column '{column}' is not valid JSON ({e.msg})") from None
    elif isinstance(value, str) and value.strip().startswith("["):
        raise UserError(f"{source}: row {row}: label list {value[:60]!r} in column '{column}' is not valid JSON (no closing ']')")
    else:
        items = [value]
    if not items:
        raise UserError(f"{source}: row {row}: empty label list in column '{column}'")
    return sorted({_parse_label(v, source, row, column) for v in items}, key=str)


def _parse_label(value, source: str, row: int, column: str):
    if isinstance(value, (list, tuple, np.ndarray)) or _is_list_text(value):
        raise UserError(
            f"{source}: row {row}: label {str(list(value) if not isinstance(value, str) else value)[:60]} in column '{column}' is a list; set data.multi_label: true for multi-label data"
        )
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise UserError(f"{source}: row {row}: empty label in column '{column}'")
    if isinstance(value, (bool, np.bool_)):
        raise UserError(f"{source}: row {row}: label {value!r} is neither an integer nor a name")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if float(value).is_integer():
            return int(value)
        raise UserError(f"{source}: row {row}: label {value!r} is not an integer")
    text = str(value).strip()
    if not text or text.lower() == "nan":
        raise UserError(f"{source}: row {row}: empty label in column '{column}'")
    if text.lstrip("-").isdigit():
        return int(text)
    return text


def _text(value, source: str, i: int, column: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
        raise UserError(f"{source}: row {_row_of(source, i)}: empty text in column '{column}'")
    return str(value)[:MAX_CHARS]


def read_texts(
    source: str,
    text_column: str = "text",
    label_column: str | None = "label",
    *,
    require_labels: bool = True,
    pair_column: str | None = None,
    multi_label: bool = False,
    label_separator: str | None = None,
    table: pd.DataFrame | None = None,
    offset: int = 0,
) -> TextFrame:
    """Read a file of texts (and labels). Labels are read if the column exists, required if asked.

    With ``pair_column``, each input is the pair (text, pair text), as a tuple. With ``multi_label``,
    each label is a list of labels (see :func:`_parse_label_list`). ``table`` is ``source`` already
    read with :func:`read_table` (so that a caller that needs its other columns reads it once), or
    one chunk of it whose first row is the file's ``offset``-th (row numbers then count from the file's start).
    """
    df = read_table(source) if table is None else table
    if len(df) == 0 and offset == 0:
        raise UserError(f"{source}: no rows (only a header, or empty)")
    if text_column not in df.columns:
        raise UserError(f"{source}: missing text column '{text_column}' (found: {', '.join(df.columns)})")
    has_labels = label_column is not None and label_column in df.columns
    if require_labels and not has_labels:
        raise UserError(f"{source}: missing label column '{label_column}' (found: {', '.join(df.columns)})")
    if pair_column is not None and pair_column not in df.columns:
        raise UserError(f"{source}: missing pair column '{pair_column}' (data.text_pair_column; found: {', '.join(df.columns)})")
    texts = [_text(t, source, i, text_column) for i, t in enumerate(df[text_column].tolist(), offset)]
    if pair_column is not None:  # each input is (text, pair): tokenized as a pair
        texts = [(t, _text(p, source, i, pair_column)) for i, (t, p) in enumerate(zip(texts, df[pair_column].tolist()), offset)]
    labels = None
    if has_labels:
        if multi_label:
            labels = [_parse_label_list(v, source, _row_of(source, i), label_column, label_separator) for i, v in enumerate(df[label_column].tolist(), offset)]
        else:
            labels = [_parse_label(v, source, _row_of(source, i), label_column) for i, v in enumerate(df[label_column].tolist(), offset)]
        flat = [(i, v) for i, row in enumerate(labels) for v in (row if multi_label else [row])]
        if len({type(v) for _, v in flat}) > 1:
            first_str = next((i, v) for i, v in flat if isinstance(v, str))
            first_int = next((i, v) for i, v in flat if isinstance(v, int))
            raise UserError(
                f"{source}: column '{label_column}' mixes integer and string labels "
                f"(row {_row_of(source, offset + first_int[0])}: {first_int[1]!r}, row {_row_of(source, offset + first_str[0])}: {first_str[1]!r})"
            )
    ids = df["id"].tolist() if "id" in df.columns else None
    return TextFrame(source, texts, labels, ids, [_row_of(source, i) for i in range(offset, offset + len(df))])


def read_text_chunks(source: str, text_column: str = "text", *, chunk_rows: int, pair_column: str | None = None) -> Iterator[TextFrame]:
    """The texts (and ids) of ``source``, ``chunk_rows`` rows at a time, checked as :func:`read_texts` checks
    them (row numbers count from the file's start): for streaming prediction at any input size."""
    offset = 0
    for table in read_table_chunks(source, chunk_rows):
        if len(table) == 0 and offset == 0 and text_column in table.columns:
            raise UserError(f"{source}: no rows (only a header, or empty)")
        frame = read_texts(source, text_column, None, require_labels=False, pair_column=pair_column, table=table, offset=offset)
        offset += len(table)
        if frame.texts:
            yield frame
    if offset == 0:
        raise UserError(f"{source}: no rows (only a header, or empty)")


def same_text(text: str) -> str:
    """A text with its white space folded: the key under which two files hold "the same text"."""
    return " ".join(text.split())


def texts_in(files: list[str], text_column: str = "text") -> set[str]:
    """The texts of ``files`` (as :func:`same_text` keys), e.g. eval sets that must never be trained on."""
    return {same_text(t) for f in files for t in read_texts(f, text_column, None, require_labels=False).texts}


def label_names_for(labels: list, given: list[str] | None, source: str) -> list[str]:
    """The ordered label names: given ones, else 0..max for int labels, else sorted strings."""
    if labels and isinstance(labels[0], list):  # multi-label rows
        labels = [v for row in labels for v in row]
    if given:
        if len(set(given)) != len(given):
            raise UserError(f"config: data.label_names: duplicate names in {given}")
        if isinstance(labels[0], int):
            bad = [v for v in labels if not 0 <= v < len(given)]
            if bad:
                raise UserError(f"{source}: label {bad[0]} outside 0..{len(given) - 1} (data.label_names has {len(given)} names)")
        return list(given)
    if isinstance(labels[0], int):
        if min(labels) < 0:
            raise UserError(f"{source}: negative label {min(labels)}; integer labels must be 0..K-1")
        return [str(i) for i in range(max(labels) + 1)]
    return sorted(set(labels))


def encode_labels(frame: TextFrame, names: list[str]) -> np.ndarray:
    """Map raw labels to class indices; a label outside ``names`` is an error naming the row.

    Multi-label rows become a (rows, classes) float32 0/1 matrix.
    """
    index = {n: i for i, n in enumerate(names)}

    def class_of(v, row: int) -> int:
        if isinstance(v, int):
            if not 0 <= v < len(names):
                raise UserError(f"{frame.source}: row {row}: label {v} is not a known class (expected 0..{len(names) - 1})")
            return v
        if v in index:
            return index[v]
        raise UserError(f"{frame.source}: row {row}: label {v!r} is not a known class (known: {', '.join(names)})")

    if frame.labels and isinstance(frame.labels[0], list):
        out = np.zeros((len(frame.labels), len(names)), dtype=np.float32)
        for i, labels in enumerate(frame.labels):
            out[i, [class_of(v, frame.rows[i]) for v in labels]] = 1.0
        return out
    return np.array([class_of(v, row) for v, row in zip(frame.labels, frame.rows)], dtype=np.int64)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split; returns (train_idx, val_idx), each sorted. Each class gives >= 1 row to each side."""
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    classes = np.unique(labels)
    if len(classes) < 2:
        raise UserError(f"{source}: only one class ({classes[0]}) in the training data; need at least 2")
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            raise UserError(f"{source}: class {c} has {len(idx)} row; the validation split needs at least 2 rows a class")
        idx = rng.permutation(idx)
        n_val = min(max(1, round(len(idx) * val_fraction)), len(idx) - 1)
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))


def word_filter(texts: list[str], min_words: int, max_words: int | None) -> np.ndarray:
    """Boolean mask of texts whose word count lies within [min_words, max_words]."""
    counts = np.array([len(t.split()) if isinstance(t, str) else sum(len(x.split()) for x in t) for t in texts])
    keep = counts >= min_words
    if max_words is not None:
        keep &= counts <= max_words
    return keep


@dataclass
class Splits:
    train_texts: list[str]
    train_labels: np.ndarray
    val_texts: list[str]
    val_labels: np.ndarray
    label_names: list[str]
    counts: dict  # rows read, filtered, extra, per split: for the run's metrics and model card
    eval_sets: dict = field(default_factory=dict)  # name -> (texts, labels): evaluated beside the dev split, never trained on

    @property
    def scored_rows(self) -> int:
        """Rows scored at every evaluation: the dev split and the eval sets."""
        return len(self.val_texts) + sum(len(texts) for texts, _ in self.eval_sets.values())


def read_options(data_cfg) -> dict:
    """The :func:`read_texts` options a config's data section sets: pair column, multi-label parsing."""
    return {"pair_column": data_cfg.text_pair_column, "multi_label": data_cfg.multi_label, "label_separator": data_cfg.label_separator}


def load_splits(data_cfg, seed: int) -> Splits:
    """Read the training file, split off a stratified dev set, then add extra rows to train only."""
    if not data_cfg.train:
        raise UserError("config: data.train: no training file given; set it to a labelled CSV, TSV, JSONL or Parquet file")
    kw = read_options(data_cfg)
    main = read_texts(data_cfg.train, data_cfg.text_column, data_cfg.label_column, **kw)
    names = label_names_for(main.labels, data_cfg.label_names, data_cfg.train)
    y = encode_labels(main, names)
    if data_cfg.dev:  # an explicit dev file: every row of `train` trains
        dev = read_texts(data_cfg.dev, data_cfg.text_column, data_cfg.label_column, **kw)
        val_texts, val_labels = dev.texts, encode_labels(dev, names)
        tr = np.arange(len(y))
    else:
        strata = y.argmax(axis=1) if y.ndim == 2 else y  # multi-label: stratified by each row's first class
        tr, va = stratified_split(strata, data_cfg.val_fraction, seed, data_cfg.train)
        val_texts, val_labels = [main.texts[i] for i in va], y[va]
    train_texts = [main.texts[i] for i in tr]
    train_labels = [y[tr]]
    extra_rows = 0
    for source in data_cfg.extra_train:
        extra = read_texts(source, data_cfg.text_column, data_cfg.label_column, **kw)
        # names always match by name; integers are class indices only where the classes are numbered
        first_extra, first_main = (extra.labels[0][0], main.labels[0][0]) if data_cfg.multi_label else (extra.labels[0], main.labels[0])
        if isinstance(first_extra, int) and not isinstance(first_main, int) and not data_cfg.label_names:
            raise UserError(f"{source}: labels are {type(first_extra).__name__}s but {data_cfg.train} has {type(first_main).__name__}s")
        train_texts += extra.texts
        train_labels.append(encode_labels(extra, names))
        extra_rows += len(extra.texts)
    train_labels = np.concatenate(train_labels)
    keep = word_filter(train_texts, data_cfg.min_words, data_cfg.max_words)
    if not keep.any():
        raise UserError(f"config: data.min_words/max_words ({data_cfg.min_words}..{data_cfg.max_words}) remove every training row")
    train_texts = [t for t, k in zip(train_texts, keep) if k]
    train_labels = train_labels[keep]
    counts = {
        "rows_read": len(main.texts),
        "extra_rows": extra_rows,
        "filtered_out": int((~keep).sum()),
        "train_rows": len(train_texts),
        "val_rows": len(val_texts),
    }
    eval_sets = {}
    for name, source in data_cfg.eval_sets.items():
        frame = read_texts(source, data_cfg.text_column, data_cfg.label_column, **kw)
        eval_sets[name] = (frame.texts, encode_labels(frame, names))
        counts[f"eval_rows.{name}"] = len(frame.texts)
    return Splits(train_texts, train_labels, val_texts, val_labels, names, counts, eval_sets)


def dev_table(texts: list, labels: np.ndarray, data_cfg, label_names: list[str]) -> pd.DataFrame:
    """Rows as a table in the training file's columns (the run's dev.csv): pairs in two columns."""
    if texts and isinstance(texts[0], tuple):
        table = {data_cfg.text_column: [a for a, _ in texts], data_cfg.text_pair_column: [b for _, b in texts]}
    else:
        table = {data_cfg.text_column: list(texts)}
    if labels.ndim == 2:  # multi-label: the names of each row's labels, as a JSON list
        import json

        labels = [json.dumps([label_names[j] for j in np.flatnonzero(row)]) for row in labels]
    return pd.DataFrame({**table, data_cfg.label_column: labels})
