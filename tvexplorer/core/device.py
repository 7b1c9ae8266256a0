"""The one rule for where torch work runs: the device asked for, else a GPU when there is one, else the CPU."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    return torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def has_fast_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run in hardware here: a CUDA GPU, or a CPU with AVX-512 BF16 or AMX.
    Elsewhere bfloat16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
