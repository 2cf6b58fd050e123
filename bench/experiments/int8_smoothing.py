"""Can int8 matmuls sample SmolLM2's distribution? fbgemm's dynamic int8 linear, with and without
SmoothQuant-style smoothing, against the fp32 fused forward: the mean and largest total-variation
distance of the first-token distributions (top-k 50, top-p 0.95, penalty 1.3) over the AG News
class prompts. bf16 weights give ~0.02 on the same prompts (bench/generate_paths.py).

Smoothing divides each matmul's input channel j by s_j = a_j^alpha / w_j^(1 - alpha) and multiplies
the weight's column j by it (a_j: the channel's largest input seen on the prompts themselves, so
the figures are optimistic; w_j: the column's largest weight). ``reduce_range`` uses 7-bit
activations, which fbgemm's AVX2 kernels need to avoid saturating. Prints and saves
bench/results/int8_smoothing.json.

    python bench/int8_smoothing.py
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import yaml
from machine import cpu  # bench/machine.py

from textlora.augment.lm import load_causal_lm
from textlora.augment.sampling import LlamaStepper, SamplingSettings, candidates

warnings.filterwarnings("ignore", category=UserWarning)  # quantized tensors are deprecated in torch 2.13


class _Record:
    """Stands in for a weight in ``h @ W``: records the input's per-channel absmax, then multiplies."""

    def __init__(self, w, key, seen):
        self.w, self.key, self.seen = w, key, seen

    def __rmatmul__(self, h):
        m = h.detach().abs().reshape(-1, h.shape[-1]).amax(0)
        self.seen[self.key] = torch.maximum(self.seen.get(self.key, m), m)
        return h @ self.w


class _Int8:
    """``h @ W`` as fbgemm's int8 linear, on the smoothed input h / s and weight W * s."""

    def __init__(self, wt, s, reduce_range: bool):
        w = (wt * (s[:, None] if s is not None else 1)).t().contiguous()  # (out, in)
        scale = (w.abs().amax(1) / 127).clamp(min=1e-8).double()
        q = torch.quantize_per_channel(w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8)
        self.packed, self.s, self.reduce_range = torch.ops.quantized.linear_prepack(q, None), s, reduce_range

    def __rmatmul__(self, h):
        return torch.ops.quantized.linear_dynamic(h if self.s is None else h / self.s, self.packed, self.reduce_range)


def main() -> None:
    model, tok = load_causal_lm("smollm2")
    model.float().eval()
    prompts = [p for ps in yaml.safe_load(open("configs/prompts/agnews.yaml"))["classes"].values() for p in ps]
    enc = [tok(p)["input_ids"] for p in prompts]
    width = max(map(len, enc))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    names = ("qkv", "o", "gate_up", "down")

    def first_step(swap) -> torch.Tensor:
        with torch.inference_mode():
            stepper = LlamaStepper(model, len(enc), width + 1)
            for i, (ln1, *ws) in enumerate(stepper.layers):
                new = [swap(name, i, w) for name, w in zip(names, (ws[0], ws[1], ws[3], ws[4]))]
                stepper.layers[i] = (ln1, new[0], new[1], ws[2], new[2], new[3])
            logits = stepper(ids, mask, (mask.cumsum(1) - 1).clamp(min=0)).float()
            cand, probs = candidates(logits, ids, SamplingSettings())
        return torch.zeros_like(logits).scatter(1, cand, probs)

    seen = {}
    reference = first_step(lambda name, i, w: _Record(w, (name, i), seen))
    results = {"cpu": cpu(), "prompts": len(prompts), "runs": []}
    for alpha in (None, 0.5, 0.7, 0.85):
        for which in (set(names), {"gate_up"}, {"qkv", "gate_up"}):
            for reduce_range in (True, False):

                def swap(name, i, w, which=which, alpha=alpha, reduce_range=reduce_range):  # bound now, as the loop moves on
                    if name not in which:
                        return w
                    if alpha is None:
                        return _Int8(w, None, reduce_range)
                    a, wm = seen[(name, i)].clamp(min=1e-5), w.abs().amax(1).clamp(min=1e-5)
                    return _Int8(w, (a**alpha / wm ** (1 - alpha)).clamp(min=1e-5), reduce_range)

                tv = 0.5 * (first_step(swap) - reference).abs().sum(1)
                run = {"alpha": alpha, "int8": sorted(which), "reduce_range": reduce_range, "tv_mean": round(float(tv.mean()), 3), "tv_max": round(float(tv.max()), 3)}
                results["runs"].append(run)
                print(run, flush=True)
    out = Path("bench/results/int8_smoothing.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
