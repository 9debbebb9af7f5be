"""`sharenet bench`: measured training and inference throughput, fast path against baseline.

`--infer` instead compares inference runtimes (eager, compiled, onnxruntime fp32 and int8)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from ..bench.spec import BenchSpec
from ..engine.config import KEYS, parse_set


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="training/inference images/s: fast path vs plain baseline vs unshared")
    p.add_argument("--model", default=KEYS["model.name"].default)
    p.add_argument("--share", default=KEYS["model.share"].default, choices=KEYS["model.share"].choices)
    p.add_argument("--batch-size", type=int, default=KEYS["optim.batch_size"].default)
    p.add_argument("--in-chans", type=int, default=3, help="1 for Fashion-MNIST-shaped input")
    p.add_argument("--input-size", type=int, help="image side (default: the model's native size)")
    p.add_argument(
        "--steps",
        type=int,
        help="steps per variant per round (default 5; --infer: calls at the throughput batch, default 2)",
    )
    p.add_argument("--rounds", type=int, default=11, help="interleaved rounds; the median is reported")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--device",
        choices=KEYS["run.device"].choices,
        help="training benchmark: where to run it (default "
        "auto: cuda when available); cuda times with synchronisation and names the GPU and its peak memory",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="run.KEY=VALUE",
        help="fast-path settings, e.g. run.compile=off or run.precision=fp32",
    )
    p.add_argument(
        "--choices",
        action="store_true",
        help="CPU: time each fast-path choice (precision, layout, compile, fused BatchNorm)",
    )
    p.add_argument(
        "--infer",
        action="store_true",
        help="inference: eager vs compiled vs onnxruntime fp32/int8, batch-1 latency and batch throughput",
    )
    p.add_argument(
        "--weights",
        metavar="RUN_OR_SAFETENSORS",
        help="--infer: a trained model (int8 calibrated on its training images); default: random "
        "weights for --model/--share",
    )
    p.add_argument("--calls", type=int, default=100, help="--infer: batch-1 calls per variant per round")
    p.add_argument("--infer-batch", type=int, default=256, help="--infer: the throughput batch size")
    p.add_argument("--threads", type=int, help="--infer: threads for every runtime (default: torch's default here)")
    p.add_argument("--data-dir", help="--infer --weights: where the run's data set lives, if not found by default")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--table",
        nargs="+",
        metavar="JSON",
        help="print the markdown table of saved --json training "
        "records (docs/speed.md's scheme table) instead of measuring",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    from ..engine.config import ConfigError

    if args.table:
        return print_table(args.table)
    if args.steps is None:
        args.steps = 2 if args.infer else 5  # a throughput-batch inference call takes as long as several steps
    checked = {
        "--batch-size": args.batch_size,
        "--steps": args.steps,
        "--rounds": args.rounds,
        "--calls": args.calls,
        "--infer-batch": args.infer_batch,
        "--threads": 1 if args.threads is None else args.threads,
    }
    for name, value in checked.items():
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if args.infer:
        return run_infer(args)
    spec = _spec(args, args.batch_size, parse_set(args.set) | ({"run.device": args.device} if args.device else {}))
    if args.choices:
        from ..bench.train import format_choices, run_choices

        if args.device == "cuda":
            raise ConfigError("--choices times the CPU fast path's choices; on a GPU use the plain benchmark")
        return _report(run_choices(spec), args.json, format_choices)
    from ..bench.train import format_table, run_bench

    return _report(run_bench(spec), args.json, format_table)


def _spec(args, batch_size: int, overrides: dict) -> BenchSpec:
    """What the flags ask to measure, at `batch_size` (the training or the inference batch)."""
    return BenchSpec(
        model=args.model,
        share=args.share,
        batch_size=batch_size,
        in_chans=args.in_chans,
        input_size=args.input_size,
        steps=args.steps,
        rounds=args.rounds,
        warmup=max(1, args.warmup),
        overrides=overrides,
        calls=args.calls,
        threads=args.threads,
        weights=args.weights,
    )


def _report(result: dict, as_json: bool, table: Callable[[dict], str]) -> int:
    print(json.dumps(result, indent=2) if as_json else table(result))
    return 0


def print_table(paths: list[str]) -> int:
    from ..bench.train import scheme_table
    from ..errors import InvalidArgumentError

    records = []
    for path in paths:
        try:
            records.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise InvalidArgumentError(f"--table: cannot read {path} as a bench record ({e})") from None
        if "mac_predicted_ratio" not in records[-1]:
            raise InvalidArgumentError(f"--table: {path} is not a `sharenet bench --json` training record")
    print(scheme_table(records))
    return 0


def run_infer(args) -> int:
    from ..bench.infer import format_infer, run_infer_bench
    from ..errors import InvalidArgumentError

    if args.choices:
        raise InvalidArgumentError("--infer and --choices are separate benchmarks: pick one")
    if args.weights and args.input_size:
        raise InvalidArgumentError("--input-size applies without --weights (a trained model records its own)")
    return _report(run_infer_bench(_spec(args, args.infer_batch, {}), args.data_dir), args.json, format_infer)
