"""The training fast path, decided per machine and recorded with the run.

What makes a training step fast differs between CPUs: bf16 autocast only with native bf16
(device.py), channels_last activations for oneDNN's convolutions, sharenet's fused
BatchNorm(+add)+ReLU kernel (models/fused.py) for the memory-bound normalisation, torch.compile
when a run is long enough to repay its compilation, and freed memory kept in the process. `decide`
makes these choices once, from the run's settings and what this machine offers (its ISA level,
a C++ compiler), and `FastPath.record()` is what config.json (as env_*) and `sharenet bench`
report, so figures from different machines can be told apart. The README's speed section gives
the measurements behind each choice, per CPU class.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from ..models.norm_act import use_fused_kernel
from .config import RunConfig
from .device import cpu_isa, device_name, pick_dtype

# Runs shorter than this many steps train eagerly under run.compile=auto: compilation (timed by
# `sharenet bench`, compile_s) would not be earned back by a short run.
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


def key_compile_cache_by_isa() -> None:
    """Give torch.compile's on-disk cache a directory per ISA level, unless one was chosen.

    torch 2.13 does not key its compiled-graph cache by the vector ISA: kernels compiled under an
    AVX2 limit (or on another CPU sharing the directory) abort a later run on an AVX-512 CPU that
    reuses them. Must run before the process compiles anything (torch fixes the directory then).
    """
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{default_cache_dir()}-{cpu_isa()}"


_ALLOCATOR = {"keeps_freed_memory": False}


def keep_freed_memory() -> bool:
    """Stop glibc from handing freed activation buffers back to the OS after every step.

    By default glibc serves blocks above a (dynamic) threshold with mmap and trims the heap top
    when it is free, so each training step page-faults its activations in anew. Raising both
    thresholds keeps the memory in the process for reuse, what jemalloc or tcmalloc would give.
    Process-wide; SHARENET_KEEP_FREED_MEMORY=0 leaves glibc as it is.
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


@dataclass(frozen=True)
class FastPath:
    """What the training step runs with on this device."""

    device: torch.device
    isa: str  # the CPU's vector ISA level (device.cpu_isa), "cuda" on a GPU
    dtype: torch.dtype  # autocast dtype; float32: no autocast
    channels_last: bool
    compile: bool
    fused_batchnorm: bool = False  # set by `prepare` once the kernel is built and the layers switched
    keeps_freed_memory: bool = False

    def record(self) -> dict:
        """The decision as JSON-ready facts, with the machine they were made on."""
        out = asdict(self)
        out.update(
            device=str(self.device),
            device_name=device_name(self.device),
            threads=torch.get_num_threads(),
            torch=torch.__version__,
            dtype=str(self.dtype).removeprefix("torch."),
            memory_format="channels_last" if self.channels_last else "contiguous",
        )
        del out["channels_last"]
        return out


def decide(run: RunConfig, device: torch.device, total_steps: int) -> FastPath:
    """The fast path for `run`'s settings on this machine, for a run of `total_steps` steps."""
    steps = min(total_steps, run.max_steps or total_steps)
    isa = "cuda" if device.type == "cuda" else cpu_isa()
    compile_ = use_compile(run.compile, device, steps)
    if compile_ and device.type == "cpu":
        key_compile_cache_by_isa()
    return FastPath(device, isa, pick_dtype(run.precision, device), run.channels_last, compile_)


def prepare(model: nn.Module, fast: FastPath) -> FastPath:
    """Put `model` on the fast path (memory format, fused BatchNorm layers, allocator); what took effect.

    The fused kernel serves CPU training in channels_last; a model it cannot serve, or a step where
    it does not pay, keeps plain BatchNorm. Compilation is left to the caller, after any
    DistributedDataParallel wrapping.
    """
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    if fast.device.type != "cpu":
        return fast
    # The fused kernel pays in eager steps and in bf16 ones; in fp32 compiled steps inductor's own
    # BatchNorm kernels are level with it (`sharenet bench --choices`, README), so they run there.
    wanted = fast.channels_last and (not fast.compile or fast.dtype != torch.float32)
    fused = wanted and use_fused_kernel(model) > 0
    return replace(fast, fused_batchnorm=fused, keeps_freed_memory=keep_freed_memory())
