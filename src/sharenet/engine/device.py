"""Device, precision and memory format: what runs fastest on the hardware at hand.

bf16 autocast pays on CPUs with native bf16 (AVX512-BF16 / AMX) and on recent GPUs; on other
CPUs bf16 convolutions are emulated and much slower than fp32, so `auto` falls back to fp32.
"""

from __future__ import annotations

import contextlib
import importlib.util
import platform
import shutil
from pathlib import Path

import torch

from .config import ConfigError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device=cuda but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (oneDNN's own check, else /proc/cpuinfo flags)."""
    with contextlib.suppress(Exception):
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype (float32 means no autocast)."""
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("run.precision=fp16 needs a CUDA device; on CPU use bf16 or fp32")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


COMPILE_MIN_STEPS = 2000  # measured: ~40 s to compile resnet20 on 2 cores, repaid at ~1.25x after ~1,500 steps


def compiler_available(device: torch.device) -> bool:
    """Inductor needs a C++ compiler for CPU code and Triton for CUDA code."""
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


def use_compile(setting: str, device: torch.device, total_steps: int) -> bool:
    if setting == "auto":
        return total_steps >= COMPILE_MIN_STEPS and compiler_available(device)
    return setting == "on"


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device: torch.device, dtype: torch.dtype, channels_last: bool) -> dict:
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "memory_format": "channels_last" if channels_last else "contiguous",
    }
