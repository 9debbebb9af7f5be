"""Assertions shared by the test modules."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from sharenet.models import Conv3x3
from sharenet.models.ring import RingConv


def assert_tied(model):
    """Every conv of every plan group applies its owner's very tensor; returns the group count.

    The owner (a stage's kernel, bank or basis; a block's kernel; the network's ring) is looked up by the plan's
    path; each user conv (or, for a filter-basis conv, its basis conv) must borrow that very
    module, whose tensor is the state_dict's one entry.
    """
    plan = model.plan
    for owned in plan.owned():
        owner = model.get_submodule(owned.path)
        tensor = model.get_parameter(owned.key)
        for slot in plan.users(owned):
            module = model.get_submodule(slot.path)
            conv = module.basis if slot.source == "basis" else module
            assert isinstance(conv, (Conv3x3, RingConv))
            assert conv.borrowed is owner, f"{slot.path} no longer uses {owned.key}"
            if slot.source == "shared":
                assert conv.kernel() is tensor, f"{slot.path} no longer applies {owned.key}"
            else:
                assert getattr(owner, owned.key.rpartition(".")[2]) is tensor
    return len(plan.owned())


def newest_checkpoint_step(run_dir: Path) -> int:
    """Step of the newest complete checkpoint in a run that may be writing and pruning them (-1: none).

    A record listed a moment ago may be pruned (keep_checkpoints) before it is read: that one is skipped.
    """
    steps = []
    for record in Path(run_dir).glob("ckpt-*.json"):
        try:
            steps.append(json.loads(record.read_text())["step"])
        except FileNotFoundError:
            continue
    return max(steps, default=-1)


DOCS = Path(__file__).resolve().parents[1] / "docs"


def regenerate_page(page: str, tmp_path: Path) -> Path:
    """Run the one `sharenet report` command docs/<page>-notes.md shows, as written but writing into
    tmp_path; assert its Markdown, and its CSV where the page has one, equal the committed files byte
    for byte; return the regenerated Markdown's path. The published command itself is what is tested."""
    text = (DOCS / f"{page}-notes.md").read_text().replace("\\\n", " ")
    shown = [line for line in text.splitlines() if re.match(r"\s*(\.venv/bin/)?sharenet report ", line)]
    assert len(shown) == 1, f"docs/{page}-notes.md shows {len(shown)} `sharenet report` commands"
    argv = shlex.split(shown[0], comments=True)[1:]
    i = argv.index("--out") + 1
    assert DOCS.parent / argv[i] == DOCS / f"{page}.md", argv[i]
    out = argv[i] = tmp_path / f"{page}.md"
    proc = subprocess.run(
        [sys.executable, "-m", "sharenet", *map(str, argv)], cwd=DOCS.parent, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_text() == (DOCS / f"{page}.md").read_text()
    if (DOCS / f"{page}.csv").exists():
        assert out.with_suffix(".csv").read_text() == (DOCS / f"{page}.csv").read_text()
    return out
