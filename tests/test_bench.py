"""`sharenet bench` runs and reports every field; speed itself is never asserted here."""

import json
import platform

import pytest
import torch

from sharenet.engine.fastpath import compiler_available, use_compile

from .test_train_cli import sharenet_cli


def test_bench_json_has_the_measurements():
    proc = sharenet_cli(
        "bench",
        "--model",
        "resnet8",
        "--batch-size",
        "8",
        "--steps",
        "1",
        "--rounds",
        "2",
        "--warmup",
        "1",
        "--set",
        "run.compile=off",
        "--json",
    )
    r = json.loads(proc.stdout)
    keys = (
        "train_img_per_s",
        "baseline_img_per_s",
        "unshared_train_img_per_s",
        "infer_img_per_s",
        "baseline_infer_img_per_s",
        "fraction_of_matmul_peak",
        "shared_vs_unshared",
        "speedup_vs_baseline",
        "speedup_vs_baseline_paired",
        "shared_vs_unshared_paired",
    )
    assert all(r[key] > 0 for key in keys)
    assert r["environment"]["torch"] == torch.__version__ and r["environment"]["threads"] >= 1
    assert r["compiled"] is False and r["macs_per_image"] > 0
    cpu = torch.device("cpu")  # eager fp32 channels_last: the fused kernel where it can be built; glibc's setting
    assert r["environment"]["fused_batchnorm"] is compiler_available(cpu) and r["environment"]["isa"]
    assert r["environment"]["keeps_freed_memory"] is (platform.libc_ver()[0] == "glibc")


def test_bench_table_and_bad_input():
    proc = sharenet_cli(
        "bench",
        "--model",
        "resnet8",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--warmup",
        "1",
        "--set",
        "run.compile=off",
    )
    assert "plain eager fp32 NCHW (baseline)" in proc.stdout and "shared / unshared" in proc.stdout
    assert "median of per-round ratios" in proc.stdout
    bad = sharenet_cli("bench", "--batch-size", "0", check=False)
    assert bad.returncode == 2 and "--batch-size must be at least 1" in bad.stderr


def test_compile_policy():
    cpu = torch.device("cpu")
    assert not use_compile("auto", cpu, 100)  # a short run would not repay compilation
    assert not use_compile("off", cpu, 10**6) and use_compile("on", cpu, 1)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's mallopt")
def test_keeping_freed_memory_stops_the_page_faults():
    """64 MiB is above glibc's largest dynamic mmap threshold: by default every allocation of it is
    a fresh mapping that faults its 16,384 pages in; kept, it is reused (the first reuses may still
    fault while the heap settles, so the median over 20 allocations is compared)."""
    import subprocess
    import sys

    code = """
import resource, statistics, sys, torch
from sharenet.engine.fastpath import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
per = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 << 20).fill_(1)
    per.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(per))
"""

    def median_faults(mode: str) -> float:
        run = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True)
        return float(run.stdout)

    faults = {mode: median_faults(mode) for mode in ("default", "keep")}
    assert faults["default"] >= 16_000 and faults["keep"] < 1_000, faults


def _isa_in_subprocess(env: dict) -> dict:
    import os
    import subprocess
    import sys

    code = (
        "import json, torch; from sharenet.engine import device as d; cpu = torch.device('cpu'); "
        "print(json.dumps({'isa': d.cpu_isa(), 'dtype': str(d.pick_dtype('auto', cpu))}))"
    )
    limits = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")  # only the ones the test sets
    base = {k: v for k, v in os.environ.items() if k not in limits}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_isa_level_and_autocast_follow_the_cpu_and_its_limits():
    """The level honours the limits oneDNN and ATen accept, and bf16 autocast needs native bf16."""
    from pathlib import Path

    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    native = _isa_in_subprocess({})
    if "amx_tile" in flags:
        assert native["isa"] == "AMX"
    elif "avx512_bf16" in flags:
        assert native["isa"] == "AVX512-BF16"
    elif "avx512f" in flags:
        assert native["isa"] == "AVX-512"  # oneDNN emulates bf16 here: autocast stays off
    expect_bf16 = native["isa"] in ("AMX", "AVX512-BF16")
    assert native["dtype"] == ("torch.bfloat16" if expect_bf16 else "torch.float32")
    if "avx2" in flags:
        limited = _isa_in_subprocess({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})
        assert limited == {"isa": "AVX2", "dtype": "torch.float32"}
        if "avx512f" in flags:  # oneDNN limited alone: ATen's AVX-512 kernels do not make it an AVX-512 machine
            assert _isa_in_subprocess({"ONEDNN_MAX_CPU_ISA": "AVX2"})["isa"] == "AVX2"


def test_choices_time_each_variant_against_the_baseline(monkeypatch):
    """The choice table's machinery on the eager variants (the compiled ones cost a compilation each)."""
    from sharenet.bench import train
    from sharenet.bench.spec import BenchSpec

    eager = {k: v for k, v in train.CHOICES.items() if "eager" in k}
    monkeypatch.setattr(train, "CHOICES", eager)
    r = train.run_choices(BenchSpec(model="resnet8", share="stage", batch_size=4, steps=1, rounds=2, warmup=1))
    assert [row["variant"] for row in r["rows"]] == ["baseline", *eager]
    assert all(row["train_img_per_s"] > 0 and row["infer_img_per_s"] > 0 for row in r["rows"])
    assert r["rows"][0]["train_ratio_paired"] == 1.0
    full_run_compiles = compiler_available(torch.device("cpu"))
    assert r["default_fast_path"]["isa"] and r["default_fast_path"]["compile"] is full_run_compiles
    table = train.format_choices(r)
    assert "fp32 channels_last eager + fused BN" in table and "sharenet train picks here:" in table


def test_fused_batchnorm_where_it_pays():
    """Eager and bf16 steps take the fused kernel; fp32 compiled ones leave BatchNorm to inductor."""
    import shutil

    from sharenet.engine.fastpath import FastPath, prepare
    from sharenet.models import create_model

    if not shutil.which("g++"):
        pytest.skip("the fused kernel needs a C++ compiler (g++) to build")
    cpu = torch.device("cpu")
    for dtype, compiled, fused in (
        (torch.float32, False, True),
        (torch.float32, True, False),
        (torch.bfloat16, True, True),
    ):
        model = create_model("resnet8", share="stage")
        fast = prepare(model, FastPath(cpu, "AVX-512", dtype, channels_last=True, compile=compiled))
        assert fast.fused_batchnorm is fused and ("kernel=fused" in str(model)) is fused
    nchw = prepare(create_model("resnet8"), FastPath(cpu, "AVX-512", torch.float32, channels_last=False, compile=False))
    assert nchw.fused_batchnorm is False


def test_compile_cache_is_keyed_by_the_isa_level():
    """A run limited to AVX2 and an unlimited one never share compiled kernels (torch 2.13 does not key them)."""
    import os
    import subprocess
    import sys

    code = (
        "import os; from sharenet.engine.fastpath import key_compile_cache_by_isa as k; k(); "
        "print(os.environ['TORCHINDUCTOR_CACHE_DIR'])"
    )
    base = {
        n: v
        for n, v in os.environ.items()
        if n not in ("TORCHINDUCTOR_CACHE_DIR", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
    }

    def cache_dir(**env) -> str:
        return subprocess.run(
            [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True
        ).stdout.strip()

    native, limited = cache_dir(), cache_dir(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    assert limited.endswith("-AVX2") and (native != limited or native.endswith("-AVX2"))
    assert cache_dir(TORCHINDUCTOR_CACHE_DIR="/tmp/chosen") == "/tmp/chosen"  # the user's choice stands


def test_the_speed_pages_scheme_table_is_its_records():
    """docs/speed.md's table of every scheme is `sharenet bench --table docs/speed/*.json`, and says
    what the done-when of the speed issue asks: each scheme's ratio and its MAC prediction."""
    import json
    from pathlib import Path

    from sharenet.bench.train import scheme_table

    docs = Path(__file__).resolve().parents[1] / "docs"
    records = [json.loads(p.read_text()) for p in sorted((docs / "speed").glob("*.json"))]
    page = (docs / "speed.md").read_text()
    start, end = "<!-- sharenet bench --table docs/speed/*.json -->\n", "\n<!-- end sharenet bench --table -->"
    assert page[page.index(start) + len(start) : page.index(end)] == scheme_table(records)
    shares = {(r["share"], tuple(r["options"].items()), r["environment"]["isa"]) for r in records}
    hard = {"stage", "block", "templates", "basis", "ring"}
    assert {s for s, _, i in shares if i == "AVX2"} == hard
    assert {s for s, _, i in shares if i == "AVX512-BF16"} == hard | {"stage_all"}
    relaxed = {s for s, options, i in shares if dict(options).get("relax_rank")}
    assert relaxed == {"stage", "stage_all", "ring"}  # relaxed sharing's step, natively
