"""`sharenet bench --infer`: one network's inference speed in four runtimes, measured in one run.

Eager PyTorch, torch.compile (inductor, one static graph per batch size) and onnxruntime on the
exported file in fp32 and in int8 (static QDQ, as `sharenet export --int8` writes it) run the same
weights at batch 1 (latency of single-image calls: p50 and p99 over every timed call) and at a
throughput batch (images/s, median over rounds). Variants take turns within each round, so noise
from the machine hits all alike, and every runtime gets the same number of threads. Speedups are
against eager in the same run. The header states CPU, threads, versions and the load average:
a README table means nothing without them.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..deploy.artifact import load_model, open_runner
from ..deploy.check import dataset_images
from ..deploy.export import export, sample_input
from ..deploy.quantize import quantize
from ..engine.device import cpu_isa, cpu_name
from ..engine.fastpath import key_compile_cache_by_isa
from ..models import create_model
from ..version import __version__
from .spec import BenchSpec
from .timing import interleaved, medians

VARIANTS = ("eager fp32", "compiled fp32", "onnxruntime fp32", "onnxruntime int8")


def random_model(spec: BenchSpec, batches: int = 4) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    """(eval model, metadata, calibration images) for an untrained network: speed does not depend on the weights.

    BatchNorm statistics come from a few train-mode passes on random data, so that activations
    keep their scale through the network as a trained model's do (int8 ranges stay meaningful).
    """
    in_chans = spec.in_chans
    model = create_model(spec.model, share=spec.share, in_chans=in_chans, num_classes=10)
    side = spec.input_size or model.arch.input_size
    meta = {"config": model.config, "extra": {"preprocess": {"channels": in_chans, "size": side}}}  # export's shape
    calibration = torch.randn(64, in_chans, side, side, generator=torch.Generator().manual_seed(1))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes below
    with torch.no_grad():
        for chunk in calibration.chunk(batches):
            model.train()(chunk)
    for m in norms:
        m.momentum = 0.1
    return model.eval(), meta, calibration


def trained_model(spec: BenchSpec, data_dir: str | None = None) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    """(eval model, metadata, calibration images) of `spec.weights`: int8 is calibrated on its training images."""
    model, meta = load_model(spec.weights)
    return model, meta, dataset_images(meta, "train", 512, data_dir)[0]


def _eager(model: torch.nn.Module) -> Callable:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run


def build_variants(
    model, meta: dict, calibration: torch.Tensor, threads: int, workdir: Path
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Each variant as a callable from a batch to logits, all computing the same network."""
    key_compile_cache_by_isa()  # before the first compilation, as training does
    fp32 = export(model, workdir / "fp32.onnx", "onnx", meta, batch="dynamic").path
    level = logging.root.manager.disable
    logging.disable(logging.WARNING)  # onnxruntime's quantizer logs a warning per BatchNorm vector
    try:
        int8 = quantize(fp32, workdir / "int8.onnx", calibration)
    finally:
        logging.disable(level)
    compiled = torch.compile(model, dynamic=False)  # a static graph per batch size, compiled on first use
    return dict(
        zip(
            VARIANTS,
            (_eager(model), _eager(compiled), open_runner(fp32, threads).run, open_runner(int8, threads).run),
            strict=True,
        )
    )


def latencies(fns: dict[str, Callable], x: torch.Tensor, spec: BenchSpec) -> dict[str, list[float]]:
    """Seconds of every single call, each round making `spec.calls` calls of every fn in turn."""
    times = {k: [] for k in fns}
    for _ in range(spec.rounds):
        for key, fn in fns.items():
            for _ in range(spec.calls):
                t = time.perf_counter()
                fn(x)
                times[key].append(time.perf_counter() - t)
    return times


def _p99(times: list[float]) -> float:
    """The 99th percentile, interpolated between observed calls (never above the slowest)."""
    return statistics.quantiles(times, n=100, method="inclusive")[98] if len(times) > 1 else times[0]


def _warm(fn: Callable, x: torch.Tensor, calls: int) -> float:
    """Seconds of the first call (a compilation, for the compiled variant) after `calls` more calls."""
    t = time.perf_counter()
    fn(x)
    first = time.perf_counter() - t
    for _ in range(calls):
        fn(x)
    return first


def environment(threads: int) -> dict:
    import onnxruntime

    return {
        "cpu": cpu_name(),
        "isa": cpu_isa(),
        "threads": threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "sharenet": __version__,
    }


def run_infer_bench(spec: BenchSpec, data_dir: str | None = None) -> dict:
    """Batch-1 latency and batch-`spec.batch_size` throughput of every variant, interleaved round by round,
    on `spec.weights` (its data set found in `data_dir` if not where it is looked for by default) or
    on random weights.

    Single-image calls are cheap, so each variant warms up with ten times `spec.warmup` of them.
    """
    if spec.threads:
        torch.set_num_threads(spec.threads)  # onnxruntime is handed torch's count below
    model, meta, calibration = trained_model(spec, data_dir) if spec.weights else random_model(spec)
    threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    one, many = sample_input(model, meta, 1), sample_input(model, meta, spec.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        fns = build_variants(model, meta, calibration, threads, Path(tmp))
        first = {k: (_warm(fn, one, 10 * spec.warmup), _warm(fn, many, spec.warmup)) for k, fn in fns.items()}
        lat = latencies(fns, one, spec)
        bound = {k: (lambda fn=fn: fn(many)) for k, fn in fns.items()}
        rates = interleaved(bound, spec, torch.device("cpu"))
    p50, rate = medians(lat), medians(rates)
    base = VARIANTS[0]
    rows = [
        {
            "variant": k,
            "p50_ms": 1e3 * p50[k],
            "p99_ms": 1e3 * _p99(lat[k]),
            "latency_speedup": p50[base] / p50[k],
            "img_per_s": rate[k],
            "throughput_speedup": rate[k] / rate[base],
            "first_call_s": sum(first[k]),
        }
        for k in fns
    ]
    return {
        "model": model.config["name"],
        "share": model.config["share"],
        "weights": spec.weights,
        "input": list(one.shape[1:]),
        "batch": spec.batch_size,
        "calls_per_round": spec.calls,
        "steps_per_round": spec.steps,
        "rounds": spec.rounds,
        "warmup": spec.warmup,
        "rows": rows,
        "environment": environment(threads),
        "load_average": [load_before, os.getloadavg()[0]],
    }


def format_infer(r: dict) -> str:
    env, shape = r["environment"], "x".join(map(str, r["input"]))
    source, throughput = r["weights"] or "random weights", f"b{r['batch']} img/s"
    lines = [
        f"{r['model']} share={r['share']} ({source}), input {shape}, speedup = eager p50 / p50 and img/s / eager img/s",
        f"{env['cpu']} ({env['isa']}), {env['threads']} threads for every runtime, torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}; 1-min load average {r['load_average'][0]:.1f} before, "
        f"{r['load_average'][1]:.1f} after",
        f"batch 1: {r['rounds']} interleaved rounds x {r['calls_per_round']} calls per variant; batch {r['batch']}: "
        f"median of {r['rounds']} interleaved rounds of {r['steps_per_round']} calls",
        f"{'variant':<20}{'p50 ms':>9}{'p99 ms':>9}{'speedup':>9}{throughput:>14}{'speedup':>9}{'1st calls s':>13}",
    ]
    for row in r["rows"]:
        lines.append(
            f"{row['variant']:<20}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['latency_speedup']:>9.2f}"
            f"{row['img_per_s']:>14.0f}{row['throughput_speedup']:>9.2f}{row['first_call_s']:>13.1f}"
        )
    return "\n".join(lines)
