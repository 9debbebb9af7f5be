"""What one benchmark measures: the network, its input, and how long each variant is timed.

`sharenet bench` builds one spec from its flags; the training benchmark (train.py) and the
inference one (infer.py) read the fields that apply to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.config import KEYS


@dataclass(frozen=True)
class BenchSpec:
    model: str = KEYS["model.name"].default  # a registry name (resnet20, resnet56, ...)
    share: str = KEYS["model.share"].default  # the sharing scheme measured; its options come in `overrides`
    batch_size: int = KEYS["optim.batch_size"].default  # images per timed call (inference: the throughput batch)
    in_chans: int = 3  # 1 for Fashion-MNIST-shaped input
    input_size: int | None = None  # image side; None: the model's native size
    steps: int = 5  # timed calls per variant per round (inference: at the throughput batch)
    rounds: int = 11  # interleaved rounds; figures are medians over them
    warmup: int = 3  # untimed calls of each variant before the first round (batch 1: ten times as many)
    overrides: dict[str, object] = field(default_factory=dict)  # training: config keys (run.precision, ...)
    calls: int = 100  # inference: batch-1 calls per variant per round
    threads: int | None = None  # inference: threads for every runtime; None: torch's default here
    weights: str | None = None  # inference: a trained model (run or file); None: random weights
