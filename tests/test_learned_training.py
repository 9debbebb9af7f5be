"""The learned schemes train like the hard ones: on real Fashion-MNIST through the command line,
with the orthogonality penalty, resumed exactly, compiled, with a weight EMA, across two ranks, benched."""

import copy
import json
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import sharenet
from sharenet.engine.checkpoint import CheckpointError
from sharenet.engine.config import Config, OptimConfig, apply
from sharenet.engine.ema import WeightEMA
from sharenet.engine.objective import Objective
from sharenet.engine.optim import build_optimizer, build_scheduler
from sharenet.engine.step import Trainer
from sharenet.engine.validate import check_resume_compatible
from sharenet.models import basis_penalty, create_model

from .helpers import assert_tied
from .test_distributed import torchrun
from .test_train_cli import sharenet_cli

SCHEMES = {
    "templates": ["--share", "templates", "--set", "model.templates=1"],
    "basis": [
        "--share",
        "basis",
        "--set",
        "model.shared_rank=4",
        "--set",
        "model.unique_rank=2",
        "--set",
        "model.basis=double",
        "--set",
        "optim.ortho_penalty=10",
    ],
    "ring": ["--share", "ring", "--set", "model.params=60000"],
}
COMMON = ["--model", "resnet14", "--batch-size", "64", "--no-progress", "--checkpoint-every", "3"]


@pytest.mark.slow
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_train_stop_and_resume_equals_one_run(scheme, fmnist_dir, tmp_path):
    args = ["train", "--data-dir", str(fmnist_dir), *COMMON, *SCHEMES[scheme]]
    sharenet_cli(*args, "--max-steps", "6", "--out", str(tmp_path / "whole"))
    sharenet_cli(*args, "--max-steps", "3", "--out", str(tmp_path / "parts"))
    three = load_file(str(tmp_path / "parts" / "model.safetensors"))
    resumed = sharenet_cli(*args, "--max-steps", "6", "--out", str(tmp_path / "parts"), "--resume", "auto")
    assert "resumed from" in resumed.stderr
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "parts" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((tmp_path / "whole" / "config.json").read_text())
    model = sharenet.load(tmp_path / "whole" / "model.safetensors")
    assert model.share == config["model"]["share"] == scheme and assert_tied(model) > 0
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["params"] == sharenet.count_params(model)
    assert all(not torch.equal(a[k], three[k]) for k in model.plan.groups()), "the shared tensors did not train"


@pytest.mark.slow
def test_resume_with_other_options_is_refused(fmnist_dir, tmp_path):
    args = ["train", "--data-dir", str(fmnist_dir), *COMMON, *SCHEMES["templates"], "--out", str(tmp_path / "r")]
    sharenet_cli(*args, "--max-steps", "3")
    proc = sharenet_cli(*args, "--max-steps", "6", "--resume", "auto", "--set", "model.templates=2", check=False)
    assert proc.returncode != 0 and "model.templates" in proc.stderr


def test_the_penalty_is_minimised_but_the_logged_loss_is_the_cross_entropy():
    model = create_model("resnet14", share="basis", num_classes=3, in_chans=1)
    cfg = OptimConfig(lr=0.01)
    opt = build_optimizer(model, cfg)
    penalty = partial(basis_penalty, model, True, 1000.0)
    trainer = Trainer(
        model=model,
        optimizer=opt,
        scheduler=build_scheduler(opt, cfg, 10),
        device=torch.device("cpu"),
        dtype=torch.float32,
        objective=Objective(penalty=penalty),
    )
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    before = float(penalty().detach())
    loss, _ = trainer.step(x, y, 0)
    assert float(loss) < 10 < before  # cross-entropy of 3 classes, not the weighted penalty
    assert float(penalty().detach()) < before


def test_resume_ignores_the_options_of_another_scheme():
    stage = apply(Config(), {"model.share": "stage"})
    saved = {"config": apply(stage, {"model.templates": 5}).to_dict()}
    assert check_resume_compatible(stage, saved) == ["model.templates: 5 -> 2"]  # reported, not refused
    templates = apply(Config(), {"model.share": "templates"})
    with pytest.raises(CheckpointError, match="model.templates"):
        check_resume_compatible(templates, {"config": apply(templates, {"model.templates": 5}).to_dict()})


def test_ema_averages_each_bank_and_basis_once_per_step():
    for options in ({"share": "templates"}, {"share": "basis"}, {"share": "ring"}):
        model = create_model("resnet14", **options)
        ema = WeightEMA(model, decay=0.5)
        with torch.no_grad():
            for p in ema.module.parameters():
                p.zero_()
            for p in model.parameters():
                p.fill_(1.0)
        ema.update(model, step=10_000)  # past the warm-up: the decay is 0.5
        assert all(torch.all(p == 0.5) for p in ema.module.parameters())
        assert_tied(ema.module)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [{"share": "templates"}, {"share": "basis"}, {"share": "ring", "ring_size": 5000}],
    ids=lambda o: o["share"],
)
def test_compiled_step_agrees_with_eager(options):
    model = create_model("resnet14", num_classes=10, **options).to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 16, 16).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))

    def grads(m, run):
        F.cross_entropy(run(x), y).backward()
        return {n: p.grad for n, p in m.named_parameters()}

    eager_model, compiled_model = copy.deepcopy(model), copy.deepcopy(model)
    eager = grads(eager_model, eager_model)
    compiled = grads(compiled_model, torch.compile(compiled_model))
    assert_tied(compiled_model)
    for name, g in eager.items():
        assert (compiled[name] - g).norm() <= 1e-3 * g.norm() + 1e-6, name


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["basis", "ring"])
def test_two_ranks_train_the_shared_tensors_in_step(scheme, fmnist_dir, tmp_path):
    """Every rank derives the ring's map from the seed (it is no buffer DDP would broadcast)."""
    out = tmp_path / "ddp"
    torchrun(2, "--data-dir", str(fmnist_dir), *COMMON, *SCHEMES[scheme], "--max-steps", "4", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert len(set(summary["rank_param_sha256"])) == 1


def test_bench_runs_each_scheme_with_its_options():
    for share, options in (
        ("templates", ["--set", "model.templates=3"]),
        ("basis", ["--set", "model.shared_rank=4"]),
        ("ring", ["--set", "model.params=60000"]),
    ):
        fast = ["--steps", "1", "--rounds", "1", "--warmup", "1", "--set", "run.compile=off"]
        proc = sharenet_cli(
            "bench", "--model", "resnet14", "--share", share, "--batch-size", "4", *fast, *options, "--json"
        )
        r = json.loads(proc.stdout)
        assert r["share"] == share and r["shared_vs_unshared"] > 0 and r["macs_per_image"] > 0
