"""How every benchmark here times: variants take turns within each round, so that a slow patch of
the machine hits all alike; figures are medians over rounds, and ratios are taken within a round."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch

from .spec import BenchSpec


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer stops when the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(fns: Iterable[Callable], calls: int) -> None:
    """`calls` untimed calls of each fn: compilation, caches and allocations settle before timing."""
    for fn in fns:
        for _ in range(calls):
            fn()


def interleaved(fns: dict[str, Callable], spec: BenchSpec, device: torch.device) -> dict[str, list[float]]:
    """Images/s of each fn per round, each round timing `spec.steps` calls of every fn in turn."""
    rates = {k: [] for k in fns}
    for _ in range(spec.rounds):
        for key, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            for _ in range(spec.steps):
                fn()
            sync(device)
            rates[key].append(spec.steps * spec.batch_size / (time.perf_counter() - t))
    return rates


def medians(rates: dict[str, list[float]]) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in rates.items()}


def paired_ratio(rates: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of a/b within the round: a slow patch of the machine cancels out of it."""
    return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """The machine's dense matrix-multiply rate (FLOP/s, median) in `dtype`."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)
