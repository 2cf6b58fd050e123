"""The HTML report of a run: curves, confusion matrix, per-class scores, mistakes, data and timings."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _shown(text) -> str:
    """A text as the report shows it; a sentence pair as ``text || pair``."""
    return text if isinstance(text, str) else " || ".join(text)


# --- the HTML report ----------------------------------------------------------------------


def _png(fig) -> str:
    import base64
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _curves(metrics: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    log, hist = metrics.get("train_log", []), metrics.get("history", [])
    if log:
        a.plot([e["step"] for e in log], [e["loss"] for e in log], label="train loss", color="#2f5bd3")
    if hist:
        a.plot([h["step"] for h in hist], [h["loss"] for h in hist], "o-", label="dev loss", color="#d35f2f")
        b.plot([h["step"] for h in hist], [h["accuracy"] for h in hist], "o-", label="dev accuracy", color="#1a8f4c")
        b.plot([h["step"] for h in hist], [h["macro_f1"] for h in hist], "s--", label="dev macro-F1", color="#7a3fb0")
    for ax, title in ((a, "loss"), (b, "dev metrics")):
        ax.set_xlabel("optimizer step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.legend()
    return _png(fig)


def _confusion_png(metrics: dict) -> str:
    import base64
    import io

    from textlora.evaluation import plot_confusion

    buf = io.BytesIO()
    plot_confusion(metrics, buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _table(headers: list[str], rows: list[list]) -> str:
    from html import escape

    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


REPORT_CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2433}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde2ea;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}td,th{border:1px solid #dde2ea;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f9}img{max-width:100%}.kpi{display:flex;gap:1rem;flex-wrap:wrap}.kpi div{background:#f3f5f9;border-radius:8px;padding:.6rem 1rem}
.kpi b{display:block;font-size:1.3rem}pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:.8rem}
"""


def build_report(model: str, data: str | None = None, output: str | None = None, top_mistakes: int = 15, overwrite: bool = False) -> str:
    """Write a self-contained HTML report of a run: config and parameters, curves, confusion matrix,
    per-class scores, the most confident mistakes, extra (synthetic) rows, and timings.

    Args:
        model: run directory.
        data: labelled file to analyse (default: the run's dev split, RUN/dev.csv).
        output: HTML file to write (default: RUN/report.html, which the model card links to).
        top_mistakes: how many of the most confident mistakes to list.
        overwrite: replace an existing report.
    """
    from textlora.evaluation import read_labelled
    from textlora.fsutil import atomic_path, check_output
    from textlora.metrics import metrics_from_logits, predicted
    from textlora.prediction import load
    from textlora.run import as_run
    from textlora.runtime import probabilities

    opened = as_run(model)
    data = data or str(opened.path / "dev.csv")
    out = check_output(output or opened.path / "report.html", inputs=[data], overwrite=overwrite, flag="--output")
    frame, y = read_labelled(opened, data)  # evaluate's reading, metrics and decisions
    logits = load(opened).logits(frame.texts)
    m = metrics_from_logits(y, logits, opened.labels)
    multi = opened.config.data.multi_label
    mistakes = _mistakes(frame, y, probabilities(logits, opened.config), predicted(logits, multi), opened.labels, multi)
    parts = [
        *_head(opened, data, len(y), m, multi),
        *_training_sections(opened),
        *_quality_sections(m, multi, mistakes, top_mistakes),
        *_data_sections(opened),
        "</body></html>",
    ]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return str(out)


def _mistakes(frame, y, probs, pred, names: list[str], multi: bool) -> list[tuple]:
    """(row, true, predicted, confidence, text) of every wrong row, the most confident first. A
    multi-label row is wrong when its predicted set differs; its confidence is its surest wrong decision."""
    if multi:
        truth = y > 0.5

        def shown(row):
            return ", ".join(names[j] for j in np.flatnonzero(row)) or "(none)"

        wrong = [i for i in range(len(y)) if (pred[i] != truth[i]).any()]
        rows = [(i, shown(truth[i]), shown(pred[i]), float(np.maximum(probs[i], 1 - probs[i])[pred[i] != truth[i]].max())) for i in wrong]
    else:
        rows = [(i, names[y[i]], names[pred[i]], float(probs[i, pred[i]])) for i in range(len(y)) if pred[i] != y[i]]
    rows.sort(key=lambda r: -r[3])
    return [(frame.rows[i], t, p, c, _shown(frame.texts[i])[:400]) for i, t, p, c in rows]


def _head(run, data: str, n: int, m: dict, multi: bool) -> list[str]:
    from html import escape

    bd = run.metrics.get("trainable_params", {})
    kpis = (
        f"<div>subset accuracy<b>{m['accuracy']:.4f}</b></div><div>micro-F1<b>{m['micro_f1']:.4f}</b></div>"
        if multi
        else f"<div>accuracy<b>{m['accuracy']:.4f}</b></div>"
    )
    return [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>textlora report: {escape(run.path.name)}</title><style>{REPORT_CSS}</style></head><body>",
        f"<h1>textlora report: {escape(run.path.name)}</h1>",
        f"<p>{escape(run.config.model.name)} + LoRA, evaluated on <code>{escape(data)}</code> ({n:,} rows).</p>",
        f"<div class='kpi'>{kpis}<div>macro-F1<b>{m['macro_f1']:.4f}</b></div>"
        f"<div>trainable params<b>{bd.get('total', 0):,}</b></div><div>training time<b>{run.metrics.get('train_seconds', 0):.0f} s</b></div></div>",
    ]


def _training_sections(run) -> list[str]:
    from html import escape

    import yaml

    metrics, config = run.metrics, run.config
    bd, best = metrics.get("trainable_params", {}), metrics.get("best") or {}
    return [
        "<h2 id='config'>Configuration and parameters</h2>",
        _table(["part", "parameters"], [[k, f"{v:,}"] for k, v in bd.items()] + [["budget", f"{config.budget.max_trainable_params:,}"]]),
        f"<details><summary>resolved config.yaml</summary><pre>{escape(yaml.safe_dump(config.to_dict(), sort_keys=False))}</pre></details>",
        "<h2 id='curves'>Training and validation curves</h2>",
        f"<img alt='learning curves' src='{_curves(metrics)}'>",
        f"<p>Best checkpoint: step {best.get('step')} by {escape(str(metrics.get('metric_for_best')))}.</p>",
        _eval_sets_section(config, metrics),
    ]


def _quality_sections(m: dict, multi: bool, mistakes: list[tuple], top_mistakes: int) -> list[str]:
    from textlora.runtime import THRESHOLD

    return [
        "<h2 id='confusion'>Confusion matrix</h2>",
        f"<p>Multi-label run: a class is predicted when its sigmoid probability reaches {THRESHOLD}; see the per-class scores.</p>"
        if multi
        else f"<img alt='confusion matrix' src='{_confusion_png(m)}'>",
        "<h2 id='per-class'>Per-class precision, recall and F1</h2>",
        _table(
            ["class", "precision", "recall", "F1", "support"],
            [[n, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", c["support"]] for n, c in m["per_class"].items()],
        ),
        f"<h2 id='mistakes'>Most confident mistakes ({min(top_mistakes, len(mistakes))} of {len(mistakes)})</h2>",
        _table(["row", "true", "predicted", "confidence", "text"], [[r, t, p, f"{c:.3f}", text] for r, t, p, c, text in mistakes[:top_mistakes]]),
    ]


def _data_sections(run) -> list[str]:
    metrics, config = run.metrics, run.config
    log = metrics.get("train_log", [])
    rate = sorted(e["rows_per_s"] for e in log)[len(log) // 2] if log else None
    return [
        "<h2 id='data'>Data, including synthetic rows</h2>",
        _table(
            ["what", "value"],
            [["training file", config.data.train], ["extra training files", ", ".join(config.data.extra_train) or "none"]]
            + [[k, f"{v:,}"] for k, v in metrics.get("data", {}).items()],
        ),
        _synthetic_section(config),
        "<h2 id='timings'>Timings</h2>",
        _table(
            ["what", "value"],
            [
                ["training seconds", f"{metrics.get('train_seconds', 0):.1f}"],
                ["median training rows/s", f"{rate:.1f}" if rate else "-"],
                ["optimizer steps", metrics.get("steps_done")],
                ["precision", metrics.get("precision")],
            ],
        ),
    ]


def _eval_sets_section(config, metrics: dict) -> str:
    """Dev split and every eval set at each evaluation (the best checkpoint marked)."""
    hist = metrics.get("history", [])
    names = sorted({n for h in hist for n in h.get("eval_sets", {})})
    if not names:
        return ""
    best = (metrics.get("best") or {}).get("step")
    rows = [
        [h["step"] if h["step"] != best else f"{h['step']} (best)", f"{h['accuracy']:.4f}"]
        + [f"{h['eval_sets'][n]['accuracy']:.4f} / {h['eval_sets'][n]['macro_f1']:.4f}" if n in h.get("eval_sets", {}) else "-" for n in names]
        for h in hist
    ]
    files = ", ".join(f"{n}: {config.data.eval_sets.get(n, '?')}" for n in names)
    return "<h2 id='eval-sets'>Eval sets (accuracy / macro-F1; never trained on)</h2>" + f"<p>{files}</p>" + _table(["step", "dev accuracy", *names], rows)


def _synthetic_section(config) -> str:
    """For each extra training file, its filter report (written beside it by `textlora filter`) if there is one."""
    import json
    from html import escape

    if not config.data.extra_train:
        return "<p>No extra (synthetic) training rows were used.</p>"
    out = []
    for extra in config.data.extra_train:
        report = Path(extra).with_suffix(".report.json")  # written by filter and by pseudolabel
        if report.is_file():
            r = json.loads(report.read_text())
            out.append(f"<h3>{escape(extra)}</h3><pre>{escape(json.dumps(r, indent=1)[:6000])}</pre>")
        else:
            out.append(f"<p><code>{escape(extra)}</code>: no filter or pseudolabel report found beside it.</p>")
    return "".join(out)
