"""Tied kernels stay tied through every way PyTorch users copy, move and load models."""

import copy

import pytest
import torch
from safetensors.torch import save_file

import sharenet
from sharenet.models import create_model

from .helpers import assert_tied

CASES = [  # every family under the hard schemes, every family each learned scheme applies to
    ("resnet20", "stage"),
    ("resnet20", "block"),
    ("wrn16_2", "stage"),
    ("resnet50", "stage"),
    ("preact_resnet20", "stage"),
    ("resnet20", "templates"),
    ("wrn22_2", "templates"),
    ("preact_resnet20", "templates"),
    ("resnet50", "templates"),
    ("resnet20", "basis"),
    ("resnet18", "basis"),
    ("resnet20", "ring"),
    ("preact_resnet20", "ring"),
]


def _x(model):
    size = 64 if model.arch.family == "imagenet" else 16
    return torch.randn(2, 3, size, size)


def _distinct_tensors(state):
    return {(t.untyped_storage().data_ptr(), t.storage_offset()) for t in state.values()}


@pytest.fixture(params=CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def model(request):
    name, share = request.param
    return create_model(name, share=share).eval()


def test_state_dict_has_one_key_per_tensor(model, tmp_path):
    state = model.state_dict()
    assert len(state) == len(_distinct_tensors(state))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "m.safetensors"))  # refuses aliases


def test_deepcopy_keeps_ties_and_detaches_from_source(model):
    clone = copy.deepcopy(model)
    assert assert_tied(clone) > 0
    key = next(iter(sharenet.share_groups(clone)))
    assert clone.get_parameter(key) is not model.get_parameter(key)


@torch.no_grad()
def test_dtype_and_memory_format_keep_ties(model):
    """Ties survive .to(dtype) and channels_last. The outputs are compared in float64, where the
    convolution algorithms a CPU picks for each layout agree to rounding far below any tie error;
    in float32 they may differ by a few hundred ulps of the logits' scale (CPU-dependent)."""
    x = _x(model).double()
    model.to(torch.float64)
    assert_tied(model)
    expected = model(x)
    model.to(memory_format=torch.channels_last)
    assert_tied(model)
    got = model(x.to(memory_format=torch.channels_last))
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10 * scale)
    model.to(torch.float32)
    assert_tied(model)
    fp32 = model(x.float().to(memory_format=torch.channels_last))
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(fp32, expected.float(), rtol=0, atol=2**10 * eps * scale)


def test_meta_construction_then_to_empty_and_load(model):
    with torch.device("meta"):
        empty = create_model(**model.config)
    empty.to_empty(device="cpu")
    empty.load_state_dict(model.state_dict())
    assert assert_tied(empty) > 0
    x = _x(model)
    torch.testing.assert_close(empty.eval()(x), model(x), rtol=0, atol=0)


def test_load_state_dict_assign_keeps_ties_through_an_update(model):
    fresh = create_model(**model.config).eval()
    fresh.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
    assert_tied(fresh)
    x = _x(model)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    key = next(iter(sharenet.share_groups(fresh)))
    with torch.no_grad():
        fresh.get_parameter(key).add_(1.0)
    assert_tied(fresh)  # every user still applies the updated tensor


def test_save_and_load_rebuild_the_same_model(model, tmp_path):
    path = sharenet.save(model, tmp_path / "m.safetensors")
    loaded = sharenet.load(path).eval()
    assert loaded.config == model.config
    assert sharenet.share_groups(loaded) == sharenet.share_groups(model)
    assert_tied(loaded)
    x = _x(model)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_shared_gradient_is_the_sum_over_uses():
    """The shared kernel's gradient equals the sum of its uses' gradients in the unshared twin."""
    model = create_model("resnet20", share="stage").double()
    twin = sharenet.unshare(model)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    model(x).square().sum().backward()
    twin(x).square().sum().backward()
    groups = sharenet.share_groups(model)
    assert len(groups) == 3 and all(len(convs) == 3 for convs in groups.values())
    for key, convs in groups.items():
        kernel = model.get_parameter(key)
        per_use = [twin.get_submodule(conv).weight.grad for conv in convs]
        assert sum(p is kernel for p in model.parameters()) == 1  # optimizers see it once
        assert not torch.allclose(per_use[0], per_use[1])  # the uses contribute different gradients
        torch.testing.assert_close(kernel.grad, sum(per_use), rtol=1e-12, atol=1e-12 * float(kernel.grad.abs().max()))
