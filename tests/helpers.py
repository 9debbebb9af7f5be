"""Assertions shared by the test modules."""

import json
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
