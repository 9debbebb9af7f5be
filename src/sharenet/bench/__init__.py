"""`sharenet bench`: measured speed, never asserted. What one benchmark measures is one `BenchSpec`
(spec.py); every variant is timed the same way (timing.py: interleaved rounds, medians, per-round
ratios), so that machine noise hits all alike; train.py times the training step `sharenet train`
builds against a plain baseline and the unshared network, infer.py one network in four inference
runtimes. Only the CLI (`cli/bench_cmd.py`) reaches it; nothing else in the package imports it."""
