"""`sharenet bench` runs and reports every field; speed itself is never asserted here."""

import json

import torch

from sharenet.engine.device import use_compile

from .test_train_cli import sharenet_cli


def test_bench_json_has_the_measurements():
    proc = sharenet_cli("bench", "--model", "resnet8", "--batch-size", "8", "--steps", "1", "--rounds", "2",
                        "--warmup", "1", "--set", "run.compile=off", "--json")  # fmt: skip
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
    assert r["environment"]["fused_batchnorm"] is True and r["environment"]["keeps_freed_memory"] is True


def test_bench_table_and_bad_input():
    proc = sharenet_cli("bench", "--model", "resnet8", "--batch-size", "4", "--steps", "1", "--rounds", "1",
                        "--warmup", "1", "--set", "run.compile=off")  # fmt: skip
    assert "plain eager fp32 NCHW (baseline)" in proc.stdout and "shared / unshared" in proc.stdout
    assert "median of per-round ratios" in proc.stdout
    bad = sharenet_cli("bench", "--batch-size", "0", check=False)
    assert bad.returncode == 2 and "--batch-size must be at least 1" in bad.stderr


def test_compile_policy():
    cpu = torch.device("cpu")
    assert not use_compile("auto", cpu, 100)  # a short run would not repay compilation
    assert not use_compile("off", cpu, 10**6) and use_compile("on", cpu, 1)


def test_keeping_freed_memory_stops_the_page_faults():
    import subprocess
    import sys

    code = """
import resource, sys, torch
from sharenet.engine.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.empty(16 << 20).fill_(1)  # 64 MiB: above glibc's largest mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(16 << 20).fill_(1)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {m: int(subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True, check=True).stdout)
              for m in ("default", "keep")}  # fmt: skip
    assert faults["default"] > 10 * 10_000 and faults["keep"] < faults["default"] / 5, faults
