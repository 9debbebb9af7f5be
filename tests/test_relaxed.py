"""Relaxed sharing: a shared kernel plus a low-rank correction per conv (`relax_rank`), and the
scheme of the dial's low end (`stage_all`). Counts are exact integers, the corrections survive
files, unshare and export, and a budget solves for the rank."""

import pytest
import torch

from sharenet.deploy.artifact import open_runner
from sharenet.deploy.check import compare
from sharenet.deploy.export import export
from sharenet.errors import InvalidArgumentError
from sharenet.models import create_model
from sharenet.models.accounting import count_params, share_groups
from sharenet.weights.transfer import load_weights, unshare

FAMILIES = [  # (name, schemes with corrections): basic CIFAR, basic ImageNet, bottleneck, pre-act, wide
    ("resnet20", ("stage", "block", "stage_all", "ring")),
    ("resnet18", ("stage", "block", "stage_all")),
    ("resnet50", ("stage", "stage_all")),
    ("preact_resnet164", ("stage", "stage_all")),
    ("wrn16_4", ("stage", "block", "stage_all")),
]


def _count(name, share, rank, **kw):
    with torch.device("meta"):
        return count_params(create_model(name, share=share, num_classes=10, relax_rank=rank, **kw))


@pytest.mark.parametrize(("name", "schemes"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_rank_adds_r_times_out_plus_in_k_k_per_sharing_conv(name, schemes):
    for share in schemes:
        with torch.device("meta"):
            hard = create_model(name, share=share, num_classes=10)
        convs = [s for s in hard.plan.slots if s.source in ("shared", "ring")]
        assert convs, (name, share)
        per_rank = sum(s.out_ch + s.in_ch * s.kernel**2 for s in convs)
        for rank in (1, 3):
            with torch.device("meta"):
                model = create_model(name, share=share, num_classes=10, relax_rank=rank)
            assert count_params(model) == count_params(hard) + rank * per_rank, (name, share, rank)
            assert model.plan.params() - hard.plan.params() == rank * per_rank
            relaxed = [p for p, m in model.named_modules() if hasattr(m, "relax")]
            assert relaxed == [s.path for s in convs]
            assert share_groups(model) == share_groups(hard)  # the shared tensors and their users stay


def test_resnet56_counts_are_the_dials_integers():
    """The figures the relaxed-sharing measurements were made at (1 input channel, 10 classes)."""
    counts = {("none", 0): 852_730, ("stage", 0): 465_658, ("stage", 2): 485_818, ("stage", 8): 546_298}
    counts |= {("stage", 16): 626_938, ("stage_all", 0): 76_282, ("stage_all", 4): 153_082}
    counts |= {("stage_all", 9): 249_082, ("stage_all", 14): 345_082}
    for (share, rank), count in counts.items():
        assert _count("resnet56", share, rank, in_chans=1) == count, (share, rank)


def test_stage_all_shares_every_c_to_c_conv_of_a_stage():
    model = create_model("resnet20", share="stage_all")
    groups = share_groups(model)
    assert list(groups) == [f"stages.{i}.shared.weight" for i in range(3)]
    assert len(groups["stages.0.shared.weight"]) == 6  # 3 blocks x 2 convs, all 16->16
    assert "stages.1.blocks.0.conv1" not in groups["stages.1.shared.weight"]  # 16->32 keeps its own
    assert len(groups["stages.1.shared.weight"]) == 5


def _randomised(model):
    """Every correction non-zero (B starts at zero) and BatchNorm statistics of a batch."""
    torch.manual_seed(0)
    for m in model.modules():
        if hasattr(m, "relax"):
            torch.nn.init.normal_(m.relax.b, std=0.05)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 32, 32))
    return model.eval()


@pytest.mark.parametrize("share", ["stage", "block", "stage_all", "ring"])
def test_unshare_gives_the_same_outputs_and_files_reload_exactly(share, tmp_path):
    model = _randomised(create_model("resnet20", share=share, relax_rank=2))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
        plain = unshare(model).eval()
        torch.testing.assert_close(plain(x), y, rtol=1e-5, atol=1e-5)
    assert plain.config["share"] == "none" and "relax_rank" not in plain.config
    twin = create_model("resnet20", share=share, relax_rank=2).eval()
    report = load_weights(twin, model.state_dict())  # no metadata: the plan is read off the shapes
    assert report.source_share == share
    with torch.no_grad():
        torch.testing.assert_close(twin(x), y, rtol=0, atol=0)
    other = create_model("resnet20", share=share, relax_rank=3)
    with pytest.raises(Exception, match="relax_rank=2"):
        load_weights(other, model.state_dict())


def test_corrections_train_with_the_shared_kernel():
    model = create_model("resnet20", share="stage", relax_rank=2)
    out = model(torch.randn(4, 3, 32, 32)).square().mean()
    out.backward()
    conv = model.get_submodule("stages.0.blocks.1.conv2")
    assert conv.relax.b.grad.abs().sum() > 0  # B starts at zero: its gradient is A's input
    assert conv.borrowed.weight.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("share", ["stage", "ring"])
def test_export_stores_shared_kernel_and_corrections_once(share, tmp_path):
    model = _randomised(create_model("resnet20", share=share, relax_rank=4))
    done = export(model, tmp_path / "m.onnx", "onnx", {"config": model.config})
    params = sum(p.numel() for p in model.parameters())
    assert abs(done.overhead) <= 0.02  # S (or the ring), each B and each A stored once; B A + S computed in the graph
    if share != "ring":  # the ring's graph also holds the arithmetic of its map, corrections or not
        assert done.file_bytes <= 1.1 * params * 4, (done.file_bytes, params)
    x = torch.randn(4, 3, 32, 32)
    got = compare(model(x).detach(), open_runner(done.path).run(x))
    assert got["relative_diff"] <= 1e-4 and got["top1_agreement"] == 1.0, got


def test_describe_counts_the_corrections_beside_the_kernels_they_correct():
    from sharenet.models.accounting import describe

    hard = describe(create_model("resnet56", share="stage", num_classes=10, in_chans=1))
    info = describe(create_model("resnet56", share="stage", num_classes=10, in_chans=1, relax_rank=8))
    assert hard["corrections"] == {} and info["shared_kernels"] == hard["shared_kernels"]
    assert info["corrections"] == {"convs": 27, "rank": 8, "params": 546_298 - 465_658}
    assert info["params"] - info["corrections"]["params"] == hard["params"]


def test_a_budget_solves_for_the_rank_and_records_it():
    model = create_model("resnet56", share="stage", num_classes=10, in_chans=1, relax_rank="auto", params=550_000)
    assert model.config["relax_rank"] == 8 and count_params(model) == 546_298 <= 550_000
    again = create_model(**model.config)  # the recorded config rebuilds it without solving
    assert count_params(again) == 546_298
    ring = create_model("resnet20", share="ring", relax_rank=2, params=100_000)
    assert count_params(ring) == 100_000 and ring.config["relax_rank"] == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"share": "stage", "relax_rank": 17}, "relax_rank=17 is more than stages.0.blocks.0.conv2 can use"),
        ({"share": "none", "relax_rank": 2}, "relax_rank applies to share='stage'"),
        ({"share": "templates", "relax_rank": 2}, "relax_rank applies to share='stage'"),
        ({"share": "stage", "relax_rank": -1}, "relax_rank must be an integer >= 0"),
        ({"share": "stage", "relax_rank": "auto"}, "give params too"),
        ({"share": "stage", "relax_rank": "auto", "params": 400_000}, "rank 0 \\(hard sharing\\) has 465,658"),
        ({"share": "stage", "relax_rank": "auto", "params": 5_000_000}, "the largest rank its convs can use \\(16\\)"),
        ({"share": "ring", "relax_rank": "auto", "params": 100_000}, "give the rank, and params solves the ring"),
    ],
)
def test_bad_ranks_and_budgets_are_one_clear_error(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message), torch.device("meta"):
        create_model("resnet56", num_classes=10, in_chans=1, **kwargs)


@pytest.mark.slow
def test_int8_quantizes_the_shared_kernel_and_the_corrections_once(tmp_path):
    """The int8 file of a relaxed network: S, each B and each A quantized (the file about a third of
    fp32's), and it computes the network's outputs within int8's error."""
    from sharenet.deploy.quantize import quantize

    model = _randomised(create_model("resnet20", share="stage", relax_rank=4))
    x = torch.randn(128, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    done = export(model, tmp_path / "m.onnx", "onnx", {"config": model.config})
    quantize(done.path, tmp_path / "q.onnx", x)
    assert (tmp_path / "q.onnx").stat().st_size < 0.5 * done.file_bytes
    got = compare(model(x[:64]).detach(), open_runner(tmp_path / "q.onnx").run(x[:64]))
    assert got["relative_diff"] <= 0.15, got


@pytest.mark.slow
def test_a_relaxed_run_with_ema_killed_and_resumed_equals_uninterrupted(fmnist_dir, tmp_path):
    """Training, the weight EMA and resume treat the corrections as every other parameter: a run
    killed with SIGKILL after a checkpoint and resumed ends bitwise equal to an uninterrupted one."""
    from safetensors.torch import load_file

    from .test_resume import UNBOUNDED, _kill_after, _start

    relaxed = ["--set", "model.relax_rank=2", "--set", "optim.ema_decay=0.9"]
    whole = _start(fmnist_dir, tmp_path / "whole", *relaxed, max_steps=20)
    assert whole.wait() == 0, whole.stderr.read()[-2000:]
    out = tmp_path / "killed"
    _kill_after(_start(fmnist_dir, out, *relaxed, max_steps=UNBOUNDED), out, 7)
    final = _start(fmnist_dir, out, *relaxed, "--resume", "auto", max_steps=20)
    assert final.wait() == 0 and "resumed from" in final.stderr.read()
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(k.endswith(".relax.b") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
