"""The study runner and report on a tiny real-data budget; the experiment files as published rows."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from PIL import Image

import sharenet
from sharenet.engine.config import apply, flatten
from sharenet.engine.recipes import recipe_config
from sharenet.engine.validate import check_config
from sharenet.study.ablation import recipe_of
from sharenet.study.claims import answer_claims
from sharenet.study.frontier import equal_budget_markdown, frontier_markdown, frontier_plot
from sharenet.study.records import T975, RunRecord, judge, mean_std
from sharenet.study.runner import load_spec, plan_runs

from .helpers import DOCS, newest_checkpoint_step, regenerate_page
from .test_train_cli import sharenet_cli

EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml"))
ROWS = [p for p in EXPERIMENTS if not p.name.endswith("study.yaml")]


@pytest.mark.parametrize("path", ROWS, ids=lambda p: p.stem)
def test_experiment_files_build_the_paper_rows(path):
    tree = yaml.safe_load(path.read_text())
    assert {"paper", "expected", "command", "recipe", "model"} <= set(tree)
    cfg = apply(recipe_config(tree["recipe"]), flatten(tree, str(path)))
    check_config(cfg)
    classes = 100 if cfg.data.dataset == "cifar100" else 1000 if cfg.data.dataset == "imagefolder" else 10
    model = sharenet.create_model(cfg.model.name, share=cfg.model.share, num_classes=classes)
    if "params" in tree["expected"]:
        assert sharenet.count_params(model) == tree["expected"]["params"]
    assert path.name in tree["command"]


@pytest.mark.slow
def test_study_runs_skips_resumes_and_reports(fmnist_dir, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "recipe": "fashion-mnist",
                "models": ["resnet14"],
                "schemes": ["none", "stage"],
                "seeds": [0, 1],
                "out": str(tmp_path / "runs"),
                "base": {
                    "data": {"data_dir": str(fmnist_dir)},
                    "optim": {"batch_size": 64},
                    "run": {"max_steps": 3, "log_every": 1, "checkpoint_every": 1},
                },
            }
        )
    )
    first = sharenet_cli("study", str(spec), "--max-runs", "3")  # seed-major: none-s0, stage-s0, none-s1
    assert "0 already done, 3 ran, 0 failed, 1 left" in first.stdout
    interrupted = tmp_path / "runs" / "resnet14-none-s1"
    (interrupted / "summary.json").unlink()  # as if killed after its last checkpoint
    second = sharenet_cli("study", str(spec), "--jobs", "2")  # two runs at once, each logging to its train.log
    assert "2 already done, 2 ran, 0 failed, 0 left" in second.stdout
    assert "resumed from" in (interrupted / "train.log").read_text()
    assert (tmp_path / "runs/resnet14-stage-s1/train.log").exists()
    summaries = {d.name: json.loads((d / "summary.json").read_text()) for d in (tmp_path / "runs").iterdir()}
    assert len(summaries) == 4 and all(s["steps"] == 3 for s in summaries.values())

    out = tmp_path / "report" / "results.md"
    notes = tmp_path / "notes.md"
    notes.write_text("## Discussion\n\nHand-written discussion.\n")
    sharenet_cli("report", str(tmp_path / "runs"), "--out", str(out), "--title", "Tiny study", "--notes", str(notes))
    rows = list(csv.DictReader(out.with_suffix(".csv").read_text().splitlines()))
    assert [(r["model"], r["share"], r["n"]) for r in rows] == [("resnet14", "none", "2"), ("resnet14", "stage", "2")]
    stage = next(r for r in rows if r["share"] == "stage")
    mean = (summaries["resnet14-stage-s0"]["test_top1"] + summaries["resnet14-stage-s1"]["test_top1"]) / 2
    assert float(stage["test_top1"]) == pytest.approx(mean)
    assert float(stage["params"]) == summaries["resnet14-stage-s0"]["params"]
    text = out.read_text()
    assert "| fashion-mnist | resnet14 | stage |" in text and "Final-epoch" in text
    assert text.startswith("# Tiny study\n") and text.rstrip().endswith("Hand-written discussion.")
    paired = [
        summaries[f"resnet14-stage-s{s}"]["test_top1"] - summaries[f"resnet14-none-s{s}"]["test_top1"] for s in (0, 1)
    ]
    claim = next(line for line in text.splitlines() if "| resnet14 stage - none |" in line)
    assert f"| {100 * sum(paired) / 2:+.2f} [" in claim and "| 2 |" in claim
    for png in tmp_path.joinpath("report").glob("*.png"):
        with Image.open(png) as img:
            assert img.format == "PNG"
    assert len(list(tmp_path.joinpath("report").glob("*.png"))) == 2


def test_bad_study_spec_is_refused(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("models: [resnet8]\nschemes: [none]\nseeds: [0]\nbse: {}\n")
    proc = sharenet_cli("study", str(spec), check=False)
    assert proc.returncode == 2 and "unknown study keys ['bse']" in proc.stderr
    proc = sharenet_cli("report", str(tmp_path / "nothing"), check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_budget_study_plans_its_grid_with_each_lines_seeds(tmp_path):
    """The budget study's spec: 8 seeds for resnet20's claims grid and resnet14, 10 for resnet56
    none/block, 5 for every frontier line and resnet8, 3 for the rest; seed-major."""
    spec = load_spec(Path(__file__).parent.parent / "experiments" / "budget" / "study.yaml")
    runs = plan_runs(spec)
    names = [r.out.name for r in runs]
    assert len(runs) == len(set(names)) == 4 * 8 + 2 * 10 + 3 * 3 + 13 * 5
    assert "resnet56-ring-params20000-s4" in names and "resnet56-ring-params20000-s5" not in names
    assert "resnet56-stage-s2" in names and "resnet56-stage-s3" not in names
    assert [r.seed for r in runs] == sorted(r.seed for r in runs)  # every line has seed 0 before any has seed 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [resnet8]\nschemes: [none]\nseeds: [0]\nextra_runs: [{model: resnet14, seeds: 1}]\n")
    proc = sharenet_cli("study", str(bad), check=False)
    assert proc.returncode == 2 and "'seeds' must be a non-empty list of integers, got 1" in proc.stderr


def test_a_spec_of_extra_runs_alone_plans_each_runs_seeds(tmp_path):
    """The compression frontier's specs have no grid: each run names its scheme, options and seeds."""
    spec = load_spec(Path(__file__).parent.parent / "experiments" / "compress" / "frontier.yaml")
    names = [r.out.name for r in plan_runs(spec)]
    assert len(names) == len(set(names)) == 12 + 2 * 2 and spec.models == spec.seeds == ()
    assert names[-4:] == ["resnet56-stage-r8-s1", "resnet56-stage_all-r13-s1", "resnet56-stage-r8-s2",
                          "resnet56-stage_all-r13-s2"]  # fmt: skip
    assert dict(plan_runs(spec)[1].sets) == {"model.relax_rank": 8} and spec.base["optim.epochs"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("extra_runs: [{model: resnet8}]\n")
    proc = sharenet_cli("study", str(bad), check=False)
    assert proc.returncode == 2 and "'seeds' must be a non-empty list of integers, got ()" in proc.stderr
    bad.write_text("models: [resnet8]\nextra_runs: [{model: resnet8, seeds: [0]}]\n")
    proc = sharenet_cli("study", str(bad), check=False)
    assert proc.returncode == 2 and "'schemes' must be a non-empty list (or give extra_runs alone)" in proc.stderr


def _record(model, share, seed, params, top1, train_error):
    return RunRecord(Path("."), "fashion-mnist", model, share, seed, params, top1, train_error, 3.0, 1.0, [], [])


def test_frontier_pairs_each_line_with_the_plain_one_at_its_budget(tmp_path):
    """#29's frontier: lines of runs that differ only in their budget, paired by seed per budget."""
    records = []
    for budget, (plain, ring) in {20_000: (17_254, 20_000), 45_000: (40_906, 45_000)}.items():
        for seed in (0, 1):
            at = {"budget": budget}
            records.append(
                replace(
                    _record("resnet20", "none", seed, plain, 0.80 + 0.01 * seed, 0.1),
                    **at,
                    variant=f"width 4, budget {budget:,}",
                )
            )
            records.append(
                replace(
                    _record("resnet56", "ring", seed, ring, 0.85 + 0.01 * seed, 0.1),
                    **at,
                    variant=f"ring_size=15,142, budget {budget:,}",
                )
            )
    records.append(_record("resnet8", "none", 0, 40_000, 0.79, 0.1))  # an unbudgeted point in range
    table = frontier_markdown(records)
    assert "| 20,000 | 17,254: 80.50 ± 0.71 (2) | 20,000: 85.50 ± 0.71 (2) | +5.00 [+5.00, +5.00] (better) |" in table
    assert "- resnet56 ring against resnet20 none: better at every budget up to 45,000 parameters." in table
    lost = [
        replace(r, test_top1=0.7 + 0.01 * r.seed) if r.share == "ring" and r.budget == 45_000 else r for r in records
    ]
    assert "up to 20,000 parameters; above it, 45,000: worse." in frontier_markdown(lost)
    assert "better at no budget from the smallest up (20,000: worse; 45,000: worse)." in frontier_markdown(
        [replace(r, test_top1=0.7 + 0.01 * r.seed) if r.share == "ring" else r for r in records]
    )
    assert frontier_markdown(records[:2]) == ""  # one budget per line: no frontier
    png = frontier_plot(records, tmp_path / "frontier.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and Image.open(png).size[0] > 500


def test_equal_budget_ranks_the_networks_that_meet_it_against_the_plain_one():
    """#29's equal-budget table: networks solved for the budget, or within 2 % of it at their family's
    width, most accurate first, each paired by seed with the plain network at its family's width."""
    b = 172_666
    records = []
    for seed in (0, 1, 2):
        records += [
            _record("resnet14", "none", seed, 172_218, 0.930 + 0.001 * seed, 0.06),
            _record("resnet20", "block", seed, 170_362, 0.928 + 0.002 * seed, 0.05),  # within 2 %: meets it
            replace(_record("resnet56", "ring", seed, b, 0.935 + 0.001 * seed, 0.05), budget=b,
                    variant=f"ring_size=167,808, budget {b:,}"),
            replace(_record("resnet20", "none", seed, 151_966, 0.928, 0.06), budget=b,
                    variant=f"width 12, budget {b:,}"),
            _record("resnet20", "none", seed, 269_434, 0.931, 0.05),  # 56 % above: not at this budget
        ]  # fmt: skip
    table = equal_budget_markdown(records)
    rows = [line for line in table.splitlines() if line.startswith("| resnet")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| resnet56 ring (ring_size=167,808)",
        "| resnet14 none",
        "| resnet20 block",
        "| resnet20 none (width 12)",
    ]
    assert rows[0].endswith("| 93.60 ± 0.10 | 5.00 | +0.50 [+0.50, +0.50] (better) |")
    unresolved = "not resolved at n = 3: about 7 seeds would settle it if the spread holds"
    assert rows[2].endswith(f"| -0.10 [-0.35, +0.15] ({unresolved}) |")
    assert rows[1].endswith("| 6.00 |  |")
    assert "against resnet14 none" in table and "269,434" not in table
    assert equal_budget_markdown(records[:3]) == ""  # three networks: no table


def test_claims_pair_seeds_and_match_parameter_counts():
    records = (
        [_record("resnet32", "none", s, 464_154, top1, 0.05) for s, top1 in ((0, 0.920), (1, 0.924), (2, 0.922))]
        + [_record("resnet56", "none", s, 853_018, 0.930, 0.04) for s in (0, 1, 2)]
        + [_record("resnet56", "stage", s, 465_946, top1, 0.045) for s, top1 in ((0, 0.925), (1, 0.926), (2, 0.927))]
    )
    answers = {a.comparison: a for a in answer_claims(records)}
    cost = answers["resnet56 stage - none"]  # cost 0.40 [0.15, 0.65] pts: its interval lies under the 1 point
    assert cost.diffs == pytest.approx([-0.005, -0.004, -0.003]) and cost.verdict == "holds (cost < 1 pts)"
    same = answers["resnet56 stage (465,946) - resnet32 none (464,154)"]
    assert same.diffs == pytest.approx([0.005, 0.002, 0.005]) and same.verdict.startswith("not resolved at n = 3")
    assert not any("resnet32 none" in c for c in answers if c.startswith("resnet56 none"))  # unshared vs unshared
    assert "block" not in " ".join(answers)  # no block runs, no block claims
    one_seed = answer_claims([r for r in records if r.seed == 0])  # a first chunk of a study: n = 1
    assert all(len(a.diffs) == 1 and a.verdict == "not resolved at n = 1" for a in one_seed)


def test_claim_one_is_judged_by_the_interval_against_the_papers_tolerance():
    """Stage sharing's tolerance is 1 point: the cost's interval decides, not its mean."""
    none = [_record("resnet20", "none", s, 269_434, 0.93, 0.05) for s in (0, 1, 2)]

    def verdict(costs):
        stage = [_record("resnet20", "stage", s, 172_666, 0.93 - c, 0.05) for s, c in enumerate(costs)]
        return answer_claims(none + stage)[0].verdict

    assert verdict([0.004, 0.005, 0.006]) == "holds (cost < 1 pts)"  # 0.50 [0.25, 0.75]
    assert verdict([0.014, 0.015, 0.016]) == "fails (cost > 1 pts)"  # 1.50 [1.25, 1.75]
    assert verdict([0.000, 0.005, 0.010]).startswith("not resolved at n = 3: about")  # 0.50 [-0.74, 1.74]


def _spread(mean: float, std: float, n: int) -> list[float]:
    """n values with exactly this mean and sample std."""
    z = [i - (n - 1) / 2 for i in range(n)]
    scale = std / mean_std(z)[1]
    return [mean + scale * x for x in z]


def test_a_mean_inside_its_std_is_resolved_by_the_t_interval_at_eight_seeds():
    """The old rule (|mean| <= std: not resolved) could never be settled by more seeds; the interval,
    t(7) * std / sqrt(8) = 0.84 std at n = 8, is."""
    diffs = _spread(0.009, 0.010, 8)
    mean, std = mean_std(diffs)
    assert abs(mean) <= std  # what the std rule called not resolved
    assert judge(diffs) == "better" and judge([-d for d in diffs]) == "worse"
    assert judge(diffs, "holds", "fails") == "holds"


def test_an_interval_over_zero_names_the_seeds_that_would_settle_it():
    """+1.00 ± 1.00 at n = 3: t(2) * 1 / sqrt(3) = 2.48 covers zero; the smallest n with
    t(n-1) / sqrt(n) < 1 is 7 (2.447 / 2.646), so seven seeds of the same spread settle it and six do not."""
    diffs = [0.01, 0.0, 0.02]
    assert judge(diffs) == "not resolved at n = 3: about 7 seeds would settle it if the spread holds"
    assert judge(_spread(0.01, 0.01, 7)) == "better"
    assert judge(_spread(0.01, 0.01, 6)).startswith("not resolved at n = 6: about 7 seeds")
    never = "not resolved at n = 3: more than 50 seeds would be needed if the spread holds"
    assert judge([0.001, -0.001, 0.0005]) == never
    assert judge([0.05]) == "not resolved at n = 1"  # one pair has no spread, however large its difference


def test_the_t_table_is_students_975_quantile():
    """Each entry's t distribution function is 0.975 (Simpson's rule on the density)."""

    def cdf(x, df, steps=2000):
        c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
        f = [c * (1 + (i * x / steps) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
        return 0.5 + x / steps / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    assert len(T975) == 60
    assert all(abs(cdf(t, df) - 0.975) < 2e-5 for df, t in enumerate(T975, 1))


def test_claim_three_pairs_by_seed_not_against_the_others_mean():
    """Seeds that move both networks alike: paired, the shared one is better on every seed; against
    the other's mean, its seeds' spread would hide that. Shuffling the partner's seeds undoes it."""
    deep = [_record("resnet20", "block", s, 170_362, 0.920 + 0.01 * s, 0.05) for s in (0, 1, 2)]
    plain = [_record("resnet14", "none", s, 172_218, 0.918 + 0.01 * s, 0.05) for s in (0, 1, 2)]
    answer = next(a for a in answer_claims(deep + plain) if a.claim.startswith("3."))
    assert answer.comparison == "resnet20 block (170,362) - resnet14 none (172,218)"
    assert answer.diffs == pytest.approx([0.002] * 3) and answer.verdict == "holds"
    unpaired = [r.test_top1 - mean_std([p.test_top1 for p in plain])[0] for r in deep]
    assert judge(unpaired) != "holds"  # the rule this claim used before: against the other's mean
    shuffled = [replace(r, seed=(r.seed + 1) % 3) for r in plain]
    answer = next(a for a in answer_claims(deep + shuffled) if a.claim.startswith("3."))
    assert answer.diffs == pytest.approx([-0.018, 0.012, 0.012]) and answer.verdict.startswith("not resolved")


def test_published_report_regenerates_from_its_run_records(tmp_path):
    """docs/study-3-epochs.md is exactly what `sharenet report` makes of the committed run records."""
    out = regenerate_page("study-3-epochs", tmp_path)
    rows = list(csv.DictReader(out.with_suffix(".csv").read_text().splitlines()))
    assert len(rows) == 9 and all(r["n"] == "3" for r in rows)  # 3 models x 3 schemes x 3 seeds


def _study_spec(path, fmnist_dir, max_steps: int) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "name": "two",
                "recipe": "fashion-mnist",
                "models": ["resnet8"],
                "schemes": ["none", "stage"],
                "seeds": [0],
                "out": str(path.parent / "runs"),
                "base": {
                    "data": {"data_dir": str(fmnist_dir)},
                    "optim": {"batch_size": 32, "epochs": 10**5},
                    "run": {"max_steps": max_steps, "log_every": 5, "checkpoint_every": 5, "compile": "off"},
                },
            }
        )
    )
    return path


@pytest.mark.slow
def test_interrupted_parallel_study_stops_its_runs_and_resumes(fmnist_dir, tmp_path):
    """Ctrl-C on `sharenet study --jobs 2`: both runs stop, nothing is lost, the next call finishes them.

    The first call's step budget is far beyond what any CPU trains before the interrupt, so the
    interrupt always lands while both runs train, whatever the machine's speed or load."""
    spec = _study_spec(tmp_path / "two.yaml", fmnist_dir, max_steps=10**7)
    runs = [tmp_path / "runs" / f"resnet8-{s}-s0" for s in ("none", "stage")]
    cmd = [sys.executable, "-m", "sharenet", "study", str(spec), "--jobs", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600  # a guard against a hung study, not part of the verdict
    while not all(newest_checkpoint_step(r) >= 0 for r in runs) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the study ended before both runs wrote a checkpoint: " + proc.stderr.read()[-2000:]
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "stopped by SIGINT" in err and "run the study again" in err
    assert not any((r / "summary.json").exists() for r in runs)
    left = [sorted(r.iterdir()) for r in runs]
    time.sleep(1)
    assert [sorted(r.iterdir()) for r in runs] == left  # the runs had stopped before the study returned
    budget = max(newest_checkpoint_step(r) for r in runs) + 10  # a few steps beyond where the faster run stopped
    again = sharenet_cli("study", str(_study_spec(spec, fmnist_dir, budget)), "--jobs", "2")
    assert "0 already done, 2 ran, 0 failed, 0 left" in again.stdout
    for r in runs:
        assert "resumed from" in (r / "train.log").read_text()
        assert json.loads((r / "summary.json").read_text())["steps"] == budget


def test_ablation_report_compares_variants_on_the_held_out_split(fmnist_dir, tmp_path):
    """Two real variants (two seeds each): the row names the changed setting, its mean and the difference."""
    for name, lr in (("base", 0.1), ("lower-lr", 0.05)):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "name": name,
                    "recipe": "fashion-mnist",
                    "models": ["resnet8"],
                    "schemes": ["stage"],
                    "seeds": [0, 1],
                    "out": str(tmp_path / "ablation" / name),
                    "base": {
                        "data": {"data_dir": str(fmnist_dir), "val_split": 560},
                        "optim": {"batch_size": 64, "lr": lr},
                        "run": {"max_steps": 4, "compile": "off"},
                    },
                }
            )
        )
        sharenet_cli("study", str(spec), "--jobs", "2")
    val = {
        d.parent.name + d.name[-3:]: json.loads((d / "summary.json").read_text())["val_top1"]
        for d in (tmp_path / "ablation").glob("*/*")
    }
    out = tmp_path / "ablation.md"
    proc = sharenet_cli(
        "report", "--ablation", str(tmp_path / "ablation/base"), str(tmp_path / "ablation/lower-lr"), "--out", str(out)
    )
    base, lower = (sum(val[f"{n}-s{s}"] for s in (0, 1)) / 2 for n in ("base", "lower-lr"))
    row = next(line for line in out.read_text().splitlines() if line.startswith("| lower-lr |"))
    assert f"| `optim.lr=0.05` | 0, 1 | {100 * lower:.2f} ± " in row and f"| {100 * (lower - base):+.2f} |" in row
    assert "| base | baseline | 0, 1 |" in proc.stdout and "test" not in row

    mixed = sharenet_cli("report", "--ablation", str(tmp_path / "ablation"), "--out", str(out), check=False)
    assert mixed.returncode != 0 and "runs differ in optim.lr; one variant per folder" in mixed.stderr
    assert len(mixed.stderr.strip().splitlines()) == 1


ABLATION = (
    "default",
    "base",
    "with-crop",
    "no-smoothing",
    "lr-0.1",
    "screen-zero-init",
    "screen-batch-64",
    "screen-base-batch-64",
)
ABLATION_TITLE = "The 5-epoch recipe, ablation on the held-out split"
TEST_REPORTS = [
    ("test-5-seeds", "recipe-5-epochs-test", "bfloat16"),
    ("test-5-seeds-avx2", "recipe-5-epochs-test-avx2", "float32"),
]


def test_published_ablation_regenerates_from_its_run_records(tmp_path):
    """#15's ablation on the held-out split, one row per variant folder."""
    docs = Path(__file__).parent.parent / "docs"
    variants = [str(docs / "recipe-5-epochs" / v) for v in ABLATION]
    out = tmp_path / "recipe-5-epochs.md"
    sharenet_cli(
        "report",
        "--ablation",
        *variants,
        "--out",
        str(out),
        "--title",
        ABLATION_TITLE,
        "--notes",
        str(docs / "recipe-5-epochs-notes.md"),
    )
    assert out.read_text() == (docs / "recipe-5-epochs.md").read_text()


def test_budget_first_look_regenerates_from_its_run_records(tmp_path):
    """#24's first look: every scheme at resnet20 stage's 172,666 parameters, each run its spec's."""
    out = regenerate_page("budget-first-look", tmp_path)
    root = DOCS.parent
    spec = load_spec(root / "experiments" / "budget" / "first-look.yaml")
    assert all((root / run.out / "summary.json").is_file() for run in plan_runs(spec))  # every run of the spec
    rows = list(csv.DictReader(out.with_suffix(".csv").read_text().splitlines()))
    assert all(abs(int(r["params"]) - 172_666) <= 0.13 * 172_666 for r in rows) and len(rows) == 6


def test_budget_study_regenerates_and_holds_only_its_specs_runs_of_the_default_recipe(tmp_path):
    """#29's study: the committed report is `sharenet report` of the committed records, every run of
    experiments/budget/study.yaml is among them, and each record is one of its runs, made by the
    default recipe as the spec says."""
    regenerate_page("budget-study", tmp_path)
    root = DOCS.parent
    planned = {run.out.name: run for run in plan_runs(load_spec(root / "experiments" / "budget" / "study.yaml"))}
    done = [run for run in planned.values() if (root / run.out / "summary.json").is_file()]
    # more seeds are still coming in: every line keeps at least the seeds of the study's first 55 runs
    # (2 for the frontier below 172,666, resnet20 ring at 172,666 and resnet8; 3 for the rest)
    two_seeds = ("params20000", "params45000", "params75000", "resnet20-ring-params172666", "resnet8-")
    first = {name for name, run in planned.items() if run.seed < (2 if any(k in name for k in two_seeds) else 3)}
    assert first <= {run.out.name for run in done} and len(first) == 55

    def trained_how(config: dict) -> dict:  # the recipe: every key but the network's and the seed
        return {k: v for k, v in recipe_of(config).items() if not k.startswith("model.") and k != "run.seed"}

    default = trained_how(recipe_config("fashion-mnist").to_dict())
    for summary in (DOCS / "budget" / "study").glob("*/summary.json"):
        run = planned[summary.parent.name]  # KeyError: a record the spec does not make
        config = json.loads((summary.parent / "config.json").read_text())
        model, seed = config["model"], config["run"]["seed"]
        assert (model["name"], model["share"], seed) == (run.model, run.share, run.seed), summary.parent.name
        assert all(config[k.split(".")[0]][k.split(".")[1]] == v for k, v in run.sets), summary.parent.name
        assert config["recipe"] == "fashion-mnist" and trained_how(config) == default, summary.parent.name
        assert json.loads(summary.read_text())["epochs"] == 5


@pytest.mark.parametrize(("folder", "report", "dtype"), TEST_REPORTS)
def test_published_test_seeds_regenerate_and_are_of_the_default_recipe(tmp_path, folder, report, dtype):
    """#15's five test-set seeds of the default, once per fast path: bf16 and fp32 (a CPU without bf16)."""
    out = regenerate_page(report, tmp_path)
    rows = list(csv.DictReader(out.with_suffix(".csv").read_text().splitlines()))
    assert [(r["model"], r["share"], r["n"]) for r in rows] == [("resnet20", "stage", "5")]
    summaries = [json.loads(p.read_text()) for p in (DOCS / "recipe-5-epochs" / folder).glob("*/summary.json")]
    assert all(s["epochs"] == 5 and s["params"] == 172_666 and s["test_samples"] == 10_000 for s in summaries)
    configs = [json.loads(p.read_text()) for p in (DOCS / "recipe-5-epochs" / folder).glob("*/config.json")]
    assert sorted(c["run"]["seed"] for c in configs) == [0, 1, 2, 3, 4]
    assert all(
        c["recipe"] == "fashion-mnist" and c["data"]["val_split"] == 0 and c["env_dtype"] == dtype for c in configs
    )
    default = recipe_of(recipe_config("fashion-mnist").to_dict())
    assert all(recipe_of(c) == default for c in configs)  # every trained-what key, not two of them
