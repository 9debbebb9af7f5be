"""The hardware at hand: device, the CPU's vector ISA level, autocast dtype.

CPUs differ (AVX2 only; AVX-512; AVX-512 with native bf16; AMX), and so does what runs fastest on
them: bf16 autocast pays only with native bf16 instructions (AVX512-BF16, AMX) and on recent GPUs;
elsewhere oneDNN emulates bf16 and fp32 is the better choice. The ISA level is read at run time
and honours the limits torch's libraries accept (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), so a
limited run behaves, and reports itself, as on the smaller CPU.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

from .config import ConfigError

# oneDNN's ISA names in increasing order (ONEDNN_MAX_CPU_ISA); ALL or unset: no limit.
_ONEDNN_ORDER = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512_AMX_FP16",
)
ISA_LEVELS = ("DEFAULT", "AVX2", "AVX-512", "AVX512-BF16", "AMX")  # what `cpu_isa` returns, lowest first


def use_deterministic(on: bool) -> None:
    """CUDA picks convolution and reduction algorithms that may add in another order on every call;
    a bit-exact run (and resume) needs the deterministic ones. cuBLAS reads its workspace setting
    when its first handle is made: set it here, before any CUDA work of the run."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(on)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device=cuda but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def _onednn_allows(isa: str) -> bool:
    limit = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if limit not in _ONEDNN_ORDER:
        return True  # ALL, or a name this table does not know: no limit we can read
    return _ONEDNN_ORDER.index(isa) <= _ONEDNN_ORDER.index(limit)


def cpu_isa() -> str:
    """This CPU's vector ISA level as torch will use it: AMX, AVX512-BF16, AVX-512, AVX2 or DEFAULT."""
    aten = torch.backends.cpu.get_cpu_capability()  # honours ATEN_CPU_CAPABILITY
    cpu = torch.cpu
    if aten == "AVX512" and _onednn_allows("AVX512_CORE"):
        if cpu._is_amx_tile_supported() and _onednn_allows("AVX512_CORE_AMX"):
            return "AMX"
        if cpu._is_avx512_bf16_supported() and _onednn_allows("AVX512_CORE_BF16"):
            return "AVX512-BF16"
        return "AVX-512"
    if aten in ("AVX512", "AVX2") and cpu._is_avx2_supported():
        return "AVX2"
    return "DEFAULT"


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX). oneDNN's own check also says yes on plain
    AVX-512, where it emulates bf16 more slowly than fp32 runs."""
    return cpu_isa() in ("AVX512-BF16", "AMX")


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


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
