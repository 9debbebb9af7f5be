"""Peer checkpoints give the peer's outputs; fusion, unshare and plan mismatches behave."""

import re

import pytest
import torch

import sharenet
from sharenet.models import create_model

from .helpers import assert_tied
from .peers import CifarResNet, randomize, tv_resnet


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_checkpoint_gives_torchvision_outputs(depth, tmp_path):
    peer = randomize(tv_resnet(depth, num_classes=17))
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(peer.state_dict(), path)
    model = create_model(f"resnet{depth}", num_classes=17)
    report = sharenet.load_weights(model, path)
    assert report.layout == "torchvision"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), peer(x), rtol=1e-5, atol=1e-5)


def test_cifar_checkpoint_nested_and_dataparallel_prefixed(tmp_path):
    peer = randomize(CifarResNet(3))
    assert sharenet.count_params(peer) == sharenet.count_params(create_model("resnet20"))
    path = tmp_path / "resnet20.th"
    torch.save({"epoch": 200, "state_dict": {f"module.{k}": v for k, v in peer.state_dict().items()}}, path)
    model = create_model("resnet20")
    assert sharenet.load_weights(model, path).layout == "cifar"
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), peer(x), rtol=1e-5, atol=1e-5)


def test_pickles_that_need_code_are_refused(tmp_path):
    path = tmp_path / "evil.th"
    torch.save({"state_dict": torch.nn.Linear(2, 2)}, path)  # a whole module: needs the unrestricted unpickler
    with pytest.raises(sharenet.WeightsError, match="cannot be read safely"):
        sharenet.load_weights(create_model("resnet8"), path)


def test_fusion_then_unshare_round_trip():
    source = randomize(create_model("resnet20"))
    shared = create_model("resnet20", share="stage")
    report = sharenet.load_weights(shared, source.state_dict(), fuse_kernels=True)
    assert set(report.fused) == set(sharenet.share_groups(shared))
    assert all(len(d) == 3 for d in report.fused.values()) and report.max_distance > 0
    key, convs = next(iter(report.fused.items()))
    expected = torch.stack([source.get_submodule(c).weight for c in convs]).mean(0)
    torch.testing.assert_close(shared.get_parameter(key), expected)
    # BatchNorm copied per block
    torch.testing.assert_close(shared.stages[1].blocks[2].bn2.running_var, source.stages[1].blocks[2].bn2.running_var)

    plain = sharenet.unshare(shared.eval())
    assert sharenet.count_params(plain) == sharenet.count_params(source)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(plain.eval()(x), shared(x), rtol=0, atol=0)
    # fusing kernels that are already equal is exact
    again = create_model("resnet20", share="stage")
    assert sharenet.load_weights(again, plain.state_dict(), fuse_kernels=True).max_distance == 0
    torch.testing.assert_close(again.eval()(x), shared(x), rtol=0, atol=0)
    assert_tied(again)


def test_other_plan_is_refused_naming_both(tmp_path):
    stage = create_model("resnet20", share="stage")
    block = create_model("resnet20", share="block")
    with pytest.raises(sharenet.PlanMismatchError, match=r"share='stage'.*share='block'") as refused:
        block.load_state_dict(stage.state_dict())
    advice = re.search(r"sharenet\.load_weights\(model, src, (\w+)=True\)", str(refused.value))
    assert advice, str(refused.value)
    assert sharenet.load_weights(block, stage.state_dict(), **{advice[1]: True}).fused  # the advice runs as written
    block = create_model("resnet20", share="block")
    path = sharenet.save(stage, tmp_path / "stage.safetensors")
    with pytest.raises(sharenet.PlanMismatchError, match=r"share='stage'.*share='block'"):
        sharenet.load_weights(block, path)
    with pytest.raises(sharenet.PlanMismatchError, match=r"share='none'.*share='stage'"):
        sharenet.load_weights(stage, create_model("resnet20").state_dict())


def test_shared_file_into_unshared_model_expands_exactly(tmp_path):
    stage = randomize(create_model("wrn16_2", share="stage"))
    path = sharenet.save(stage, tmp_path / "w.safetensors")
    plain = create_model("wrn16_2")
    sharenet.load_weights(plain, path, fuse_kernels=True)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(plain.eval()(x), stage(x), rtol=0, atol=0)


def test_corrupt_and_foreign_files_give_named_errors(tmp_path):
    path = sharenet.save(create_model("resnet8"), tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # flip bits inside a tensor: safetensors alone would not notice
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(sharenet.WeightsError, match="checksum mismatch"):
        sharenet.load(bad)
    (tmp_path / "trunc.safetensors").write_bytes(bytes(data[:50]))
    with pytest.raises(sharenet.WeightsError, match="corrupt"):
        sharenet.load(tmp_path / "trunc.safetensors")
    with pytest.raises(sharenet.WeightsError, match="does not exist"):
        sharenet.load(tmp_path / "missing.safetensors")
    with pytest.raises(sharenet.WeightsError, match="do not fit resnet8"):
        sharenet.load_weights(create_model("resnet8"), create_model("resnet14").state_dict())


def test_import_command_writes_a_loadable_shared_file(tmp_path, capsys):
    from sharenet.cli import main

    peer = randomize(CifarResNet(3))
    torch.save(peer.state_dict(), tmp_path / "peer.th")
    out = tmp_path / "fused.safetensors"
    assert (
        main(["import", str(tmp_path / "peer.th"), "--model", "resnet20", "--share", "stage", "--out", str(out)]) == 0
    )
    assert "fused stages.0.shared.weight from 3 kernels" in capsys.readouterr().out
    model = sharenet.load(out)
    assert model.config["share"] == "stage" and sharenet.count_params(model) == 269_722 - 2 * 9 * (
        16 * 16 + 32 * 32 + 64 * 64
    )
