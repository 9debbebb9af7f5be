"""`sharenet bench`: training and inference throughput of the fast path against a plain baseline.

Three variants are measured in one process, interleaved round by round so that machine noise
hits all alike: (1) the path `sharenet train` takes on this device (the engine's own Trainer:
channels_last, bf16 autocast where native, the fused BatchNorm(+add)+ReLU kernel, foreach SGD,
torch.compile when a full run would use it, freed memory kept in the process); (2) the same
network written plainly (eager, fp32, NCHW, default SGD); (3) the unshared counterpart on the
fast path. The allocator setting is process-wide, so the baseline gets it too: the ratios are, if
anything, understated. Reported: medians over rounds, ratios, and the fraction of the machine's
measured dense matmul rate that the training step achieves.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..engine.config import KEYS, Config, apply
from ..engine.device import autocast, cpu_isa, pick_device
from ..engine.fit import build_trainer
from ..models import SCHEMES, count_macs, create_model, use_fused_kernel
from .spec import BenchSpec
from .timing import interleaved, matmul_flops, medians, paired_ratio, warm_up


def _config(spec: BenchSpec, overrides: dict) -> Config:
    """The training config of `spec`'s network and batch, with `overrides` applied."""
    cfg = apply(Config(), {"model.name": spec.model, "model.share": spec.share, **overrides})
    return replace(cfg, optim=replace(cfg.optim, batch_size=spec.batch_size))


def _model(cfg: Config, share: str, spec: BenchSpec) -> torch.nn.Module:
    return create_model(cfg.model.name, in_chans=spec.in_chans, **_options(cfg, share, spec.in_chans))


def _inputs(model, spec: BenchSpec, device, channels_last: bool):
    size, chans = spec.input_size or model.arch.input_size, model.config["in_chans"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(spec.batch_size, chans, size, size, generator=g).to(device)
    y = torch.randint(0, model.config["num_classes"], (spec.batch_size,), generator=g).to(device)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def fast_path(cfg: Config, share: str, spec: BenchSpec, device, fused: bool = True) -> tuple[Callable, Callable, dict]:
    """(train step, inference step, facts) built by the engine exactly as training builds them.

    `fused=False` keeps plain BatchNorm where the engine would switch to the fused kernel."""
    model = _model(cfg, share, spec).to(device)
    trainer = build_trainer(cfg, model, device, steps_per_epoch=10_000)  # a full run's compile decision
    if not fused:
        use_fused_kernel(model, on=False)
        trainer.fast = replace(trainer.fast, fused_batchnorm=False)
    x, y = _inputs(model, spec, device, trainer.fast.channels_last)
    t0 = time.perf_counter()
    trainer.step(x, y, 0)  # the first step pays for compilation
    facts = {"compile_s": time.perf_counter() - t0, "fast_path": trainer.fast.record()}

    def infer():
        with torch.no_grad(), autocast(device, trainer.dtype):
            model.eval()(x)
        model.train()

    return (lambda: trainer.step(x, y, 1)), infer, facts


def _options(cfg: Config, share: str, in_chans: int) -> dict:
    """create_model's keywords for `share`, with the config's options for that scheme. Another scheme
    (the unshared comparison) gets the same architecture: the width a budget chose, not a budget."""
    m = cfg.model
    if share != m.share and m.params is not None:
        with torch.device("meta"):  # only the config is read: what the budget chose
            chosen = create_model(m.name, in_chans=in_chans, **m.create_kwargs()).config
        m = replace(m.resolved(chosen), params=None)
    return replace(m, share=share).create_kwargs()


def plain_path(cfg: Config, share: str, spec: BenchSpec, device) -> tuple[Callable, Callable]:
    """What a user writes by hand: eager, fp32, NCHW, torch.optim.SGD defaults."""
    model = _model(cfg, share, spec).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = _inputs(model, spec, device, False)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model.eval()(x)
        model.train()

    return step, infer


def run_bench(spec: BenchSpec) -> dict:
    cfg = _config(spec, spec.overrides)
    device = pick_device(cfg.run.device)
    fast_train, fast_infer, facts = fast_path(cfg, spec.share, spec, device)
    none_train, _, facts_none = fast_path(cfg, "none", spec, device)
    dtype = getattr(torch, facts["fast_path"]["dtype"])
    base_train, base_infer = plain_path(cfg, spec.share, spec, device)
    warm_up((fast_train, none_train, base_train, fast_infer, base_infer), spec.warmup)
    variants = {"fast": fast_train, "base": base_train, "none": none_train}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_rates = interleaved(variants, spec, device)
    peak_memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    train = medians(train_rates)
    infer = medians(interleaved({"fast": fast_infer, "base": base_infer}, spec, device))
    model = _model(cfg, spec.share, spec)
    size = spec.input_size or model.arch.input_size
    macs = count_macs(model, size, spec.in_chans)
    unshared = _model(cfg, "none", spec)
    predicted = count_macs(unshared, size, spec.in_chans) / macs  # shared / unshared speed were MACs the only cost
    peak = matmul_flops(device, dtype)
    achieved = 3 * 2 * macs * train["fast"]  # forward + two backward products per MAC, 2 FLOPs each
    return {
        "model": spec.model,
        "share": spec.share,
        "batch_size": spec.batch_size,
        "input": [spec.in_chans, size, size],
        "steps_per_round": spec.steps,
        "rounds": spec.rounds,
        "train_img_per_s": train["fast"],
        "baseline_img_per_s": train["base"],
        "unshared_train_img_per_s": train["none"],
        "speedup_vs_baseline": train["fast"] / train["base"],
        "shared_vs_unshared": train["fast"] / train["none"],
        "speedup_vs_baseline_paired": paired_ratio(train_rates, "fast", "base"),
        "shared_vs_unshared_paired": paired_ratio(train_rates, "fast", "none"),
        "infer_img_per_s": infer["fast"],
        "baseline_infer_img_per_s": infer["base"],
        "infer_speedup_vs_baseline": infer["fast"] / infer["base"],
        "compiled": facts["fast_path"]["compile"],
        "compile_s": facts["compile_s"],
        "compile_unshared_s": facts_none["compile_s"],
        "macs_per_image": macs,
        "mac_predicted_ratio": predicted,
        "train_tflops": achieved / 1e12,
        "matmul_tflops": peak / 1e12,
        "fraction_of_matmul_peak": achieved / peak,
        "environment": facts["fast_path"],
        "peak_memory_mib": peak_memory,
        "options": _named_options(cfg, spec.share, spec.in_chans),
        "date": datetime.date.today().isoformat(),
    }


def _named_options(cfg: Config, share: str, in_chans: int) -> dict:
    """The scheme's options that differ from their defaults (`basis: double`), for the records."""
    kwargs = _options(cfg, share, in_chans)
    return {k: v for k, v in kwargs.items() if k != "share" and v != KEYS[f"model.{k}"].default}


def scheme_table(records: list[dict]) -> str:
    """Markdown table of `sharenet bench --json` records: each scheme's training step against the
    unshared network's, and against what their multiply-accumulates predict."""
    lines = [
        "| CPU (ISA), date | fast path | scheme | shared train img/s | unshared | shared / unshared (per round) "
        "| MACs predict | of the prediction |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {scheme: i for i, scheme in enumerate(SCHEMES)}
    records = sorted(records, key=lambda r: (r["environment"]["isa"], order[r["share"]], str(r["options"]), r["date"]))
    for r in records:
        env, opts = r["environment"], ", ".join(f"{k}={v}" for k, v in r["options"].items())
        scheme = f"{r['model']} {r['share']}" + (f" ({opts})" if opts else "")
        lines.append(
            f"| {env['device_name']} ({env['isa']}), {r['date']} | {env['dtype']} {env['memory_format']}"
            f"{' compiled' if r['compiled'] else ''} | {scheme} | {r['train_img_per_s']:.0f} | "
            f"{r['unshared_train_img_per_s']:.0f} | {r['shared_vs_unshared']:.3f} "
            f"({r['shared_vs_unshared_paired']:.3f}) "
            f"| {r['mac_predicted_ratio']:.3f} | {r['shared_vs_unshared_paired'] / r['mac_predicted_ratio']:.3f} |"
        )
    return "\n".join(lines)


def format_table(r: dict) -> str:
    env = r["environment"]
    where = f"{env['threads']} threads" if env["isa"] != "cuda" else f"peak {r['peak_memory_mib']:.0f} MiB allocated"
    lines = [
        f"{r['model']} share={r['share']} batch {r['batch_size']}x{'x'.join(map(str, r['input']))}: "
        f"median of {r['rounds']} interleaved rounds "
        f"of {r['steps_per_round']} steps",
        f"{env['device_name']} ({env['isa']}), {where}, torch {env['torch']}, "
        f"fast path: {env['dtype']} "
        f"{env['memory_format']}{' compiled' if r['compiled'] else ''} (compile {r['compile_s']:.1f} s)"
        f"{', fused BatchNorm' if env['fused_batchnorm'] else ''}"
        f"{', freed memory kept' if env['keeps_freed_memory'] else ''}",
        f"{'variant':<40}{'train img/s':>12}{'ratio':>8}{'infer img/s':>13}{'ratio':>8}",
        f"{'plain eager fp32 NCHW (baseline)':<40}{r['baseline_img_per_s']:>12.0f}{1:>8.2f}"
        f"{r['baseline_infer_img_per_s']:>13.0f}{1:>8.2f}",
        f"{'sharenet fast path':<40}{r['train_img_per_s']:>12.0f}{r['speedup_vs_baseline']:>8.2f}"
        f"{r['infer_img_per_s']:>13.0f}{r['infer_speedup_vs_baseline']:>8.2f}",
        f"{'unshared, fast path':<40}{r['unshared_train_img_per_s']:>12.0f}"
        f"{r['unshared_train_img_per_s'] / r['baseline_img_per_s']:>8.2f}",
        f"shared / unshared training throughput: {r['shared_vs_unshared']:.3f} (multiply-accumulates predict "
        f"{r['mac_predicted_ratio']:.3f}: {r['shared_vs_unshared'] / r['mac_predicted_ratio']:.3f} of that)",
        f"median of per-round ratios: fast/baseline {r['speedup_vs_baseline_paired']:.2f}, "
        f"shared/unshared {r['shared_vs_unshared_paired']:.3f}",
        f"training step: {r['train_tflops']:.3f} TFLOP/s = {100 * r['fraction_of_matmul_peak']:.1f}% of this "
        f"machine's {env['dtype']} matmul rate on {env['isa']} ({r['matmul_tflops']:.2f} TFLOP/s)",
    ]
    return "\n".join(lines)


# The choices the fast path makes on a CPU, each timed as `sharenet train` would run it.
CHOICES = {
    "fp32 NCHW eager": ({"run.precision": "fp32", "run.channels_last": False, "run.compile": "off"}, False),
    "fp32 NCHW compiled": ({"run.precision": "fp32", "run.channels_last": False, "run.compile": "on"}, False),
    "fp32 channels_last eager": ({"run.precision": "fp32", "run.compile": "off"}, False),
    "fp32 channels_last eager + fused BN": ({"run.precision": "fp32", "run.compile": "off"}, True),
    "fp32 channels_last compiled": ({"run.precision": "fp32", "run.compile": "on"}, False),
    "fp32 channels_last compiled + fused BN": ({"run.precision": "fp32", "run.compile": "on"}, True),
    "bf16 channels_last compiled + fused BN": ({"run.precision": "bf16", "run.compile": "on"}, True),
}


def run_choices(spec: BenchSpec) -> dict:
    """Every CHOICES variant against the plain baseline, interleaved: what each choice gains here.

    Each choice sets the run keys itself, so `spec.overrides` does not apply; the CPU is timed."""
    device = torch.device("cpu")
    base_train, base_infer = plain_path(_config(spec, {}), spec.share, spec, device)
    train, infer, facts = {"baseline": base_train}, {"baseline": base_infer}, {}
    for label, (overrides, fused) in CHOICES.items():
        if overrides["run.precision"] == "bf16" and cpu_isa() == "AVX2":
            continue  # no bf16 kernels at all below AVX-512: far slower, nothing to learn
        train[label], infer[label], facts[label] = fast_path(_config(spec, overrides), spec.share, spec, device, fused)
    warm_up((*train.values(), *infer.values()), spec.warmup)
    train_rates = interleaved(train, spec, device)
    infer_rates = interleaved(infer, spec, device)
    train_median, infer_median = medians(train_rates), medians(infer_rates)
    rows = [
        {
            "variant": k,
            "train_img_per_s": train_median[k],
            "train_ratio_paired": paired_ratio(train_rates, k, "baseline"),
            "infer_img_per_s": infer_median[k],
            "infer_ratio_paired": paired_ratio(infer_rates, k, "baseline"),
            "compile_s": facts[k]["compile_s"] if k in facts else 0.0,
        }
        for k in train
    ]
    model = create_model(spec.model, share=spec.share, in_chans=spec.in_chans)
    chosen = build_trainer(_config(spec, {}), model, device, 10_000).fast.record()
    return {
        "model": spec.model,
        "share": spec.share,
        "batch_size": spec.batch_size,
        "rounds": spec.rounds,
        "steps_per_round": spec.steps,
        "input": [spec.in_chans, *[spec.input_size or model.arch.input_size] * 2],
        "rows": rows,
        "default_fast_path": chosen,
    }


def format_choices(r: dict) -> str:
    env = r["default_fast_path"]
    lines = [
        f"{r['model']} share={r['share']} batch {r['batch_size']}x{'x'.join(map(str, r['input']))} on "
        f"{env['device_name']} ({env['isa']}), {env['threads']} threads, torch {env['torch']}: median of "
        f"{r['rounds']} interleaved rounds of {r['steps_per_round']} steps; ratios are per-round medians",
        f"{'variant':<42}{'train img/s':>12}{'ratio':>8}{'infer img/s':>13}{'ratio':>8}{'compile s':>11}",
    ]
    for row in r["rows"]:
        lines.append(
            f"{row['variant']:<42}{row['train_img_per_s']:>12.0f}{row['train_ratio_paired']:>8.2f}"
            f"{row['infer_img_per_s']:>13.0f}{row['infer_ratio_paired']:>8.2f}"
            f"{row['compile_s']:>11.1f}"
        )
    fused = " + fused BN" if env["fused_batchnorm"] else ""
    lines.append(
        f"sharenet train picks here: {env['dtype']} {env['memory_format']}"
        f"{' compiled' if env['compile'] else ' eager'}{fused} (runs of >= 2,000 steps compile)"
    )
    return "\n".join(lines)
