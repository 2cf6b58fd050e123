"""The one place that decides where and how tensors run: device, precision, autocast, attention
kind, fused optimizers, the ONNX provider, and what machine a figure was measured on.

Every verb asks here (``train``, ``adapt``, ``generate``, ``predict``, ``evaluate``, ``serve``,
``export``); none decides on its own. A leaf module: it imports nothing of textlora but its errors.

The choices and why:

- **precision** ``auto``: bf16 on CUDA devices that have it (else fp16) and on CPUs with native
  bf16 (AVX-512 bf16 or AMX); fp32 elsewhere, since emulated bf16 runs ~4x slower than fp32.
- **encoder attention** ``auto``: ``eager`` on the CPU (faster than torch's kernels for short
  texts there), ``sdpa`` on CUDA.
- **causal-LM attention** for training: ``eager`` on a CPU in bf16 (torch's CPU flash kernel is
  slow in bf16: a SmolLM2 step of 16 texts took 2.70 s with it, 2.18 s with plain matmuls), the
  model's default elsewhere (in fp32 the kernel is the faster one: 5.6 s against 6.0).
- **fused AdamW** on CUDA only: torch's CPU build has no fused kernel worth the switch.
- **ONNX provider**: CUDA's where onnxruntime offers it and a GPU is present, else the CPU's.
"""

from __future__ import annotations

import contextlib

from textlora.errors import UserError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def default_device():
    """CUDA when present, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX-512 bf16 or AMX), not by emulation."""
    import torch

    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def resolve_precision(precision: str, device) -> str:
    """bf16, fp16 or fp32 for a requested precision (``auto``: the fastest exact-enough one here)."""
    import torch

    if precision != "auto":
        if device.type == "cpu" and precision == "fp16":
            raise UserError("config: train.precision: fp16 is for CUDA devices; use bf16 or fp32 on the CPU")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(precision: str, device):
    """Autocast to ``precision`` on ``device`` (nothing for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def encoder_attention(choice: str, device=None) -> str:
    """The encoder's attention implementation for ``model.attn_implementation`` (``auto``: eager on the CPU, sdpa on CUDA)."""
    if choice != "auto":
        return choice
    device = device or default_device()
    return "sdpa" if device.type == "cuda" else "eager"


def lm_training_attention(device, precision: str) -> str | None:
    """The causal LM's attention while it is adapted: ``eager`` on a CPU in bf16, else None (the model's default)."""
    return "eager" if device.type == "cpu" and precision == "bf16" else None


def fused_adamw(device) -> bool:
    """Whether AdamW runs its fused kernel: on CUDA only."""
    return device.type == "cuda"


def onnx_providers() -> list[str]:
    """onnxruntime's execution providers, best first: CUDA's where it is installed and a GPU is present, then the CPU's."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


def machine() -> dict:
    """What a run's figures were measured on: the CPU as the kernel names it (with its family and
    model: "AMD EPYC" names several generations), torch's CPU capability, threads and device."""
    import platform

    import torch

    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    device = default_device()
    return {
        "cpu": name,
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "torch": torch.__version__,
    }
