"""The parameter ring (RPG) and parameter budgets: exact counts, the map's guarantees, fits, files."""

import hashlib
import json
import random
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import sharenet
from sharenet.cli import main
from sharenet.errors import InvalidArgumentError, PlanMismatchError
from sharenet.models import count_params, create_model
from sharenet.models.ring import RingConv, ring_map
from sharenet.weights import load_weights
from sharenet.weights.transfer import unshare

from .helpers import assert_tied

FAMILIES = [  # every family: CIFAR basic (both shortcuts), pre-activation, WRN, ImageNet basic and bottleneck
    ("resnet20", {"in_chans": 1, "num_classes": 10}),
    ("resnet14", {"shortcut": "B"}),
    ("preact_resnet20", {}),
    ("wrn16_2", {}),
    ("resnet18", {"num_classes": 1000}),
    ("resnet50", {"num_classes": 100}),
]


def _meta(name, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


def test_counts_of_the_issue():
    model = _meta("resnet56", share="ring", params=172_666, in_chans=1, num_classes=10)
    assert count_params(model) == 172_666
    # RPG's ImageNet ResNet-18: a ring of 2422 * 4608 entries, its stage convs' 11,157,504 rounded up
    resnet18 = _meta("resnet18", share="ring", ring_size=11_160_576, num_classes=1000)
    assert count_params(resnet18) == 11_692_584
    assert resnet18.plan.ring_total == 11_157_504


@pytest.mark.parametrize(("name", "kwargs"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_any_feasible_budget_is_met_exactly(name, kwargs):
    plain = count_params(_meta(name, **kwargs))
    ring_total = _meta(name, share="ring", **kwargs).plan.ring_total
    rest = plain - ring_total  # the stem, BatchNorms, classifier: what the ring does not replace
    rng = random.Random(name)
    for params in [rest + 1, plain, *(rng.randint(rest + 1, plain) for _ in range(20))]:
        assert count_params(_meta(name, share="ring", params=params, **kwargs)) == params
    for params in (rest, plain + 1):
        with pytest.raises(InvalidArgumentError, match=rf"must be in \[{rest + 1:,}, {plain:,}\]"):
            _meta(name, share="ring", params=params, **kwargs)


@pytest.mark.parametrize(("size", "total"), [(1000, 50_000), (977, 50_000), (49_999, 50_000), (70_000, 50_000)])
def test_every_ring_entry_is_read_floor_or_ceil_times(size, total):
    index, sign = ring_map(3, size, total)
    uses = torch.bincount(index.long(), minlength=size)
    assert uses.min() == total // size and uses.max() == -(-total // size)
    assert set(sign.unique().tolist()) == {-1, 1} and abs(sign.float().mean()) < 0.02


def test_the_map_is_a_pinned_function_of_the_seed_alone():
    """A digest pins the documented map: no torch RNG, version or machine may change it."""
    torch.manual_seed(123)
    index, sign = ring_map(0, 1000, 50_000)
    digest = hashlib.sha256(index.numpy().tobytes() + sign.numpy().tobytes()).hexdigest()
    assert digest == PINNED_DIGEST
    other, _ = ring_map(1, 1000, 50_000)
    assert (other != index).float().mean() > 0.9  # another seed, another map


PINNED_DIGEST = "e776466067dbe7aa3d77bb268efbc29dbd6727fd98562a70db3eb662698925fd"


def _reference_map(seed: int, size: int, total: int) -> tuple[list[int], list[int]]:
    """The map as ring.py's docstring states it, in Python integers: SplitMix64 keys, swap-or-not rounds."""
    mask, state, out = (1 << 64) - 1, seed, []
    for _ in range(16 * 3 + 2):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    p = 2**31 - 1
    rounds = [(out[3 * r] % total, 1 + out[3 * r + 1] % (p - 1), out[3 * r + 2] % p) for r in range(16)]
    sign_a, sign_b = 1 + out[48] % (p - 1), out[49] % p

    def bit(h, a, b):
        return (((h * a + b) % p) ** 2 % p >> 16) & 1

    index, sign = [], []
    for t in range(total):
        x = t
        for k, a, b in rounds:
            partner = (k - x) % total
            x = partner if bit(max(x, partner), a, b) else x
        index.append(x % size)
        sign.append(1 - 2 * bit(t, sign_a, sign_b))
    return index, sign


def test_the_map_is_what_its_documentation_says():
    index, sign = ring_map(11, 97, 2_000)
    assert (index.tolist(), sign.tolist()) == _reference_map(11, 97, 2_000)


def test_each_ring_conv_starts_with_its_own_kaiming_fan_out_std():
    torch.manual_seed(0)
    model = create_model("resnet50", share="ring", ring_size=500_000, num_classes=10, width=16)
    convs = [m for m in model.modules() if isinstance(m, RingConv)]
    assert {c.k for c in convs} == {1, 3}  # 1x1 block convs and shortcuts are in the ring too
    for conv in convs:
        kernel = conv.kernel().detach()
        want = (2 / (conv.out_ch * conv.k * conv.k)) ** 0.5
        tolerance = 6 * want / (2 * kernel.numel()) ** 0.5 + 0.02 * want  # 6 standard errors of a std estimate
        assert abs(kernel.std().item() - want) <= tolerance, (conv, kernel.std().item(), want)


def test_unshare_materialises_every_conv_with_identical_outputs():
    model = create_model("resnet20", share="ring", ring_size=20_000, shortcut="B").eval()
    plain = unshare(model)
    assert plain.share == "none" and plain.config["width"] == 16
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(plain(x), model(x))


def test_fit_is_the_least_squares_solution_and_reports_each_conv():
    ring = create_model("resnet14", share="ring", ring_size=3_000, shortcut="B")
    plain = create_model("resnet14", shortcut="B")
    report = load_weights(ring, plain.state_dict(), fuse_kernels=True)
    slots = ring.plan.users(ring.plan.owned()[0])
    assert set(report.fused["ring.weight"]) == {s.path for s in slots} and 0 < report.max_distance < 1.5
    # the normal equations: the residual is orthogonal to every ring entry's direction
    index, sign = ring_map(0, 3_000, ring.plan.ring_total)

    def gradient(entries):
        r = entries.detach().double().clone().requires_grad_(True)
        loss = 0
        for s in slots:
            part = slice(s.offset, s.offset + s.numel)
            fitted = r[index[part].long()] * sign[part].double() * ring.get_submodule(s.path).scale
            loss = loss + (fitted - plain.get_submodule(s.path).weight.detach().double().flatten()).square().sum()
        return torch.autograd.grad(loss, r)[0].abs().max()

    fitted = ring.ring.weight
    assert gradient(fitted) < 1e-4 * gradient(fitted + 0.01 * torch.randn_like(fitted))  # fp32 rounding only
    # a ring as large as its convs' entries, with one entry per position, fits exactly
    exact = create_model("resnet14", share="ring", ring_size=ring.plan.ring_total, shortcut="B")
    assert load_weights(exact, plain.state_dict(), fuse_kernels=True).max_distance < 1e-6


def test_ring_weights_are_recognised_by_their_shapes():
    model = create_model("resnet20", share="ring", ring_size=4_321)
    state = model.state_dict()
    assert model.sharing_of(state) == model.plan.sharing
    seeded = create_model("resnet20", share="ring", ring_size=4_321, ring_seed=7)
    seeded.load_state_dict(seeded.state_dict())  # its own tensors: the seed is not in the shapes
    assert load_weights(seeded, seeded.state_dict()).fused == {}  # a plain load, not a fit to another map
    with pytest.raises(PlanMismatchError, match="share='ring', ring_size=4321"):
        create_model("resnet20", share="stage").load_state_dict(state)


def test_a_weight_file_rebuilds_identical_outputs_in_a_fresh_process(tmp_path):
    model = create_model("resnet20", share="ring", params=60_000, ring_seed=7, in_chans=1).eval()
    x = torch.randn(3, 1, 28, 28)
    torch.save(x, tmp_path / "x.pt")
    sharenet.save(model, tmp_path / "m.safetensors")
    meta = sharenet.weights.files.read_metadata(tmp_path / "m.safetensors")
    assert meta["config"]["ring_seed"] == 7 and meta["config"]["params"] == 60_000
    assert meta["config"]["ring_size"] == model.ring.size
    code = (
        "import sys, torch, sharenet; m = sharenet.load(sys.argv[1]).eval(); "
        "torch.save(m(torch.load(sys.argv[2])), sys.argv[3])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m.safetensors"), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        check=True,
    )
    assert torch.equal(torch.load(tmp_path / "y.pt"), model(x))


def test_ties_and_the_map_survive_meta_construction_and_moves():
    with torch.device("meta"):
        model = create_model("resnet14", share="ring", ring_size=5_000)
    model.to_empty(device="cpu")
    model.load_state_dict(create_model("resnet14", share="ring", ring_size=5_000).state_dict())
    assert assert_tied(model) == 1
    half = create_model("resnet14", share="ring", ring_size=5_000).to(torch.bfloat16)
    assert (
        half.ring.weight.dtype == torch.bfloat16
        and half(torch.randn(1, 3, 16, 16, dtype=torch.bfloat16)).isfinite().all()
    )


# --- widths and budgets for every scheme


def test_width_scales_every_family():
    narrow = _meta("resnet20", width=8)
    assert narrow.arch.width == 8 and [s[0].width for s in narrow.arch.stages] == [8, 16, 32]
    assert _meta("resnet18", width=32).stem.conv.out_channels == 32
    assert [s[-1].out_ch for s in _meta("preact_resnet20", width=8).arch.stages] == [32, 64, 128]
    assert _meta("wrn16_4").arch.width == 64 and _meta("wrn16_4", width=32).arch.width == 32
    with pytest.raises(InvalidArgumentError, match="width must be even"):
        _meta("resnet20", width=13)
    assert count_params(_meta("resnet20", width=16)) == 269_722


@pytest.mark.parametrize(
    ("share", "options"),
    [
        ("none", {}),
        ("stage", {}),
        ("block", {}),
        ("templates", {"templates": 2}),
        ("basis", {"shared_rank": 8, "unique_rank": 1}),
    ],
)
def test_every_scheme_gets_the_widest_network_within_a_budget(share, options):
    for name in ("resnet20", "resnet56", "wrn16_2"):
        if share == "basis" and name.startswith("wrn"):
            continue
        model = _meta(name, share=share, params=172_666, in_chans=1, num_classes=10, **options)
        width, count = model.config["width"], count_params(model)
        assert count <= 172_666 and model.config["params"] == 172_666
        for wider in (width + 1, width + 2):  # option A takes even widths only
            try:
                assert (
                    count_params(_meta(name, share=share, width=wider, in_chans=1, num_classes=10, **options)) > 172_666
                )
            except InvalidArgumentError:
                continue
        assert count_params(_meta(**model.config)) == count  # the recorded config rebuilds it without solving


def test_budgets_out_of_reach_are_one_line_and_exit_2(capsys):
    assert main(["params", "resnet20", "--share", "none", "--params", "172666"]) == 0
    out = capsys.readouterr().out
    assert "width 12 (the widest that fits)" in out and "parameters            152,182" in out
    for argv, message in [
        (["--share", "none", "--params", "1000"], "no width of resnet20 share='none' fits params=1,000: the narrowest"),
        (["--share", "ring", "--params", "300000"], "params=300,000 is out of reach of resnet20"),
        (["--share", "ring", "--params", "100", "--ring-size", "5"], "params=100 is out of reach"),
        (["--share", "stage", "--params", "0"], "params must be a positive integer"),
    ]:
        assert main(["params", "resnet20", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_describe_and_json_show_the_choice(capsys):
    assert main(["params", "resnet56", "--share", "ring", "--params", "172666", "--in-chans", "1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 172_666 and info["sharing"] == {"ring_size": 167_808, "ring_seed": 0}
    assert info["width"] == 16 and list(info["shared_kernels"]) == ["ring.weight"]


def test_the_ring_is_decayed_like_the_kernels_it_holds():
    from sharenet.engine.config import OptimConfig
    from sharenet.engine.optim import param_groups

    model = create_model("resnet14", share="ring", ring_size=5_000)
    decayed = param_groups(model, OptimConfig(decay_norm_and_bias=False))[0]["params"]
    assert any(p is model.ring.weight for p in decayed)


def test_a_budget_run_resumes_with_the_width_it_chose():
    from sharenet.engine.config import Config, apply
    from sharenet.engine.validate import check_resume_compatible

    asked = apply(Config(), {"model.share": "none", "model.params": 172_666})
    recorded = replace(asked, model=asked.model.resolved(create_model("resnet20", params=172_666).config))
    assert recorded.model.width == 12
    assert check_resume_compatible(asked, {"config": recorded.to_dict()}) == []  # solved again, to 12
    other = apply(asked, {"model.params": 100_000})
    with pytest.raises(Exception, match="model.params"):
        check_resume_compatible(other, {"config": recorded.to_dict()})


def test_the_first_look_spec_gives_each_extra_run_its_own_overrides():
    from pathlib import Path

    from sharenet.study.runner import load_spec, plan_runs, train_command

    spec = load_spec(Path(__file__).parent.parent / "experiments" / "budget" / "first-look.yaml")
    runs = {r.out.name: r for r in plan_runs(spec)}
    assert len(runs) == 6 and "resnet56-ring-params172666-s0" in runs
    cmd = train_command(spec, runs["resnet56-basis-s8u1-params172666-s0"])
    for setting in ("model.shared_rank=8", "model.unique_rank=1", "model.params=172666"):
        assert cmd[cmd.index(setting) - 1] == "--set"
    assert "model.params=172666" not in train_command(spec, runs["resnet20-stage-s0"])


def test_a_budget_is_checked_against_the_data_not_the_family_defaults():
    """resnet18 with a 10-class head fits 300,000 parameters; its 1000-class default head would not."""
    from sharenet.engine.config import Config, apply
    from sharenet.engine.validate import check_config

    check_config(apply(Config(), {"model.name": "resnet18", "model.share": "ring", "model.params": 300_000}))
    assert count_params(_meta("resnet18", share="ring", params=300_000, num_classes=10)) == 300_000
