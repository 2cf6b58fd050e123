"""torch's CPU attention kernel against plain matmuls, where textlora chooses between them.

1. Decode (`generate`): one query a row against the KV cache, SmolLM2-135M's shapes (9 query heads,
   3 KV heads, head_dim 64), batch 256, at several cache lengths: `scaled_dot_product_attention`
   against `textlora.augment.sampling._decode_attention`, in bf16 and fp32.
2. Training (`adapt`): seconds a step of 16 AG News target texts (96 tokens, LoRA r=16 on q/k/v/o)
   with transformers' `sdpa` attention against `eager`, alternating, in bf16 weights (and in fp32
   with --fp32).

Prints and saves bench/results/attention_paths.json with the CPU it ran on.

    python bench/attention_paths.py [--fp32] [--steps 4] [--pairs 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import cpu  # bench/machine.py

from textlora.augment.sampling import _decode_attention


def ms(fn, n: int = 30) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return round((time.perf_counter() - t0) / n * 1e3, 3)


def decode(dtype) -> dict:
    b, h, hk, d, cap = 256, 9, 3, 64, 160
    q = torch.randn(b, h, 1, d, dtype=dtype)
    k, v = torch.randn(b, hk, cap, d, dtype=dtype), torch.randn(b, hk, cap, d, dtype=dtype)
    out = {}
    for length in (20, 40, 80, 120):
        keys = torch.ones(b, 1, 1, length, dtype=torch.bool)
        keys[:, :, :, :3] = False  # left padding
        kl, vl = k[:, :, :length], v[:, :, :length]
        kernel = ms(lambda kl=kl, vl=vl, keys=keys: F.scaled_dot_product_attention(q, kl, vl, attn_mask=keys, enable_gqa=True))
        matmuls = ms(lambda kl=kl, vl=vl, keys=keys: _decode_attention(q, kl, vl, keys))
        out[length] = {"kernel_ms": kernel, "matmuls_ms": matmuls}
        print(f"decode {dtype} cache {length}: kernel {kernel} ms, matmuls {matmuls} ms", flush=True)
    return out


def adapt_steps(fp32: bool, steps: int, pairs: int) -> dict:
    import pandas as pd
    from peft import LoraConfig, get_peft_model

    from textlora.augment.lm import load_causal_lm

    texts = pd.read_csv("../shared/data/agnews/target_unlabelled.csv")["text"].astype(str).tolist()[: 16 * (steps + 1)]
    out = {"sdpa": [], "eager": []}
    for _ in range(pairs):
        for impl in ("sdpa", "eager"):
            model, tok = load_causal_lm("smollm2")
            if not fp32:
                model.to(torch.bfloat16)
            model.set_attn_implementation(impl)
            model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
            enc = tok(texts, truncation=True, max_length=96, padding=True, return_tensors="pt")
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
            model.train()

            def step(i, enc=enc, model=model, opt=opt):  # bound now: each pass of the loop has its own
                ids, mask = enc["input_ids"][16 * i : 16 * (i + 1)], enc["attention_mask"][16 * i : 16 * (i + 1)]
                model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.float().backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            step(0)  # warm-up
            t0 = time.perf_counter()
            for i in range(1, steps + 1):
                step(i)
            out[impl].append(round((time.perf_counter() - t0) / steps, 3))
            print(f"adapt step ({'fp32' if fp32 else 'bf16'} weights) {impl}: {out[impl][-1]} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", action="store_true", help="adapt steps in fp32 weights (the AVX2 machines' precision)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--output", default="bench/results/attention_paths.json")
    args = ap.parse_args()
    result = {"cpu": cpu(), "threads": torch.get_num_threads(), "decode_bf16": decode(torch.bfloat16), "decode_fp32": decode(torch.float32)}
    result["adapt_s_per_step"] = {"weights": "fp32" if args.fp32 else "bf16", **adapt_steps(args.fp32, args.steps, args.pairs)}
    out = Path(args.output)
    saved = json.loads(out.read_text()) if out.is_file() else {}
    saved[f"{result['cpu'].get('model_name', 'cpu')} {result['cpu'].get('torch_capability', '')} {result['adapt_s_per_step']['weights']}"] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(saved, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
