"""What every benchmark records beside its figures: the CPU (lscpu's model name and the flags that
decide speed here), torch's CPU capability and the cores this process may use."""

from __future__ import annotations

import os
import platform
import subprocess

SPEED_FLAGS = ("avx512_bf16", "amx", "avx512f", "avx2", "avx_vnni", "avx512_vnni")


def cpu() -> dict:
    import torch

    info = {"platform": platform.platform()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info["model_name"] = fields.get("Model name", "").strip()
        info["flags"] = [f for f in fields.get("Flags", "").split() if f.startswith(SPEED_FLAGS)]
    except OSError:
        pass
    info["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    info["cores"] = len(os.sched_getaffinity(0))
    # set by hand to make an AVX-512 machine run torch's and oneDNN's AVX2 code (fbgemm's int8 kernels still see AVX-512)
    info["isa_caps"] = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ}
    return info
