"""`sharenet params` and `sharenet import`: the papers' tables and one model's accounting, as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sharenet
from sharenet.cli import main
from sharenet.paper import LEARNED_PARAMS

MODELS_DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def test_paper_tables_json_have_every_published_count(capsys):
    assert main(["params", "--json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in tables["sharesnet"]}
    assert rows["resnet152"]["baseline"] == 60_192_808 and rows["resnet152"]["shared"] == 36_821_032
    assert rows["wrn28_10"]["shared"] == 26_860_084 and rows["wrn28_10"]["num_classes"] == 100
    assert len(rows) == 7 and all(r["matches_paper"] for r in rows.values())
    learned = {r["name"]: r for r in tables["learned"]}
    assert len(learned) == len(LEARNED_PARAMS) == 11
    assert all(r["matches_paper"] and r["params"] == r["published"] for r in learned.values())
    assert learned["SWRN-28-10-2"]["params"] == 17_125_630 and learned["SWRN-28-10-2"]["baseline"] == 36_479_194
    assert learned["SWRN-28-10-6"]["params"] - learned["SWRN-28-10-6"]["baseline"] == 108  # no saving
    double = learned["ResNet34-S32U1 double"]
    assert double["params"] == 9_762_776 and double["rounded"] == "9.76M"
    assert double["options"] == {
        "share": "basis",
        "num_classes": 1000,
        "shared_rank": 32,
        "unique_rank": 1,
        "basis": "double",
    }


def test_paper_tables_text_marks_each_row_exact_and_is_the_documented_one(capsys):
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    assert f"```\n{out}```" in MODELS_DOC.read_text(), "rerun: sharenet params"
    sharesnet, learned = out.split("\n\n")
    assert len(sharesnet.splitlines()) == 1 + 7 and len(learned.splitlines()) == 1 + 11
    assert "DIFFERS" not in sharesnet + learned
    assert all(
        line.endswith("exact") for line in (sharesnet + "\n" + learned).splitlines()[1:] if "classes" not in line
    )
    assert "ResNet32-S8U1          resnet32        10      464,154      150,666   67.5%  0.15M   exact" in learned


def test_one_model_describe(capsys):
    assert main(["params", "resnet20", "--share", "block", "--describe"]) == 0
    out = capsys.readouterr().out
    assert "conv layers           19" in out  # stem + 18 block convs
    assert "distinct conv kernels 12" in out  # 7 blocks share their two 3x3s
    assert "stages.0.blocks.0.shared.weight  used by 2" in out


def test_learned_scheme_options_reach_the_model(capsys):
    argv = ["params", "resnet32", "--share", "basis", "--shared-rank", "8", "--unique-rank", "1", "--json"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 150_666
    assert info["sharing"] == {"shared_rank": 8, "unique_rank": 1, "basis": "single"}


@pytest.mark.parametrize(
    ("argv", "header", "groups"),
    [
        (
            ["--share", "templates", "--templates", "3"],
            "share=templates templates=3 ",
            ["template banks        3", "stages.0.bank.templates  used by 4: stages.0.blocks.1.conv1,"],
        ),
        (
            ["--share", "basis", "--basis", "double"],
            "share=basis shared_rank=16 unique_rank=1 basis=double ",
            [
                "shared bases          6",
                "stages.0.basis1.weight  used by 2: stages.0.blocks.1.conv1, stages.0.blocks.2.conv1",
            ],
        ),
    ],
)
def test_describe_prints_the_learned_plan_and_its_options(capsys, argv, header, groups):
    assert main(["params", "resnet20", *argv, "--describe"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"resnet20 {header}") and all(group in out for group in groups)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["params", "resnet32", "--shared-rank", "8"], "shared_rank applies to share='basis', not share='none'"),
        (["params", "resnet32", "--share", "templates", "--basis", "double"], "basis applies to share='basis'"),
        (["params", "resnet32", "--share", "templates", "--templates", "0"], "templates must be an integer >= 1"),
        (["params", "resnet50", "--share", "basis"], "not bottleneck; valid for this family: none, stage, templates"),
        (
            ["import", "x.th", "--model", "resnet20", "--share", "stage", "--templates", "2", "--out", "y"],
            "templates applies to share='templates', not share='stage'",
        ),
    ],
)
def test_option_for_the_wrong_scheme_is_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sharenet: error: ") and message in err


def test_import_fits_a_template_bank_exactly_when_it_has_a_template_per_conv(tmp_path, capsys):
    plain = sharenet.create_model("resnet20")
    sharenet.save(plain, tmp_path / "plain.safetensors")
    out = tmp_path / "t4.safetensors"
    argv = ["import", str(tmp_path / "plain.safetensors"), "--model", "resnet20", "--share", "templates"]
    assert main([*argv, "--templates", "4", "--out", str(out)]) == 0  # 4 = the 3x3 convs of blocks 2..3 per stage
    lines = capsys.readouterr().out.splitlines()[1:]
    assert len(lines) == 3 and all("from 4 kernels: relative error max 0.000" in line for line in lines)
    model = sharenet.load(out)
    assert model.config["share"] == "templates" and model.config["templates"] == 4
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-4)


def test_console_script_reports_bad_input_in_one_line():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "sharenet", "params", "resnet50", "--share", "block"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "bottleneck blocks have one" in proc.stderr
    assert "Traceback" not in proc.stderr
