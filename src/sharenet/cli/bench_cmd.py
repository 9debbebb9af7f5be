"""`sharenet bench`: measured training and inference throughput, fast path against baseline."""

from __future__ import annotations

import argparse
import json

from ..engine.config import KEYS, parse_set


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="training/inference images/s: fast path vs plain baseline vs unshared")
    p.add_argument("--model", default=KEYS["model.name"].default)
    p.add_argument("--share", default=KEYS["model.share"].default, choices=KEYS["model.share"].choices)
    p.add_argument("--batch-size", type=int, default=KEYS["optim.batch_size"].default)
    p.add_argument("--in-chans", type=int, default=3, help="1 for Fashion-MNIST-shaped input")
    p.add_argument("--input-size", type=int, help="image side (default: the model's native size)")
    p.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    p.add_argument("--rounds", type=int, default=11, help="interleaved rounds; the median is reported")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="run.KEY=VALUE",
                   help="fast-path settings, e.g. run.compile=off or run.precision=fp32")  # fmt: skip
    p.add_argument("--choices", action="store_true",
                   help="CPU: time each fast-path choice (precision, layout, compile, fused BatchNorm)")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..bench import format_table, run_bench
    from ..engine.config import ConfigError

    for name, value in (("--batch-size", args.batch_size), ("--steps", args.steps), ("--rounds", args.rounds)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if args.choices:
        from ..bench import format_choices, run_choices

        result = run_choices(args.model, args.share, args.batch_size, args.steps, args.rounds, max(1, args.warmup),
                             args.in_chans, args.input_size)  # fmt: skip
        print(json.dumps(result, indent=2) if args.json else format_choices(result))
        return 0
    result = run_bench(args.model, args.share, args.batch_size, args.steps, args.rounds, max(1, args.warmup),
                       parse_set(args.set), args.in_chans, args.input_size)  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
