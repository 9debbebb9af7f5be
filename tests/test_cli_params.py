"""`sharenet params`: the paper table and one model's accounting, as a user runs them."""

import json
import os
import subprocess
import sys

from sharenet.cli import main


def test_paper_table_json_has_all_fourteen_counts(capsys):
    assert main(["params", "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["resnet152"]["baseline"] == 60_192_808 and rows["resnet152"]["shared"] == 36_821_032
    assert rows["wrn28_10"]["shared"] == 26_860_084 and rows["wrn28_10"]["num_classes"] == 100
    assert len(rows) == 7 and all(r["matches_paper"] for r in rows.values())


def test_one_model_describe(capsys):
    assert main(["params", "resnet20", "--share", "block", "--describe"]) == 0
    out = capsys.readouterr().out
    assert "conv layers           19" in out  # stem + 18 block convs
    assert "distinct conv kernels 12" in out  # 7 blocks share their two 3x3s
    assert "stages.0.blocks.0.shared.weight  used by 2" in out


def test_console_script_reports_bad_input_in_one_line():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "sharenet", "params", "resnet50", "--share", "block"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "bottleneck blocks have one" in proc.stderr
    assert "Traceback" not in proc.stderr
