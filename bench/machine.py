"""What every benchmark records beside its figures: the CPU (lscpu's model name and the flags that
decide speed here), torch's CPU capability and the cores this process may use.

    python bench/machine.py    # the same, plus fp32 and bf16 matmul GFLOP/s at this project's shapes
"""

from __future__ import annotations

import os
import platform
import subprocess

SPEED_FLAGS = ("avx512_bf16", "amx", "avx512f", "avx2", "avx_vnni", "avx512_vnni")


def cpu() -> dict:
    import torch

    from textlora.device import machine

    info = {"platform": platform.platform()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info["model_name"] = fields.get("Model name", "").strip()
        info["flags"] = [f for f in fields.get("Flags", "").split() if f.startswith(SPEED_FLAGS)]
    except OSError:
        pass
    # with family and model, as every pipeline run records it: "AMD EPYC" names Zen 4 and Zen 5 alike
    info["cpu"] = machine()["cpu"]
    info["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    info["cores"] = len(os.sched_getaffinity(0))
    # set by hand to make an AVX-512 machine run torch's and oneDNN's AVX2 code (fbgemm's int8 kernels still see AVX-512)
    info["isa_caps"] = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ}
    return info


# The matmul shapes of this project's hot loops: MiniLM training (4096 tokens x 384 -> 1536) and
# SmolLM2 decoding (256 rows x 576 -> 1536, and its 49,152-token lm_head).
SHAPES = ((4096, 384, 1536), (256, 576, 1536), (256, 576, 49152))


def matmul_rates(repeats: int = 20) -> dict:
    """GFLOP/s of one matmul at each of SHAPES, in fp32 and bf16, at this process's threads.

    Two machines that report the same CPU capability can differ by 2x in every stage's seconds
    (31cf828 and 4ee007d ran on AVX-512 bf16 EPYCs of two generations); these rates say which one ran."""
    import time

    import torch

    out = {}
    for m, k, n in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            for _ in range(3):
                a @ b
            start = time.perf_counter()
            for _ in range(repeats):
                a @ b
            seconds = (time.perf_counter() - start) / repeats
            out[f"{m}x{k}x{n} {str(dtype).removeprefix('torch.')}"] = round(2 * m * k * n / seconds / 1e9, 1)
    return out


def append_result(path, entry: dict) -> None:
    """Append ``entry`` (with its "cpu" and "torch_capability") to the JSON list in ``path`` and say so."""
    import json
    from pathlib import Path

    out = Path(path)
    history = json.loads(out.read_text()) if out.is_file() else []
    out.write_text(json.dumps([*history, entry], indent=2))
    print(f"machine: {entry['cpu']}, torch {entry['torch_capability']}; saved {out}")


if __name__ == "__main__":
    import json

    print(json.dumps({**cpu(), "matmul_gflops": matmul_rates()}, indent=1))
