"""Numeric precision of the matrix work: plain fp32, or bf16 autocast where it is native.

Shared by training, encoding and the benchmarks, so that all of them mean the same thing
by ``--precision``.
"""

from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "autocast_for"]

PRECISIONS = ("fp32", "bf16", "auto")


def autocast_for(precision: str, device: torch.device):
    """The autocast context of a training step or an encoding pass: bf16 matrix work, or fp32.

    ``auto`` picks bf16 where the hardware computes it natively (CUDA with bf16
    support, or a CPU with AVX512-BF16/AMX through oneDNN), else fp32. The quantizer
    keeps its distances and statistics in fp32 either way, and so do the losses.
    """
    if precision == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        else:
            native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        precision = "bf16" if native else "fp32"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
