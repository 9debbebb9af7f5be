"""Registry-wide tests: every model builds, trains a step, and has the papers' exact counts."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sharenet
from sharenet.models import RULES, SCHEMES, count_macs, create_model, list_models, share_groups

from .helpers import assert_tied

# ShaResNet's README rows (Boulch 2018), baseline -> shared, exact integers.
PAPER = [
    ("preact_resnet164", 10, 1_703_258, 929_114),
    ("wrn40_4", 10, 8_949_210, 5_852_634),
    ("wrn28_10", 100, 36_536_884, 26_860_084),
    ("resnet34", 1000, 21_797_672, 13_613_864),
    ("resnet50", 1000, 25_557_032, 20_469_800),
    ("resnet101", 1000, 44_549_160, 29_434_920),
    ("resnet152", 1000, 60_192_808, 36_821_032),
]
BOTTLENECK = {"preact_resnet164", "preact_resnet1001", "resnet50", "resnet101", "resnet152"}
HEAVY = {"resnet1202", "preact_resnet1001", "wrn28_10", "wrn40_10", "resnet101", "resnet152"}


@pytest.mark.parametrize(("name", "classes", "baseline", "shared"), PAPER)
def test_paper_parameter_counts(name, classes, baseline, shared):
    assert sharenet.count_params(create_model(name, num_classes=classes)) == baseline
    assert sharenet.count_params(create_model(name, share="stage", num_classes=classes)) == shared


def test_known_counts_of_other_models():
    # the totals the popular CIFAR ResNet repository prints (option A), and torchvision's ResNet-18
    cifar = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018, "resnet110": 1_727_962}
    for name, count in cifar.items():
        assert sharenet.count_params(create_model(name)) == count
    assert sharenet.count_params(create_model("resnet18")) == 11_689_512


def test_macs_match_torchvision_figures():
    # torchvision documents 1.81 and 4.09 GFLOPS (multiply-accumulates) at 224x224
    assert round(count_macs(create_model("resnet18"), 224, 3) / 1e9, 2) == 1.81
    assert round(count_macs(create_model("resnet50"), 224, 3) / 1e9, 2) == 4.09
    # sharing changes storage, not compute
    assert count_macs(create_model("resnet20", share="stage"), 32, 3) == count_macs(create_model("resnet20"), 32, 3)


def _cases():
    for name in list_models():
        with torch.device("meta"):
            kind = create_model(name).arch.kind
        for share in SCHEMES:
            if share != "none" and share not in RULES[kind]:
                continue
            marks = [pytest.mark.slow] if name in HEAVY else []
            yield pytest.param(name, share, marks=marks, id=f"{name}-{share}")


@pytest.mark.parametrize(("name", "share"), list(_cases()))
def test_every_model_trains_a_step(name, share):
    model = create_model(name, share=share, num_classes=7, in_chans=1)
    size = 64 if name.startswith("resnet") and name[6:] in ("18", "34", "50", "101", "152") else 16
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert_tied(model)
    if share != "none":
        assert share_groups(model), "a shared scheme that shares nothing"


@pytest.mark.parametrize(
    ("name", "share", "uses"),
    [
        ("resnet20", "stage", [3, 3, 3]),  # second 3x3 of every block, the first block included
        ("resnet34", "stage", [3, 4, 6, 3]),
        ("resnet152", "stage", [3, 7, 35, 2]),  # stride-1 3x3s: all of stage 1, blocks 2..n after
        ("preact_resnet164", "stage", [17, 17, 17]),  # blocks 2..n
        ("wrn40_4", "stage", [5, 5, 5]),  # second 3x3 of blocks 2..n
        ("resnet20", "block", [2] * 7),  # every block but the two that change width
        ("wrn16_4", "block", [2] * 3),  # wrn: the first block of each stage changes width
        ("wrn16_1", "block", [2] * 4),  # ...except stage 1 at k=1 (16 -> 16)
    ],
)
def test_plan_follows_the_papers(name, share, uses):
    groups = share_groups(create_model(name, share=share))
    assert [len(convs) for convs in groups.values()] == uses


def test_stage_plan_uses_second_conv_only():
    groups = share_groups(create_model("resnet20", share="stage"))
    assert all(conv.endswith(".conv2") for convs in groups.values() for conv in convs)


def test_intra_block_kernel_applied_with_two_strides():
    model = create_model("resnet18", share="block")
    block = model.stages[0].blocks[0]
    assert block.conv1.kernel() is block.conv2.kernel() is block.shared.weight
    assert model.stages[1].blocks[0].shared is None  # 64 -> 128 keeps two kernels


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: create_model("resnet21"), ValueError, "6n+2"),
        (lambda: create_model("preact_resnet100"), ValueError, "9n+2"),
        (lambda: create_model("wrn30_4"), ValueError, "6n+4"),
        (lambda: create_model("wrn28_0"), ValueError, "k must be"),
        (lambda: create_model("resnext50"), KeyError, "wrn{6n+4}_{k}"),
        (lambda: create_model("resnet20", share="all"), ValueError, "none, stage, block"),
        (lambda: create_model("resnet50", share="block"), ValueError, "bottleneck blocks have one"),
        (lambda: create_model("preact_resnet164", share="block"), ValueError, "valid for this family: none, stage"),
        (lambda: create_model("resnet20", shortcut="C"), ValueError, "'A'"),
        (lambda: create_model("resnet20", num_classes=0), ValueError, "num_classes"),
        (lambda: create_model("resnet20", dropout=0.3), ValueError, "only Wide ResNets"),
    ],
)
def test_invalid_arguments_explain_themselves(call, exc, words):
    with pytest.raises(exc, match=None) as info:
        call()
    assert words in str(info.value)
    assert isinstance(info.value, sharenet.SharenetError)


def test_shortcut_b_and_dropout_options():
    a = sharenet.count_params(create_model("resnet20"))
    b = sharenet.count_params(create_model("resnet20", shortcut="B"))
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # two 1x1 conv + BN projections
    model = create_model("wrn16_4", dropout=0.3).train()
    x = torch.randn(2, 3, 16, 16)
    assert not torch.equal(model(x), model(x))  # dropout active in training
    model.eval()
    assert torch.equal(model(x), model(x))


def test_cifar_prefix_reaches_depths_that_imagenet_names_take():
    assert create_model("cifar_resnet50").arch.family == "cifar"
    assert create_model("resnet50").arch.family == "imagenet"


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["resnet", "cifar_resnet", "preact_resnet", "wrn", "resnet18_", "x"]),
    depth=st.integers(-3, 60),
    width=st.integers(-1, 3) | st.none(),
    share=st.sampled_from([*SCHEMES, "", "Stage", "all"]),
    num_classes=st.integers(-1, 3) | st.none(),
    shortcut=st.sampled_from([None, "A", "B", "C"]),
)
def test_factory_either_builds_or_raises_its_own_error(name, depth, width, share, num_classes, shortcut):
    full = f"{name}{depth}" + ("" if width is None else f"_{width}")
    try:
        with torch.device("meta"):
            model = create_model(full, share=share, num_classes=num_classes, shortcut=shortcut)
    except sharenet.SharenetError:
        return
    assert model.config["share"] == share
