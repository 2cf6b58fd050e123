"""The evaluate verb: a run's metrics on labelled files (see textlora.metrics), with the accuracy's
standard error (near-copy texts one unit), printed and saved with confusion matrices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from textlora.errors import UserError
from textlora.metrics import metrics_from_logits, predicted, with_standard_error
from textlora.runtime import BATCH_SIZE


def plot_confusion(metrics: dict, path) -> None:
    """Save the confusion matrix as a PNG (to a path or a binary file object), counts in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics["confusion_matrix"])
    names = metrics["label_names"]
    size = max(4.0, 0.6 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > threshold else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def format_metrics(metrics: dict) -> str:
    multi = "micro_f1" in metrics
    se = f" +- {metrics['accuracy_se']:.4f} SE" if "accuracy_se" in metrics else ""
    near = metrics.get("near_copies")
    lines = [
        f"accuracy  {metrics['accuracy']:.4f}{se}" + ("   (subset accuracy: every label of a row right)" if multi else ""),
        *(
            [
                f"          ({near['rows']} of {metrics['n']} rows are near-copies in {near['groups']} group{'s' * (near['groups'] > 1)}; each group is one unit in the SE)"
            ]
            if near and near["groups"]
            else []
        ),
        *([f"micro-F1  {metrics['micro_f1']:.4f}"] if multi else []),
        f"macro-F1  {metrics['macro_f1']:.4f}   (n={metrics['n']})",
        "",
        f"{'class':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}",
    ]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<20} {m['precision']:>9.4f} {m['recall']:>9.4f} {m['f1']:>9.4f} {m['support']:>8}")
    return "\n".join(lines)


def read_labelled(run, path: str, text_column: str | None = None, label_column: str | None = None, pair_column: str | None = None):
    """(rows, truths) of a labelled file as the run reads one: its columns unless others are named,
    and the labels encoded as the run's classes. evaluate and report both read through here."""
    from textlora.data import encode_labels, read_options, read_texts

    data = run.config.data
    opts = {**read_options(data), "pair_column": pair_column or data.text_pair_column}
    frame = read_texts(path, text_column or data.text_column, label_column or data.label_column, **opts)
    return frame, encode_labels(frame, run.labels)


def evaluate(
    model: str,
    data: str | list[str],
    output_dir: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = BATCH_SIZE,
    overwrite: bool = False,
    pair_column: str | None = None,
) -> dict:
    """Metrics of a trained run on one or more labelled files (e.g. in-domain dev and a target sample).

    Args:
        model: run directory written by ``textlora train``.
        data: labelled CSV/TSV/JSONL/Parquet file(s); labels are class indices or label names.
        output_dir: if given, write metrics.json, confusion_matrix.json and confusion_matrix.png there
            (with several files: metrics.json maps each file to its metrics, and the confusion
            matrices are named after each file's stem).
        text_column: text column (default: the one the model was trained with).
        label_column: label column (default: the one the model was trained with).
        pair_column: second text column of a sentence-pair run (default: the one it was trained with).
        batch_size: texts per forward pass.
        overwrite: replace existing files in ``output_dir``.

    Returns:
        The metrics for a single file; for several, ``{file: metrics}``. Each holds ``accuracy_se``,
        the accuracy's standard error with near-copy texts counted as one unit, and ``near_copies``
        (see ``textlora.metrics.with_standard_error``).
    """
    from textlora.fsutil import atomic_path, check_output
    from textlora.prediction import load
    from textlora.run import as_run

    files = [data] if isinstance(data, str) else list(data)
    if not files:
        raise UserError("--data: no file given")
    stems = [""] if len(files) == 1 else [f".{Path(f).stem}" for f in files]
    if len(set(stems)) != len(stems):
        raise UserError(f"--data: two files share a name ({', '.join(files)}); their outputs would collide")
    names = ["metrics.json"] + [f"confusion_matrix{s}.{ext}" for s in stems for ext in ("json", "png")]
    if output_dir is not None:
        clash = lambda out: next((n for n in names if (out / n).exists()), None)  # noqa: E731
        out = check_output(output_dir, flag="--output-dir", overwrite=overwrite, folder=True, taken=clash)
    run = as_run(model)  # check every input before loading any weights
    labelled = [read_labelled(run, f, text_column, label_column, pair_column) for f in files]
    clf = load(run, batch_size=batch_size, cached=True)
    results = {}
    for f, (frame, y_true) in zip(files, labelled):
        logits = clf.logits(frame.texts, progress=len(frame.texts) > 2000)
        pred = predicted(logits, np.asarray(y_true).ndim == 2)
        correct = (pred == (np.asarray(y_true) > 0.5)).all(axis=1) if pred.ndim == 2 else pred == np.asarray(y_true)
        results[f] = {**with_standard_error(metrics_from_logits(y_true, logits, clf.label_names), correct, frame.texts), "data": str(f)}
    if output_dir is not None:
        out.mkdir(exist_ok=True)
        with atomic_path(out / "metrics.json") as tmp:
            tmp.write_text(json.dumps(results[files[0]] if len(files) == 1 else results, indent=2))
        for stem, m in zip(stems, results.values()):
            if "confusion_matrix" not in m:  # multi-label: per-class scores only
                continue
            with atomic_path(out / f"confusion_matrix{stem}.json") as tmp:
                tmp.write_text(json.dumps({"label_names": m["label_names"], "matrix": m["confusion_matrix"]}, indent=2))
            with atomic_path(out / f"confusion_matrix{stem}.png") as tmp:
                plot_confusion(m, tmp)
    return results[files[0]] if len(files) == 1 else results
