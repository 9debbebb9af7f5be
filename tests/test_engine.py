"""Optimizer groups, schedules, EMA and the non-finite guard, with shared kernels in play."""

import math

import pytest
import torch

from sharenet.engine.config import OptimConfig
from sharenet.engine.ema import WeightEMA
from sharenet.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from sharenet.engine.step import NonFiniteError, Trainer
from sharenet.models import create_model, share_groups


def test_each_shared_kernel_is_in_one_group_once():
    model = create_model("resnet20", share="stage")
    groups = param_groups(model, OptimConfig(decay_norm_and_bias=False))
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    decayed = {id(p) for p in groups[0]["params"]}
    assert all(id(model.get_parameter(k)) in decayed for k in share_groups(model))
    assert all(p.ndim == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0


def test_schedules():
    multi = OptimConfig(epochs=200, schedule="multistep", milestones=(60, 120, 160), gamma=0.2, warmup_steps=0)
    assert [lr_factor(e * 10, multi, 10) for e in (0, 59, 60, 119, 120, 160)] == pytest.approx(
        [1, 1, 0.2, 0.2, 0.04, 0.008]
    )
    cos = OptimConfig(epochs=10, schedule="cosine", warmup_steps=0)
    assert lr_factor(0, cos, 5) == 1 and lr_factor(25, cos, 5) == pytest.approx(0.5) and lr_factor(50, cos, 5) == 0
    he = OptimConfig(schedule="constant", warmup_steps=400, warmup_factor=0.1, warmup_mode="constant")
    assert lr_factor(399, he, 10) == pytest.approx(0.1) and lr_factor(400, he, 10) == 1
    ramp = OptimConfig(schedule="constant", warmup_steps=100, warmup_factor=0.0)
    assert lr_factor(50, ramp, 10) == pytest.approx(0.5)


def test_ema_decays_a_shared_kernel_once_per_step():
    model = create_model("resnet20", share="stage")
    key, convs = next(iter(share_groups(model).items()))
    assert len(convs) == 3
    ema = WeightEMA(model, decay=0.5)
    with torch.no_grad():
        ema.module.get_parameter(key).zero_()
        model.get_parameter(key).fill_(1.0)
    ema.update(model, step=10_000)  # past the warm-up: the decay is 0.5
    assert torch.allclose(ema.module.get_parameter(key), torch.full_like(model.get_parameter(key), 0.5))
    assert all(ema.module.get_submodule(c).kernel() is ema.module.get_parameter(key) for c in convs)


def _trainer(model, lr=0.1):
    cfg = OptimConfig(lr=lr)
    opt = build_optimizer(model, cfg)
    scheduler = build_scheduler(opt, cfg, 10)
    return Trainer(model=model, optimizer=opt, scheduler=scheduler, device=torch.device("cpu"), dtype=torch.float32)


def test_non_finite_loss_stops_before_the_update():
    model = create_model("resnet8", num_classes=3, in_chans=1)
    trainer = _trainer(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.stem.register_forward_hook(lambda m, i, o: o * math.nan)
    with pytest.raises(NonFiniteError, match="non-finite loss at step 8"):
        trainer.step(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]), step=7)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)


def test_a_step_moves_the_shared_kernel_once_with_summed_gradient():
    model = create_model("resnet8", share="stage", num_classes=3, in_chans=1)
    key = next(iter(share_groups(model)))
    kernel = model.get_parameter(key)
    trainer = _trainer(model, lr=1.0)
    trainer.optimizer.param_groups[0]["momentum"] = 0.0
    trainer.optimizer.param_groups[0]["weight_decay"] = 0.0
    start = kernel.detach().clone()
    trainer.step(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]), step=0)
    lr = 1.0 * lr_factor(0, OptimConfig(lr=1.0), 10)
    assert torch.allclose(kernel.detach(), start - lr * kernel.grad, atol=1e-6)
