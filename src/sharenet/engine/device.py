"""Device, precision and memory format: what runs fastest on the hardware at hand.

bf16 autocast pays on CPUs with native bf16 (AVX512-BF16 / AMX) and on recent GPUs; on other
CPUs bf16 convolutions are emulated and much slower than fp32, so `auto` falls back to fp32.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import platform
import shutil
import sys
from pathlib import Path

import torch

from ..models import fused
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


# measured: 13 s to compile resnet20 (fused BatchNorm kernel) on 2 cores, repaid at 1.13x after ~1,700 steps
COMPILE_MIN_STEPS = 2000


def compiler_available(device: torch.device) -> bool:
    """Inductor needs a C++ compiler for CPU code and Triton for CUDA code."""
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


def use_compile(setting: str, device: torch.device, total_steps: int) -> bool:
    if setting == "auto":
        return total_steps >= COMPILE_MIN_STEPS and compiler_available(device)
    return setting == "on"


_ALLOCATOR = {"keeps_freed_memory": False}


def keep_freed_memory() -> bool:
    """Stop glibc from handing freed activation buffers back to the OS after every step.

    By default glibc serves blocks above a (dynamic) threshold with mmap and trims the heap top
    when it is free, so each training step page-faults its activations in anew: 4,500 faults per
    step and 7 % of the step time for resnet20 at batch 128 here (22,000 faults before the fused
    BatchNorm kernel). Raising both thresholds keeps the memory in the process for reuse, what
    jemalloc or tcmalloc would give. Process-wide; SHARENET_KEEP_FREED_MEMORY=0 leaves glibc as it is.
    """
    if os.environ.get("SHARENET_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        _ALLOCATOR["keeps_freed_memory"] = bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(
            libc.mallopt(m_trim_threshold, 1 << 30)
        )
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass
    return _ALLOCATOR["keeps_freed_memory"]


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
        "keeps_freed_memory": _ALLOCATOR["keeps_freed_memory"],
        "fused_batchnorm": fused.loaded(),
    }
