"""The study runner and report on a tiny real-data budget; the experiment files as published rows."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

import sharenet
from sharenet.engine.config import apply, flatten
from sharenet.engine.recipes import recipe_config
from sharenet.engine.validate import check_config

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
    spec.write_text(yaml.safe_dump({
        "name": "tiny", "recipe": "fashion-mnist", "models": ["resnet14"], "schemes": ["none", "stage"],
        "seeds": [0, 1], "out": str(tmp_path / "runs"),
        "base": {"data": {"data_dir": str(fmnist_dir)}, "optim": {"batch_size": 64},
                 "run": {"max_steps": 3, "log_every": 1, "checkpoint_every": 1}},
    }))  # fmt: skip
    first = sharenet_cli("study", str(spec), "--max-runs", "3")  # seed-major: none-s0, stage-s0, none-s1
    assert "0 already done, 3 ran, 0 failed, 1 left" in first.stdout
    interrupted = tmp_path / "runs" / "resnet14-none-s1"
    (interrupted / "summary.json").unlink()  # as if killed after its last checkpoint
    second = sharenet_cli("study", str(spec))
    assert "2 already done, 2 ran, 0 failed, 0 left" in second.stdout
    assert "resumed from" in second.stderr
    summaries = {d.name: json.loads((d / "summary.json").read_text()) for d in (tmp_path / "runs").iterdir()}
    assert len(summaries) == 4 and all(s["steps"] == 3 for s in summaries.values())

    out = tmp_path / "report" / "results.md"
    sharenet_cli("report", str(tmp_path / "runs"), "--out", str(out))
    rows = list(csv.DictReader(out.with_suffix(".csv").read_text().splitlines()))
    assert [(r["model"], r["share"], r["n"]) for r in rows] == [("resnet14", "none", "2"), ("resnet14", "stage", "2")]
    stage = next(r for r in rows if r["share"] == "stage")
    mean = (summaries["resnet14-stage-s0"]["test_top1"] + summaries["resnet14-stage-s1"]["test_top1"]) / 2
    assert float(stage["test_top1"]) == pytest.approx(mean)
    assert float(stage["params"]) == summaries["resnet14-stage-s0"]["params"]
    text = out.read_text()
    assert "| fashion-mnist | resnet14 | stage |" in text and "Final-epoch" in text
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
