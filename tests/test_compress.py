"""sharenet compress and distillation: the loss, a real compressed run (fit, BatchNorm, distil),
its resume after a signal, the CIFAR-ResNet path, two ranks, and the faults refused before work."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

import sharenet
from sharenet.engine.objective import Distillation
from sharenet.storage import file_digest

from .helpers import newest_checkpoint_step, regenerate_page
from .peers import CifarResNet, randomize
from .test_distributed import torchrun
from .test_train_cli import sharenet_cli

FAST = ["--batch-size", "64", "--no-progress", "--set", "distil.bn_batches=8", "--set", "run.tta=false"]


def test_distillation_objective_is_hintons():
    """(1 - alpha) CE + alpha T^2 KL(softmax(t/T) || softmax(s/T)), written out by hand."""
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g) * 3
    ce = F.cross_entropy(student, torch.arange(8))
    t = 4.0
    p = (teacher / t).softmax(1)
    kl = (p * (p.log() - (student / t).log_softmax(1))).sum(1).mean()
    got = Distillation(None, 0.9, t).objective(ce, student, teacher)
    assert torch.allclose(got, 0.1 * ce + 0.9 * t * t * kl, rtol=1e-5)
    assert torch.equal(Distillation(None, 0.0, t).objective(ce, student, teacher), ce)  # alpha 0: labels only
    assert Distillation(None, 1.0, t).objective(ce, teacher, teacher).abs() < 1e-6  # the teacher's own outputs


def test_batchnorm_reestimation_averages_the_batches_and_zero_keeps_the_statistics():
    from sharenet.engine.distil import reestimate_batchnorm

    class Stream:  # the training stream's interface: its length and an epoch's (images, labels)
        def __init__(self, xs):
            self.xs = xs

        def __len__(self):
            return len(self.xs)

        def epoch(self, epoch):
            return ((x, None) for x in self.xs)

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(16, 3, 4, 4, generator=g) * (i + 1) + i for i in range(4)]
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).eval()
    cpu = torch.device("cpu")
    with torch.no_grad():
        model[0].running_mean.fill_(5.0)
    assert reestimate_batchnorm(model, Stream(xs), 0, cpu, torch.float32) == 0
    assert torch.all(model[0].running_mean == 5.0) and not model.training  # 0: kept as they were
    assert reestimate_batchnorm(model, Stream(xs), 3, cpu, torch.float32) == 3
    means = torch.stack([x.mean((0, 2, 3)) for x in xs[:3]]).mean(0)
    variances = torch.stack([x.transpose(0, 1).flatten(1).var(1) for x in xs[:3]]).mean(0)
    assert torch.allclose(model[0].running_mean, means, atol=1e-5)
    assert torch.allclose(model[0].running_var, variances, rtol=1e-4)
    assert model[0].momentum == 0.1 and not model.training
    assert reestimate_batchnorm(model, Stream(xs), 100, cpu, torch.float32) == 4  # no more than an epoch has


@pytest.fixture(scope="module")
def teacher(fmnist_dir, tmp_path_factory):
    """A resnet20 share=none trained for 40 steps on the real Fashion-MNIST subset."""
    out = tmp_path_factory.mktemp("teacher") / "t"
    sharenet_cli(
        "train", "--share", "none", "--data-dir", str(fmnist_dir), "--out", str(out), "--max-steps", "40", *FAST
    )
    return out


@pytest.fixture(scope="module")
def compressed(teacher, fmnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "s"
    proc = sharenet_cli(
        "compress", str(teacher), "--share", "stage", "--data-dir", str(fmnist_dir), "--out", str(out),
        "--max-steps", "12", *FAST,
    )  # fmt: skip
    return out, proc


def _summary(run):
    return json.loads((run / "summary.json").read_text())


def test_compress_fits_reestimates_and_distils_into_a_run_directory(compressed, teacher, fmnist_dir):
    out, proc = compressed
    s, t = _summary(out), _summary(teacher)
    assert (s["model"], s["share"], s["params"]) == ("resnet20", "stage", 172_666)
    assert s["teacher"] == {
        "file": str(teacher / "model.safetensors"),
        "sha256": file_digest(teacher / "model.safetensors", "sha256"),
        "params": t["params"],
        "test_top1": t["test_top1"],  # the teacher measured again, on the same fast path: its own number
    }
    start = s["start"]
    assert start["from"] == "fit" and start["bn_batches"] == 8 and 0 < start["fit_error"] < 1
    assert {"fitted_test_top1", "bn_test_top1"} <= start.keys()
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["start"] for r in rows if r["kind"] == "distil"] == [start]
    trained = [r for r in rows if r["kind"] == "train"]  # the CE logged as in any run, the objective beside it
    assert trained and all(r["distil_objective"] > 0 and r["distil_objective"] != r["loss"] for r in trained)
    config = json.loads((out / "config.json").read_text())
    assert config["distil"]["teacher"] == str(teacher) and config["distil"]["fit"] is True
    assert config["model"]["name"] == "resnet20" and config["recipe"] == "compress"
    assert "student: 172,666 parameters" in proc.stdout and "distilled" in proc.stdout
    # a training run like any other: eval reads it, and its weights are a shared model
    ev = json.loads(sharenet_cli("eval", str(out), "--data-dir", str(fmnist_dir), "--json").stdout)
    assert ev["top1"] == s["test_top1"]
    assert sharenet.load(out / "model.safetensors").share == "stage"


def test_a_fitted_start_keeps_what_is_not_shared(teacher, compressed):
    """Before any step, every tensor outside the shared kernels is the teacher's (BatchNorm affine
    weights, stem, head), and a weight-space fit's shared kernel is the mean of the kernels it replaces."""
    from sharenet.engine.distil import fit_student, read_teacher

    t = read_teacher(teacher, "resnet20")
    student = sharenet.create_model("resnet20", share="stage", num_classes=10, in_chans=1)
    errors = fit_student(student, t)
    ours, theirs = student.state_dict(), t.model.state_dict()
    assert torch.equal(ours["head.fc.weight"], theirs["head.fc.weight"])
    assert torch.equal(ours["stages.1.blocks.2.bn2.weight"], theirs["stages.1.blocks.2.bn2.weight"])
    for owned in student.plan.owned():
        kernels = [theirs[f"{slot.path}.weight"] for slot in student.plan.users(owned)]
        assert len(kernels) >= 2 and torch.allclose(ours[owned.key], torch.stack(kernels).mean(0))
    assert set(errors) == {s.path for s in student.plan.slots if s.source == "shared"}
    start = _summary(compressed[0])["start"]  # compress fits outputs on calibration images by default
    assert start["fit_on"] == "data" and set(start["fit_errors"]) == set(errors)


def test_a_data_aware_fit_has_less_output_error_than_the_weight_space_one(teacher, fmnist_dir):
    """On the teacher's real conv inputs, the shared kernel S = (sum W C)(sum C)^-1 and the whitened
    corrections err less on every conv's outputs than the mean and plain SVD; exact at full rank."""
    from sharenet.engine.config import Config, apply
    from sharenet.engine.data_setup import make_streams
    from sharenet.engine.distil import fit_student, input_covariances, read_teacher
    from sharenet.weights.fit import whitening

    t = read_teacher(teacher, "resnet20")
    cfg = apply(Config(), {"data.data_dir": str(fmnist_dir), "run.channels_last": False})
    stream = make_streams(cfg, torch.device("cpu")).train
    student = sharenet.create_model("resnet20", share="stage", num_classes=10, in_chans=1, relax_rank=2)
    paths = [s.path for s in student.plan.slots if s.source == "shared"]
    cov = input_covariances(t.model, paths, stream, 4, torch.device("cpu"), torch.float32)
    data = fit_student(student, t, cov)
    weights_fit = sharenet.create_model("resnet20", share="stage", num_classes=10, in_chans=1, relax_rank=2)
    fit_student(weights_fit, t)
    theirs = t.model.state_dict()
    for path in paths:
        w, root = theirs[f"{path}.weight"].flatten(1).double(), whitening(cov[path])
        k = weights_fit.get_submodule(path).kernel().detach().flatten(1).double()
        by_weights = float(((k - w) @ root).norm() / (w @ root).norm())
        assert data[path] < by_weights, path
    full = sharenet.create_model("resnet20", share="stage", num_classes=10, in_chans=1, relax_rank=16)
    exact = fit_student(full, t, cov)  # rank 16 holds any kernel of 16 outputs: stage 0's are exact
    assert all((err < 1e-9) == path.startswith("stages.0.") for path, err in exact.items()), exact


LEARNED = [{"share": "templates", "templates": 2}, {"share": "basis", "shared_rank": 4}]


@pytest.mark.parametrize("options", LEARNED, ids=["templates", "basis"])
def test_learned_schemes_fitted_on_data_err_less_on_the_outputs(teacher, fmnist_dir, options, tmp_path):
    """Templates and a shared basis found by SVD in the space whitened by all their users' inputs,
    each conv's coefficients (and own filters) fitted on its own: on the teacher's real conv inputs
    their outputs err less in all than the weight-space SVD's, and a basis on every conv. The same
    fit reaches `load_weights(calibration=...)` and `sharenet import --calibration N`."""
    from sharenet.deploy.check import dataset_images
    from sharenet.weights.calibration import in_batches, input_covariances
    from sharenet.weights.files import read_metadata
    from sharenet.weights.fit import whitening

    file = teacher / "model.safetensors"
    images = dataset_images(read_metadata(file), "train", 512, str(fmnist_dir))[0]
    by_data = sharenet.create_model("resnet20", num_classes=10, in_chans=1, **options)
    data = sharenet.load_weights(by_data, file, fuse_kernels=True, calibration=images).fused
    by_weights = sharenet.create_model("resnet20", num_classes=10, in_chans=1, **options)
    sharenet.load_weights(by_weights, file, fuse_kernels=True)
    source = sharenet.load(file).eval()
    paths = [s.path for s in by_data.plan.slots if s.fitted]
    cov = input_covariances(source, paths, in_batches(images))
    theirs, ours = source.state_dict(), sharenet.unshare(by_weights.eval()).state_dict()
    errors = {conv: e for convs in data.values() for conv, e in convs.items()}
    assert set(errors) == set(paths)
    weights_errors = {}
    for path in paths:
        w, root = theirs[f"{path}.weight"].flatten(1).double(), whitening(cov[path])
        k = ours[f"{path}.weight"].flatten(1).double()
        weights_errors[path] = float(((k - w) @ root).norm() / (w @ root).norm())
    assert sum(errors.values()) < sum(weights_errors.values())
    if options["share"] == "basis":
        assert all(errors[p] < weights_errors[p] for p in paths), (errors, weights_errors)
    # the command line: the same fit, its output errors printed, the data set carried to the file
    out = tmp_path / "imported.safetensors"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    args = ["import", str(file), "--model", "resnet20", "--num-classes", "10", "--in-chans", "1", *flags]
    proc = sharenet_cli(*args, "--calibration", "512", "--data-dir", str(fmnist_dir), "--out", str(out))
    assert "outputs' relative error" in proc.stdout
    imported = sharenet.load(out)
    for key, value in by_data.state_dict().items():
        torch.testing.assert_close(imported.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert read_metadata(out)["extra"]["dataset"] == read_metadata(file)["extra"]["dataset"]
    foreign = tmp_path / "foreign.pth"
    torch.save(source.state_dict(), foreign)
    refused = sharenet_cli("import", str(foreign), *args[2:], "--calibration", "64", "--out", str(out), check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "records none" in refused.stderr


def test_compress_stopped_by_sigterm_and_resumed_equals_uninterrupted(teacher, fmnist_dir, tmp_path):
    def start(out, *extra):
        cmd = [sys.executable, "-m", "sharenet", "compress", str(teacher), "--share", "stage"]
        cmd += ["--data-dir", str(fmnist_dir), "--out", str(out), "--max-steps", "24", *FAST, *extra]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    whole = start(tmp_path / "whole")
    assert whole.wait() == 0, whole.stderr.read()[-2000:]
    out = tmp_path / "stopped"
    proc = start(out, "--checkpoint-every", "5")
    deadline = time.monotonic() + 120
    while newest_checkpoint_step(out) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait() == 143 and newest_checkpoint_step(out) < 24  # stopped mid-run, with a checkpoint
    assert f"continue with sharenet compress {teacher} ... --resume auto --out {out}" in proc.stderr.read()
    resumed = start(out, "--checkpoint-every", "5", "--resume", "auto")
    assert resumed.wait() == 0, resumed.stderr.read()[-2000:]
    a, b = _summary(tmp_path / "whole"), _summary(out)
    assert a["rank_param_sha256"] == b["rank_param_sha256"] and a["test_top1"] == b["test_top1"]
    assert a["teacher"] == b["teacher"]
    a["start"].pop("seconds"), b["start"].pop("seconds")  # the one measurement that differs
    assert a["start"] == b["start"]


def test_resume_with_another_teacher_file_is_refused(teacher, compressed, fmnist_dir, tmp_path):
    """A run continues only with the teacher it started with: a resume checks its SHA-256."""
    out = tmp_path / "s"
    out.mkdir()
    for f in compressed[0].iterdir():
        if f.name not in ("summary.json", "model.safetensors"):
            (out / f.name).write_bytes(f.read_bytes())
    other = tmp_path / "other.safetensors"
    model = sharenet.load(teacher / "model.safetensors")
    with torch.no_grad():
        model.head.fc.bias.add_(1.0)
    sharenet.save(model, other, extra=json.loads(json.dumps(_meta_extra(teacher))))
    proc = sharenet_cli(
        "compress", str(other), "--share", "stage", "--data-dir", str(fmnist_dir), "--out", str(out),
        "--max-steps", "14", "--resume", "auto", *FAST, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # after the note of the changed settings
    assert last.startswith("sharenet: error: ") and "not the file this run started with" in last
    assert "test top-1" not in proc.stderr  # refused before any data was read


def _meta_extra(run):
    from sharenet.weights.files import read_metadata

    return read_metadata(run / "model.safetensors")["extra"]


def test_distillation_from_scratch_and_a_budget_that_changes_the_width(teacher, fmnist_dir, tmp_path):
    """`train --set distil.teacher=` distils an unfitted student; `compress --params` that narrows
    the network says it cannot fit and starts from scratch with distillation."""
    out = tmp_path / "scratch"
    sharenet_cli(
        "train", "--share", "block", "--data-dir", str(fmnist_dir), "--out", str(out), "--max-steps", "4",
        "--set", f"distil.teacher={teacher}", *FAST,
    )  # fmt: skip
    s = _summary(out)
    assert s["start"] == {"from": "scratch"} and s["teacher"]["params"] == _summary(teacher)["params"]
    out = tmp_path / "narrow"
    proc = sharenet_cli(
        "compress", str(teacher), "--share", "templates", "--params", "50000", "--data-dir", str(fmnist_dir),
        "--out", str(out), "--max-steps", "4", *FAST,
    )  # fmt: skip
    s = _summary(out)
    assert s["start"] == {"from": "scratch", "fittable": False} and s["params"] <= 50_000
    assert "cannot be fitted" in proc.stderr


def test_compress_on_the_dial_picks_the_rank_that_meets_the_budget(teacher, fmnist_dir, tmp_path):
    """`compress --share stage --params N` keeps the teacher's width and adds corrections of the
    largest rank within N, fitted on calibration images: a start nearer the teacher than hard sharing's."""
    out = tmp_path / "dial"
    proc = sharenet_cli(
        "compress", str(teacher), "--share", "stage", "--params", "200000", "--data-dir", str(fmnist_dir),
        "--out", str(out), "--max-steps", "2", *FAST,
    )  # fmt: skip
    s, config = _summary(out), json.loads((out / "config.json").read_text())
    rank = config["model"]["relax_rank"]
    per_rank = 3 * (16 + 16 * 9) + 3 * (32 + 32 * 9) + 3 * (64 + 64 * 9)  # the 9 shared conv2s: out + in*9 each
    assert rank == (200_000 - 172_666) // per_rank == 8 and s["params"] == 172_666 + rank * per_rank
    assert s["start"]["from"] == "fit" and s["start"]["fit_on"] == "data"
    assert "corrections of rank 8 (the largest that fits)" in proc.stderr
    loaded = sharenet.load(out / "model.safetensors")
    assert loaded.config["relax_rank"] == 8 and loaded.share == "stage"
    assert "is out of reach" in _fault(tmp_path, teacher, "--share", "stage", "--params", "100000",
                                       "--data-dir", str(fmnist_dir))  # fmt: skip


def test_too_few_calibration_images_is_one_line_before_training(teacher, fmnist_dir, tmp_path):
    """One batch of 4 images gives stage 2's 64->64 convs 4 x 7 x 7 = 196 patch rows for their 576
    input dimensions: a whitened fit would invert a singular matrix, so the run stops and says what to raise."""
    out = tmp_path / "few"
    proc = sharenet_cli(
        "compress", str(teacher), "--share", "stage", "--set", "model.relax_rank=2", "--batch-size", "4",
        "--set", "distil.calibration_batches=1", "--data-dir", str(fmnist_dir), "--out", str(out), "--no-progress",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("sharenet: error: too few calibration images for a data-aware fit: 1 batches")
    assert "raise distil.calibration_batches" in line
    assert not list(out.glob("ckpt-*")) and not (out / "summary.json").exists()  # nothing trained, nothing claimed


def test_compress_a_cifar_resnet_checkpoint_on_real_cifar10_images(cifar10_dir, tmp_path):
    """A CIFAR-ResNet-layout resnet20 (nested, DataParallel-prefixed, as those repositories save it)
    compressed on the CIFAR-10 pickle built from the real foolbox test images, end to end."""
    root, _ = cifar10_dir
    peer = randomize(CifarResNet(3))
    ckpt = tmp_path / "resnet20.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in peer.state_dict().items()}, "best_prec1": 91.7}, ckpt)
    out = tmp_path / "s"
    proc = sharenet_cli(
        "compress", str(ckpt), "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(root),
        "--share", "templates", "--out", str(out), "--max-steps", "3", "--batch-size", "4",
        "--set", "run.eval_batch_size=10", "--set", "distil.bn_batches=2", "--no-progress",
        "--set", "distil.fit_on=weights",  # a handful of images: too few to fit on their conv inputs
    )  # fmt: skip
    s = _summary(out)
    assert s["teacher"]["params"] == sharenet.count_params(peer) and s["test_samples"] == 20
    assert s["start"]["from"] == "fit" and s["share"] == "templates" and s["params"] < s["teacher"]["params"]
    assert "teacher:" in proc.stdout
    sharenet_cli("eval", str(out), "--data-dir", str(root))


@pytest.mark.slow
def test_two_ranks_distil_a_relaxed_student_with_the_teacher_on_each(teacher, fmnist_dir, tmp_path):
    """Two ranks: the calibration covariances summed over both, one fitted start, corrections that
    train in step; the student's run then predicts image files as its weights compute."""
    from sharenet.deploy.artifact import open_runner
    from sharenet.deploy.check import dataset_images

    from .test_export import _pngs

    out = tmp_path / "ddp"
    args = ["--share", "stage", "--set", "model.relax_rank=2", "--data-dir", str(fmnist_dir), "--out", str(out)]
    torchrun(2, str(teacher), *args, "--max-steps", "6", *FAST, command="compress")
    s = _summary(out)
    assert s["world_size"] == 2 and len(set(s["rank_param_sha256"])) == 1
    assert s["start"]["from"] == "fit" and s["start"]["fit_on"] == "data"
    assert s["teacher"]["test_top1"] == _summary(teacher)["test_top1"]
    assert sharenet.load(out / "model.safetensors").config["relax_rank"] == 2
    proc = sharenet_cli("predict", str(out), str(_pngs(fmnist_dir, tmp_path / "png", 8)), "--json")
    runner = open_runner(out)
    x, _ = dataset_images(runner.meta, "test", 8, str(fmnist_dir))
    assert [r["top"][0]["index"] for r in json.loads(proc.stdout)] == runner.run(x).argmax(1).tolist()


def _fault(tmp_path, teacher_file, *args):
    out = tmp_path / "never"
    proc = sharenet_cli("compress", str(teacher_file), "--out", str(out), "--no-progress", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("sharenet: error: ")
    assert not out.exists() or not any(out.iterdir())  # before any work: nothing written
    return proc.stderr


def _weights(tmp_path, name, **kwargs):
    path = tmp_path / f"{name}.safetensors"
    model = sharenet.create_model(name, **kwargs)
    return sharenet.save(model, path, extra={"dataset": "fashion-mnist"})


def test_faults_are_refused_in_one_line_before_any_work(teacher, fmnist_dir, tmp_path):
    data = ["--data-dir", str(fmnist_dir)]
    classes = _weights(tmp_path, "resnet20", share="none", num_classes=5, in_chans=1)
    assert "has 5 classes, the data set 10" in _fault(tmp_path, classes, "--share", "stage", *data)
    chans = _weights(tmp_path, "resnet20", share="none", num_classes=10, in_chans=3)
    assert "takes 3 input channels, the data set has 1" in _fault(tmp_path, chans, "--share", "stage", *data)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes((teacher / "model.safetensors").read_bytes()[:-100])
    assert "corrupt" in _fault(tmp_path, corrupt, "--share", "stage", *data)
    wide = _weights(tmp_path, "wrn16_2", share="none", num_classes=10, in_chans=1)
    assert "share='basis'" in _fault(tmp_path, wide, "--share", "basis", *data)
    shared = _weights(tmp_path, "resnet20", share="stage", num_classes=10, in_chans=1)
    assert "would be larger than its teacher" in _fault(tmp_path, shared, "--share", "none", *data)
    assert "needs --share" in _fault(tmp_path, teacher, *data)
    assert "does not exist" in _fault(tmp_path, tmp_path / "missing", "--share", "stage", *data)
    foreign = tmp_path / "foreign.pth"
    torch.save(randomize(CifarResNet(3)).state_dict(), foreign)
    assert "--model and --dataset" in _fault(tmp_path, foreign, "--share", "stage", *data)


def test_the_compression_report_reads_every_stage_from_the_runs(compressed, teacher, tmp_path):
    out = tmp_path / "compress.md"
    sharenet_cli("report", "--compress", str(compressed[0]), str(teacher), "--out", str(out), "--title", "C")
    text, s, t = out.read_text(), _summary(compressed[0]), _summary(teacher)
    assert f"{t['params']:,} parameters, test top-1 {100 * t['test_top1']:.2f} %" in text
    row = next(line for line in text.splitlines() if line.startswith("| resnet20 stage"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:4] == ["172,666", f"{100 * 172_666 / t['params']:.0f} %", "fit on data + distillation"]
    start = s["start"]
    assert cells[6:10] == [
        f"{100 * start['fitted_test_top1']:.2f}",
        f"{100 * start['bn_test_top1']:.2f}",
        f"{100 * s['test_top1']:.2f}",
        f"{100 * (s['test_top1'] - t['test_top1']):+.2f}",  # one seed: no interval
    ]
    assert "| resnet20 none | " in text and "from scratch, labels only" in text  # the teacher's own run


@pytest.mark.parametrize("page", ["compress", "compress-lr-choice", "compress-heldout-choice"])
def test_the_compression_pages_regenerate_from_their_records(page, tmp_path):
    """Each page is the output of the `sharenet report` command its notes show, byte for byte."""
    regenerate_page(page, tmp_path)
