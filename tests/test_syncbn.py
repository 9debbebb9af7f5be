"""Cross-rank BatchNorm in a real two-process gloo group equals BatchNorm over the global batch."""

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

from sharenet.engine.syncbn import CrossRankBatchNorm2d, convert
from sharenet.models import BatchNormAct2d

WORLD = 2


def _rank(rank: int, store: str, batches: torch.Tensor, momentum, out: str) -> None:
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        bn = CrossRankBatchNorm2d(batches.shape[2], act=True, momentum=momentum)
        outputs = [bn(batch.chunk(WORLD)[rank]).detach() for batch in batches]
        torch.save({"outputs": outputs, "state": bn.state_dict()}, f"{out}.{rank}")
    finally:
        tdist.destroy_process_group()


def _cross_rank(tmp_path, batches, momentum) -> list[dict]:
    out = str(tmp_path / "result")
    mp.spawn(_rank, args=(str(tmp_path / "store"), batches, momentum, out), nprocs=WORLD, join=True)
    return [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]


def _one_process(batches, momentum) -> tuple[list[torch.Tensor], dict]:
    bn = nn.BatchNorm2d(batches.shape[2], momentum=momentum)
    outputs = [torch.relu(bn(batch)).detach() for batch in batches]
    return outputs, bn.state_dict()


def test_cumulative_average_across_ranks_equals_one_process(tmp_path):
    """momentum=None: running statistics are the plain average over every batch seen so far."""
    batches = torch.randn(3, 8, 4, 5, 5) * 3 + 2  # 3 steps of a global batch of 8, 4 channels
    ranks = _cross_rank(tmp_path, batches, momentum=None)
    outputs, state = _one_process(batches, momentum=None)
    for r, got in enumerate(ranks):
        assert int(got["state"]["num_batches_tracked"]) == 3
        for key in ("running_mean", "running_var"):
            torch.testing.assert_close(got["state"][key], state[key], rtol=1e-5, atol=1e-6)
        for step, out in enumerate(got["outputs"]):
            torch.testing.assert_close(out, outputs[step].chunk(WORLD)[r], rtol=1e-5, atol=1e-5)
    means = batches.mean((1, 3, 4))  # per step and channel: their average is what momentum=None keeps
    torch.testing.assert_close(ranks[0]["state"]["running_mean"], means.mean(0), rtol=1e-5, atol=1e-6)


def test_momentum_across_ranks_equals_one_process(tmp_path):
    batches = torch.randn(2, 8, 3, 4, 4)
    ranks = _cross_rank(tmp_path, batches, momentum=0.3)
    _, state = _one_process(batches, momentum=0.3)
    for got in ranks:
        torch.testing.assert_close(got["state"]["running_var"], state["running_var"], rtol=1e-5, atol=1e-6)


def test_convert_keeps_parameters_statistics_and_activation():
    model = nn.Sequential(BatchNormAct2d(4, momentum=None), BatchNormAct2d(4, act=False), nn.BatchNorm2d(4))
    weight = model[0].weight
    convert(model)
    assert all(type(m) is CrossRankBatchNorm2d for m in model)
    assert [m.act for m in model] == [True, False, False] and model[0].momentum is None
    assert model[0].weight is weight  # the optimizer's Parameters stay valid
