"""Exports keep the savings: one stored copy per distinct tensor, outputs of the eager model, int8 once.

Every family and scheme is exported for real with torch.onnx / torch.export and run in
onnxruntime; trained runs on real Fashion-MNIST, CIFAR-10 and ImageNet images are exported,
quantized and asked to predict PNG/JPEG files.
"""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

from sharenet.cli import main
from sharenet.deploy.artifact import open_runner
from sharenet.deploy.check import compare
from sharenet.deploy.export import export
from sharenet.models import create_model

from .test_ties import CASES
from .test_train_cli import sharenet_cli

pytestmark = pytest.mark.slow


def _settled(model, x):
    """The model with BatchNorm statistics of a few batches, so that eval-mode outputs are O(1)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def _input(model, batch=4):
    size = model.arch.input_size  # what the export's input is shaped for
    return torch.randn(batch, 3, size, size)


@pytest.mark.parametrize(("name", "share"), [*CASES, ("resnet20", "none")], ids=lambda c: str(c))
def test_onnx_stores_each_tensor_once_and_computes_the_model(name, share, tmp_path):
    model = create_model(name, share=share)
    x = _input(model)
    model = _settled(model, torch.cat([x, _input(model, 8)]))
    done = export(model, tmp_path / "m.onnx", "onnx", {"config": model.config})
    assert abs(done.overhead) <= 0.02, f"{done.tensor_bytes:,} bytes stored for {done.expected_bytes:,}"
    proto = onnx.load(str(done.path))
    names = {t.name for t in proto.graph.initializer}
    assert set(model.state_dict()) - names <= {k for k in model.state_dict() if k.endswith("num_batches_tracked")}
    got = compare(model(x).detach(), open_runner(done.path).run(x))
    assert got["relative_diff"] <= 1e-4 and got["top1_agreement"] == 1.0, got


def test_stage_resnet56_exports_in_its_parameter_bytes_and_agrees_on_real_images(cifar10_dir, tmp_path):
    """The issue's bar: 465,946 parameters -> an ONNX file within 2% of their bytes + BatchNorm."""
    _, images = cifar10_dir
    x = torch.stack([torch.from_numpy(img).permute(2, 0, 1).float() / 255 for img, _ in images])
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    model = create_model("resnet56", share="stage", num_classes=10, in_chans=3)
    assert sum(p.numel() for p in model.parameters()) == 465_946
    model = _settled(model, x)
    done = export(model, tmp_path / "m.onnx", "onnx", {"config": model.config})
    bn_stats = sum(m.num_features * 2 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert abs(done.file_bytes / ((465_946 + bn_stats) * 4) - 1) <= 0.02, done
    got = compare(model(x).detach(), open_runner(done.path).run(x))
    assert got["top1_agreement"] == 1.0 and got["relative_diff"] <= 1e-4, got


def test_shared_file_is_smaller_in_the_ratio_of_parameters(tmp_path):
    sizes, params = {}, {}
    for share in ("none", "stage", "block"):
        model = create_model("resnet20", share=share).eval()
        sizes[share] = export(model, tmp_path / f"{share}.onnx", "onnx", {"config": model.config}).file_bytes
        params[share] = sum(p.numel() for p in model.parameters())
    for share in ("stage", "block"):
        assert sizes[share] / sizes["none"] == pytest.approx(params[share] / params["none"], rel=0.03)


@pytest.mark.parametrize("share", ["stage", "templates"])
def test_pt2_program_stores_each_tensor_once_and_computes_the_model(share, tmp_path):
    model = create_model("resnet20", share=share, in_chans=1)
    x = torch.randn(8, 1, 32, 32)
    model = _settled(model, x)
    done = export(model, tmp_path / "m.pt2", "pt2", {"config": model.config}, batch="dynamic")
    assert abs(done.overhead) <= 0.02
    runner = open_runner(done.path)
    assert runner.kind == "pt2" and runner.meta["config"] == model.config
    for batch in (1, 8):  # the batch dimension stays dynamic
        assert torch.allclose(runner.run(x[:batch]), model(x[:batch]), atol=1e-5)


# --- a real trained run, exported, quantized and asked to predict


@pytest.fixture(scope="module")
def trained(fmnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    sharenet_cli(
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--max-steps",
        "40",
        "--batch-size",
        "64",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "run.compile=off",
    )
    return out


def _cli_json(capsys, *args):
    """`sharenet ARGS --json` in this process (torch and onnx are imported once for the module)."""
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_export_check_reports_agreement_on_the_real_test_set(trained, fmnist_dir, tmp_path, capsys):
    for fmt in ("onnx", "pt2"):
        r = _cli_json(
            capsys,
            "export",
            str(trained),
            "--format",
            fmt,
            "--out",
            str(tmp_path / f"m.{fmt}"),
            "--check",
            "--data-dir",
            str(fmnist_dir),
        )
        c = r["check"]
        assert c["images"] == 1000 and c["top1_agreement"] == 1.0 and c["relative_diff"] <= 1e-4, r
        assert c["top1"] == c["reference_top1"]
        assert abs(r["overhead"]) <= 0.02


def _int8_conv_weights(proto) -> dict[str, int]:
    """Quantized weight tensor name -> how many Dequantize nodes read it."""
    uses = {}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0].endswith("weight_quantized"):
            uses[node.input[0]] = uses.get(node.input[0], 0) + 1
    return uses


def test_int8_quantizes_each_shared_kernel_once(trained, fmnist_dir, tmp_path, capsys):
    fp32 = _cli_json(capsys, "export", str(trained), "--out", str(tmp_path / "m.onnx"))
    r = _cli_json(
        capsys,
        "export",
        str(trained),
        "--int8",
        "--out",
        str(tmp_path / "q.onnx"),
        "--check",
        "--calibration",
        "256",
        "--data-dir",
        str(fmnist_dir),
    )
    assert r["file_bytes"] < 0.5 * fp32["file_bytes"]
    assert r["check"]["top1"] >= r["check"]["reference_top1"] - 0.03, r["check"]
    proto = onnx.load(str(tmp_path / "q.onnx"))
    quantized = _int8_conv_weights(proto)
    model = create_model("resnet20", share="stage", in_chans=1)
    kernels = {k for k in model.state_dict() if k.endswith("weight") and model.state_dict()[k].ndim == 4}
    assert {k.removesuffix("_quantized") for k in quantized if "conv" in k or "shared" in k} == kernels
    shared = [k for k in quantized if ".shared." in k]
    assert len(shared) == 3 and all(quantized[k] == 1 for k in quantized)  # one int8 tensor, one dequantize
    int8 = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims]
    assert len({t.name for t in int8}) == len(int8)
    # Without VNNI, onnxruntime sums pairs of uint8 x int8 products in int16: weights within +-64 keep
    # 2 x 255 x 64 = 32,640 in range, so the file computes the same on every x86 CPU. Full 8-bit weights
    # (+-127) cost a 5-epoch resnet20 0.84 points of top-1 on an AVX2-only EPYC. The range holds on any
    # CPU; this 40-step model's agreement with eager is too noisy to assert (near-ties between classes).
    assert max(int(np.abs(numpy_helper.to_array(t).astype(int)).max()) for t in int8) <= 64


def _pngs(fmnist_dir, target, n=24):
    from sharenet.data.fashion_mnist import read_idx

    images = read_idx(fmnist_dir / "t10k-images-idx3-ubyte.gz")[:n]
    target.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(np.asarray(img).reshape(28, 28)).save(target / f"{i:03d}.png")
    return target


def test_predict_from_run_weights_and_onnx_agree_with_the_evaluation(trained, fmnist_dir, tmp_path, capsys):
    from sharenet.deploy.check import dataset_images

    pngs = _pngs(fmnist_dir, tmp_path / "png")
    onnx_file = tmp_path / "m.onnx"
    _cli_json(capsys, "export", str(trained), "--out", str(onnx_file))
    runner = open_runner(trained)
    x, _ = dataset_images(runner.meta, "test", 24, str(fmnist_dir))
    expected = torch.softmax(runner.run(x), 1)
    for source in (trained, trained / "model.safetensors", onnx_file):
        rows = _cli_json(capsys, "predict", str(source), str(pngs), "--top-k", "3")
        assert [r["file"] for r in rows] == sorted(str(p) for p in pngs.iterdir())
        got = torch.tensor([[t["prob"] for t in r["top"]] for r in rows])
        assert torch.allclose(got, expected.topk(3).values, atol=1e-5), source
        assert [r["top"][0]["index"] for r in rows] == expected.argmax(1).tolist()
        assert rows[0]["top"][0]["class"] in runner.classes and "T-shirt/top" in runner.classes


def test_predict_cifar_and_imagenet_sample_images(cifar10_dir, imagenet_dir, tmp_path, capsys):
    """Runs trained on the real CIFAR-10 and ImageNet samples classify those image files."""
    from sharenet.data.imagefolder import ImageFolder

    root, images = cifar10_dir
    cifar_run = tmp_path / "cifar"
    sharenet_cli(
        "train",
        "--recipe",
        "cifar-he",
        "--model",
        "resnet8",
        "--data-dir",
        str(root),
        "--batch-size",
        "4",
        "--max-steps",
        "2",
        "--out",
        str(cifar_run),
        "--no-progress",
    )
    files = tmp_path / "cifar-png"
    files.mkdir()
    for i, (img, _) in enumerate(images):
        Image.fromarray(img).save(files / f"{i:02d}.png")
    rows = _cli_json(capsys, "predict", str(cifar_run), str(files))
    runner = open_runner(cifar_run)
    x = torch.stack([torch.from_numpy(img).permute(2, 0, 1).float() / 255 for img, _ in images])
    pre = runner.preprocess
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    assert [r["top"][0]["index"] for r in rows] == runner.run(x).argmax(1).tolist()
    assert rows[0]["top"][0]["class"].startswith("class")

    imagenet_run = tmp_path / "imagenet"
    sharenet_cli(
        "train",
        "--recipe",
        "imagenet-fb",
        "--model",
        "resnet18",
        "--data-dir",
        str(imagenet_dir),
        "--batch-size",
        "4",
        "--max-steps",
        "1",
        "--out",
        str(imagenet_run),
        "--no-progress",
        "--set",
        "run.eval_batch_size=10",
        "--set",
        "data.workers=0",
    )
    val = ImageFolder(imagenet_dir / "val", train=False)
    rows = _cli_json(capsys, "predict", str(imagenet_run), str(imagenet_dir / "val"))
    expected = open_runner(imagenet_run).run(torch.stack([val[i][0] for i in range(len(val))])).argmax(1)
    assert [r["file"] for r in rows] == [str(p) for p, _ in val.samples]
    assert [r["top"][0]["index"] for r in rows] == expected.tolist()
    assert {r["top"][0]["class"] for r in rows} <= set(val.classes)


# --- bad input: one line, non-zero exit


def _fails(capsys, *args) -> str:
    capsys.readouterr()
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_bad_exports_and_predictions_say_one_line(trained, tmp_path, capsys):
    onnx_file = tmp_path / "m.onnx"
    _cli_json(capsys, "export", str(trained), "--out", str(onnx_file))
    assert "--int8 needs --format onnx" in _fails(
        capsys, "export", str(trained), "--format", "pt2", "--int8", "--out", str(tmp_path / "x.pt2")
    )
    out = str(tmp_path / "x.onnx")
    assert "--batch must be" in _fails(capsys, "export", str(trained), "--batch", "0", "--out", out)
    assert "does not exist" in _fails(capsys, "export", str(tmp_path / "nothing"), "--out", out)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[:5000])
    assert "cannot load" in _fails(capsys, "predict", str(truncated), str(trained))
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),), str(foreign), dynamo=True, verbose=False)
    assert "no sharenet metadata" in _fails(capsys, "predict", str(foreign), str(trained))
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    assert "cannot read image" in _fails(capsys, "predict", str(onnx_file), str(not_image))
    (tmp_path / "empty").mkdir()
    assert "no images" in _fails(capsys, "predict", str(onnx_file), str(tmp_path / "empty"))


def test_missing_export_extra_is_named(trained, tmp_path):
    """With onnx unimportable (as in an install without the extra), export says what to install."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['onnxscript'] = None; sys.modules['onnx'] = None\n"
        "from sharenet.cli import main\n"
        f"sys.exit(main(['export', {str(trained)!r}, '--out', {str(tmp_path / 'x.onnx')!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "pip install 'sharenet[export]'" in proc.stderr, proc.stderr


def test_opset_and_fixed_batch_are_honoured(tmp_path):
    model = create_model("resnet20", share="stage").eval()
    done = export(model, tmp_path / "m.onnx", "onnx", {"config": model.config}, batch=3, opset=20)
    proto = onnx.load(str(done.path))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {20}
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [3, 3, 32, 32]
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(open_runner(done.path).run(x), model(x), atol=1e-4)


def test_ring_run_exports_the_ring_checks_and_predicts(fmnist_dir, tmp_path, capsys):
    """A trained ring model's files hold the ring, not its map or kernels: tensors at most 1.1 x
    (parameters + BatchNorm statistics) x 4 bytes, the map recomputed in the graph from the seed."""
    run = tmp_path / "ring"
    sharenet_cli(
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--model",
        "resnet20",
        "--share",
        "ring",
        "--set",
        "model.params=60000",
        "--max-steps",
        "20",
        "--batch-size",
        "64",
        "--out",
        str(run),
        "--no-progress",
        "--set",
        "run.compile=off",
    )
    for fmt in ("onnx", "pt2"):
        r = _cli_json(
            capsys,
            "export",
            str(run),
            "--format",
            fmt,
            "--out",
            str(tmp_path / f"m.{fmt}"),
            "--check",
            "--data-dir",
            str(fmnist_dir),
        )
        assert r["tensor_bytes"] <= 1.1 * r["expected_bytes"] and r["expected_bytes"] < 60_000 * 4 * 1.1, r
        c = r["check"]
        assert c["top1_agreement"] == 1.0 and c["relative_diff"] <= 1e-4, r
    pngs = _pngs(fmnist_dir, tmp_path / "png", n=8)
    from_file = _cli_json(capsys, "predict", str(tmp_path / "m.onnx"), str(pngs))
    from_run = _cli_json(capsys, "predict", str(run), str(pngs))
    assert [r["top"][0]["index"] for r in from_file] == [r["top"][0]["index"] for r in from_run]
    assert "export it without --int8" in _fails(capsys, "export", str(run), "--int8", "--out", str(tmp_path / "q.onnx"))
