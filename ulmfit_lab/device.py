"""Which device and which precision a run uses: one policy for training and for prediction.

Both sides must agree on what this CPU can do: oneDNN has no bf16 LSTM without native bf16, so
`precision=bf16` there means fp32 (with a warning) whether it trains or predicts.
"""

from __future__ import annotations

import logging
import warnings
from functools import cache
from typing import Literal

import torch
from torch import nn

from .config import ConfigError, RunConfig

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]


def pick_device(run: RunConfig) -> torch.device:
    """The device a run trains on; a setting this machine cannot honour is a `ConfigError` before any work."""
    if run.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device=cuda, but no CUDA GPU is visible here; use run.device=auto (GPU when there "
                          "is one) or run.device=cpu")
    device = torch.device("cpu" if run.device == "cpu" or not torch.cuda.is_available() else "cuda")
    if run.precision == "fp16" and device.type == "cpu":
        raise ConfigError("run.precision=fp16 needs a GPU, and this run is on the CPU; use run.precision=bf16 "
                          "(CPU autocast) or fp32")
    return device


def device_name(device: torch.device) -> str:
    """What ran a stage, for logs and model cards: the GPU's name, or the CPU's model and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def amp_dtype(run: RunConfig, device: torch.device, quiet: bool = False) -> torch.dtype | None:
    """Mixed precision: bf16 (fp16 on older GPUs) on GPU by default, fp32 on CPU unless asked.

    `run.precision=bf16` on a CPU without native bf16 trains in fp32, with a warning: bf16 could not run there.
    """
    if run.precision == "fp32" or (run.precision == "auto" and device.type != "cuda"):
        return None
    if device.type == "cpu" and run.precision == "bf16" and not cpu_has_bf16():
        if not quiet:
            log.warning("run.precision=bf16, but this CPU has no native bf16 (AVX-512 BF16 or AMX): training in "
                        "fp32 instead (set run.precision=fp32 to silence this)")
        return None
    if run.precision == "fp16":
        return torch.float16
    if run.precision == "auto" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), which CPU autocast needs.

    Without it oneDNN has no bf16 LSTM at all ("could not create a primitive descriptor") and bf16 matmuls
    are emulated, slower than fp32. Read from the CPU flags on Linux; elsewhere a tiny bf16 LSTM is tried.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
        if flags:
            return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            nn.LSTM(4, 4, batch_first=True)(torch.zeros(1, 2, 4))
        return True
    except RuntimeError:
        return False


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """'auto' is exact fp32 on CPU and mixed precision on GPU (bf16 where the GPU has it, else fp16).

    'bf16' on a CPU without native bf16 (see `cpu_has_bf16`) is fp32, with a warning.
    """
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        warnings.warn("precision='bf16', but this CPU has no native bf16 (AVX-512 BF16 or AMX): predicting in "
                      "fp32 instead", stacklevel=2)
        return "fp32"
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"
