"""Assertions shared by the test modules."""

import json
from pathlib import Path

from sharenet.models import Conv3x3, share_groups


def assert_tied(model):
    """Every conv in a plan group applies its owner's very tensor; returns the group count."""
    groups = share_groups(model)
    for key, convs in groups.items():
        owner = model.get_submodule(key.removesuffix(".weight")).weight
        for conv in convs:
            module = model.get_submodule(conv)
            assert isinstance(module, Conv3x3)
            assert module.kernel() is owner, f"{conv} no longer applies {key}"
    return len(groups)


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
