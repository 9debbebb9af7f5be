"""Checkpoints of the learned-sharing peers (Kang et al.'s Net_RL2, Savarese & Maire's SWRN)
load into sharenet's share="basis" / share="templates" models and give the peer's outputs."""

import pytest
import torch

import sharenet
from sharenet.models import create_model

from .peers import SWRN, NetRL2ResNet, SConv2d, randomize

NETRL2 = {  # id: (peer, sharenet model, input side)
    "cifar-single": (
        lambda: NetRL2ResNet([3, 3, 3], 4, 1),
        lambda: create_model("resnet20", share="basis", shared_rank=4, unique_rank=1),
        32,
    ),
    "cifar-double": (
        lambda: NetRL2ResNet([3, 3, 3], 4, 2, double=True),
        lambda: create_model("resnet20", share="basis", shared_rank=4, unique_rank=2, basis="double"),
        32,
    ),
    "imagenet-double": (
        lambda: NetRL2ResNet([2, 2, 2, 2], 8, 1, double=True, imagenet=True, num_classes=10),
        lambda: create_model("resnet18", share="basis", shared_rank=8, unique_rank=1, basis="double", num_classes=10),
        64,
    ),
}
SWRNS = {
    "swrn16-2-2": (lambda: SWRN(16, 2, 2), lambda: create_model("wrn16_2", share="templates", templates=2)),
    "swrn22-2-3": (lambda: SWRN(22, 2, 3), lambda: create_model("wrn22_2", share="templates", templates=3)),
}


def swrn_peer(make):
    """A randomized SWRN whose coefficients mix the templates at full scale, so that a mixing
    error would show in the outputs."""
    peer = randomize(make())
    with torch.no_grad():
        for conv in peer.modules():
            if isinstance(conv, SConv2d):
                conv.coefficients.normal_()
    return peer


def assert_same_outputs(model, peer, side):
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected = peer.eval()(x)
        scale = expected.abs().max().item()
        torch.testing.assert_close(model.eval()(x), expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("case", NETRL2)
def test_netrl2_checkpoint_gives_netrl2_outputs(case, tmp_path):
    make_peer, make_model, side = NETRL2[case]
    peer = randomize(make_peer())
    model = make_model()
    assert sharenet.count_params(model) == sharenet.count_params(peer)
    assert any(".shared_basis" in k for k in peer.state_dict())  # the peer's aliases are in the file
    path = tmp_path / "netrl2.pth"  # their training script's checkpoint: state beside a 0-d accuracy
    torch.save({"net_state_dict": peer.state_dict(), "acc": torch.tensor(93.07), "epoch": 253}, path)
    report = sharenet.load_weights(model, path)
    assert (report.layout, report.source_share) == ("netrl2", "basis")
    assert_same_outputs(model, peer, side)


@pytest.mark.parametrize("case", SWRNS)
def test_swrn_checkpoint_gives_swrn_outputs(case, tmp_path):
    make_peer, make_model = SWRNS[case]
    peer = swrn_peer(make_peer)
    model = make_model()
    assert sharenet.count_params(model) == sharenet.count_params(peer)
    torch.save(peer.state_dict(), tmp_path / "swrn.t7")
    report = sharenet.load_weights(model, tmp_path / "swrn.t7")
    assert (report.layout, report.source_share) == ("soft-sharing", "templates")
    assert_same_outputs(model, peer, 32)


def test_netrl2_checkpoint_expands_into_a_plain_resnet(tmp_path):
    peer = randomize(NETRL2["cifar-double"][0]())
    torch.save(peer.state_dict(), tmp_path / "netrl2.pth")
    plain = create_model("resnet20")
    report = sharenet.load_weights(plain, tmp_path / "netrl2.pth", fuse_kernels=True)
    assert (report.source_share, report.target_share) == ("basis", "none")
    assert_same_outputs(plain, peer, 32)


@pytest.mark.parametrize(
    "peer, model, alias",
    [
        (NETRL2["cifar-single"], "resnet20", "layer2.1.shared_basis.weight"),
        (NETRL2["cifar-double"], "resnet20", "layer3.2.shared_basis_2.weight"),
        (SWRNS["swrn16-2-2"], "wrn16_2", "stage_2.1.conv1.bank.templates"),
    ],
)
def test_alias_that_differs_from_its_tensor_is_refused(peer, model, alias):
    state = randomize(peer[0]()).state_dict()
    state[alias] = state[alias].clone()
    state[alias][0, 0, 0] += 1e-3
    with pytest.raises(sharenet.WeightsError, match=f"{alias}.*differs"):
        sharenet.load_weights(create_model(model), state, fuse_kernels=True)
