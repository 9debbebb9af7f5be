"""Training semantics that a run's files alone do not show: what a resume keeps or refuses, and
what label smoothing, gradient clipping, lr scaling and the weight EMA do to the numbers.

The command-line tests share one short EMA run stopped by --max-steps, copied before each use,
and one uninterrupted twin; the in-process tests take one Trainer step of a small model and
compare it with an independent computation in float64.
"""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import sharenet
from sharenet.engine.checkpoint import load_checkpoint
from sharenet.engine.config import Config, apply
from sharenet.engine.fit import build_trainer
from sharenet.engine.optim import base_lr, lr_factor
from sharenet.engine.recipes import recipe_config

from .test_train_cli import sharenet_cli

BATCH = 64
STEPS_PER_EPOCH = 2560 // BATCH  # the fmnist_dir subset: 40 whole batches
STOP, FINAL, EVERY = 4, 8, 3  # the short run stops mid-epoch at STOP; the resumed and the whole run go to FINAL
COMMON = [
    "--batch-size",
    str(BATCH),
    "--no-progress",
    "--checkpoint-every",
    str(EVERY),
    "--set",
    "run.compile=off",
    "--set",
    "optim.ema_decay=0.9",
]
EPS32 = torch.finfo(torch.float32).eps


def _args(fmnist_dir, out, *extra) -> list[str]:
    return ["train", "--data-dir", str(fmnist_dir), "--out", str(out), *COMMON, *extra]


def _snapshot(run) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def _copy(run, dst):
    shutil.copytree(run, dst)
    (dst / "summary.json").unlink(missing_ok=True)  # a stopped run, as if killed after its last checkpoint
    return dst


@pytest.fixture(scope="module")
def stopped_run(fmnist_dir, tmp_path_factory):
    """An EMA run stopped by --max-steps mid-epoch, with a periodic and a final checkpoint."""
    out = tmp_path_factory.mktemp("stopped") / "r"
    sharenet_cli(*_args(fmnist_dir, out, "--max-steps", str(STOP)))
    assert sorted(p.name for p in out.glob("ckpt-*.pt")) == [f"ckpt-{EVERY:08d}.pt", f"ckpt-{STOP:08d}.pt"]
    return out


@pytest.fixture(scope="module")
def whole_run(fmnist_dir, tmp_path_factory):
    """The same settings run to FINAL without a stop."""
    out = tmp_path_factory.mktemp("whole") / "r"
    sharenet_cli(*_args(fmnist_dir, out, "--max-steps", str(FINAL)))
    return out


@pytest.fixture(scope="module")
def resumed_run(stopped_run, fmnist_dir, tmp_path_factory):
    """The stopped run continued to FINAL with --resume auto and nothing else changed."""
    out = _copy(stopped_run, tmp_path_factory.mktemp("resumed") / "r")
    proc = sharenet_cli(*_args(fmnist_dir, out, "--max-steps", str(FINAL), "--resume", "auto"))
    assert f"resumed from {out / f'ckpt-{STOP:08d}.pt'} at step {STOP}" in proc.stderr
    assert f"resuming with changed settings: run.max_steps: {STOP} -> {FINAL}\n" in proc.stderr  # and nothing else
    return out


# -- resume: refused for another model/batch/EMA, and a new lr is really used ---------------------

INCOMPATIBLE = {  # flags of the resumed run -> the change its error must name
    "optim.batch_size": (["--batch-size", "32"], "optim.batch_size: 64 -> 32"),
    "model.share": (["--share", "none"], "model.share: 'stage' -> 'none'"),
    "model.name": (["--model", "resnet32"], "model.name: 'resnet20' -> 'resnet32'"),
    "optim.ema_decay": (["--set", "optim.ema_decay=0"], "optim.ema_decay: 0.9 -> 0.0"),
}


def _assert_refused(stderr: str, key: str) -> None:
    assert "Traceback" not in stderr and stderr.count("sharenet: error:") == 1, stderr[-2000:]
    error = next(line for line in stderr.splitlines() if line.startswith("sharenet: error:"))
    assert INCOMPATIBLE[key][1] in error and "another configuration" in error, error
    assert not any(other in error for other in INCOMPATIBLE if other != key), error  # only what changed is blamed


@pytest.mark.slow
@pytest.mark.parametrize("key", list(INCOMPATIBLE))
def test_resume_with_an_incompatible_setting_is_refused_and_touches_nothing(
    stopped_run, fmnist_dir, tmp_path, capsys, key
):
    """A checkpoint of another model, batch or EMA cannot continue: one error naming the key, files intact.

    In-process through the CLI's main() (what `python -m sharenet` exits with); the next test runs one
    case as a real process.
    """
    from sharenet.cli import main

    out = _copy(stopped_run, tmp_path / "r")
    before = _snapshot(out)
    capsys.readouterr()
    code = main(_args(fmnist_dir, out, "--max-steps", str(FINAL), "--resume", "auto", *INCOMPATIBLE[key][0]))
    assert code == 2
    _assert_refused(capsys.readouterr().err, key)
    assert _snapshot(out) == before  # same files, same bytes: no checkpoint, metrics or config rewritten


@pytest.mark.slow
def test_refused_resume_exits_2_as_a_process(stopped_run, fmnist_dir, tmp_path):
    """The exit status and stderr a script or a scheduler sees."""
    out = _copy(stopped_run, tmp_path / "r")
    before = _snapshot(out)
    flags = INCOMPATIBLE["optim.batch_size"][0]
    proc = sharenet_cli(*_args(fmnist_dir, out, "--max-steps", str(FINAL), "--resume", "auto", *flags), check=False)
    assert proc.returncode == 2
    _assert_refused(proc.stderr, "optim.batch_size")
    assert _snapshot(out) == before


@pytest.mark.slow
def test_resume_trains_with_the_new_lr_and_momentum(stopped_run, fmnist_dir, tmp_path):
    """lr and momentum may change on resume (the fix after a non-finite loss); the optimizer must use them."""
    out = _copy(stopped_run, tmp_path / "r")
    end = STOP + 4
    proc = sharenet_cli(
        *_args(
            fmnist_dir,
            out,
            "--max-steps",
            str(end),
            "--resume",
            "auto",
            "--lr",
            "0.05",
            "--set",
            "optim.momentum=0.5",
            "--set",
            "run.log_every=1",
        )
    )
    default_lr = recipe_config("fashion-mnist").optim.lr
    assert f"optim.lr: {default_lr} -> 0.05" in proc.stderr and "optim.momentum: 0.9 -> 0.5" in proc.stderr
    overrides = {"optim.batch_size": BATCH, "optim.ema_decay": 0.9}
    new = apply(recipe_config("fashion-mnist"), {**overrides, "optim.lr": 0.05, "optim.momentum": 0.5}).optim
    old = apply(recipe_config("fashion-mnist"), overrides).optim
    assert new.warmup_steps > end  # the lr ramps at every step here: a stale step count would show too
    for step in (2 * EVERY, end):  # the periodic checkpoint and the last one, both written after the resume
        state = load_checkpoint(out / f"ckpt-{step:08d}.pt")
        assert state["step"] == step
        expected = base_lr(new) * lr_factor(step, new, STEPS_PER_EPOCH)
        for group in state["optimizer"]["param_groups"]:
            assert group["lr"] == pytest.approx(expected, rel=1e-12, abs=0)
            assert group["lr"] != pytest.approx(base_lr(old) * lr_factor(step, old, STEPS_PER_EPOCH), rel=1e-3)
            assert group["momentum"] == 0.5 and group["nesterov"] is True
        assert state["scheduler"]["base_lrs"] == [pytest.approx(base_lr(new), rel=1e-12)] * len(
            state["optimizer"]["param_groups"]
        )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["lr"] for r in rows if r["kind"] == "train" and r["step"] > STOP}
    assert sorted(logged) == list(range(STOP + 1, end + 1))
    assert all(
        lr == pytest.approx(base_lr(new) * lr_factor(s, new, STEPS_PER_EPOCH), rel=1e-12) for s, lr in logged.items()
    )


# -- the weight EMA across a stop and a resume ------------------------------------------------------


@pytest.mark.slow
def test_ema_run_stopped_and_resumed_equals_the_whole_run_bitwise(whole_run, resumed_run):
    """The EMA weights are training state: a resume that lost or re-initialised them would differ here."""
    a = load_file(str(whole_run / "model.safetensors"))
    b = load_file(str(resumed_run / "model.safetensors"))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    sa = json.loads((whole_run / "summary.json").read_text())
    sb = json.loads((resumed_run / "summary.json").read_text())
    assert sa["steps"] == sb["steps"] == FINAL and sa["weights"] == sb["weights"] == "ema"
    assert sa["test_top1"] == sb["test_top1"] and sa["test_loss"] == sb["test_loss"]
    # what was saved is the EMA of the last checkpoint, not the raw weights it trained
    state = load_checkpoint(resumed_run / f"ckpt-{FINAL:08d}.pt")
    assert all(torch.equal(b[k], state["ema"][k]) for k in b)
    assert any(not torch.equal(b[k], state["model"][k]) for k in b if k.endswith(".weight"))


@pytest.mark.slow
def test_summary_counts_the_parameters_of_an_ema_run(whole_run, resumed_run):
    """The EMA copy has requires_grad off; the count must still be the model's, not 0."""
    expected = sharenet.count_params(sharenet.create_model("resnet20", share="stage", in_chans=1))
    assert expected > 0
    for run in (whole_run, resumed_run):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["weights"] == "ema" and summary["params"] == expected


# -- one Trainer step, against an independent float64 computation --------------------------------

PLAIN = {
    "run.compile": "off",
    "run.channels_last": False,
    "run.precision": "fp32",
    "run.device": "cpu",
    "optim.label_smoothing": 0.0,
}
SGD = {"optim.momentum": 0.0, "optim.weight_decay": 0.0, "optim.schedule": "constant", "optim.warmup_steps": 0}


def _batch(n=32):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def _model():
    torch.manual_seed(0)
    return sharenet.create_model("resnet8", share="stage", num_classes=10, in_chans=1)


def _one_step(overrides: dict, x, y):
    """(config, trainer, loss returned by Trainer.step, parameters before, parameters after) of one step."""
    cfg = apply(Config(), {**PLAIN, **overrides})
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = build_trainer(cfg, model, device=torch.device("cpu"), steps_per_epoch=STEPS_PER_EPOCH)
    loss, _ = trainer.step(x, y, 0)
    return cfg, trainer, float(loss), before, [p.detach().clone() for p in model.parameters()]


def _reference_gradient(x, y):
    """Plain cross-entropy gradient of the same initial model, each distinct parameter once."""
    model = _model()
    F.cross_entropy(model(x), y).backward()
    return [p.grad.double() for p in model.parameters()]


def _norm(tensors) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors))


def _rounding(params) -> float:
    """Bound on the norm of float32 rounding in p - lr * g, elementwise at most one ulp of the result."""
    return EPS32 * _norm([p.abs() for p in params])


def test_label_smoothing_is_the_loss_that_is_optimised():
    """loss = (1 - eps) * NLL + eps * mean over classes of -log p, written out here in float64."""
    x, _ = _batch()
    with torch.no_grad():
        logits = _model()(x).double()  # train-mode BN, as the step sees it
    y = logits.argmin(1)  # the least likely class: NLL is well above the class mean, so smoothing shows
    logp = logits.log_softmax(1)
    nll = float(-logp.gather(1, y[:, None]).mean())
    uniform = float(-logp.mean())
    eps = 0.2
    want = (1 - eps) * nll + eps * uniform
    _, _, got, _, _ = _one_step({"optim.label_smoothing": eps}, x, y)
    _, _, plain, _, _ = _one_step({"optim.label_smoothing": 0.0}, x, y)
    rel = 1e-5  # float32 logits and loss of a 32x10 batch: a few ulp (1.2e-7 each), far below 1e-5
    assert got == pytest.approx(want, rel=rel)
    assert plain == pytest.approx(nll, rel=rel)
    assert abs(want - nll) > 100 * rel * want  # smoothing or not is told apart by a wide margin


def test_grad_clip_scales_the_update_to_the_clip_norm():
    """SGD without momentum or decay: the step is -lr * g * min(1, c / |g|), |g| global over all parameters."""
    x, y = _batch()
    g = _reference_gradient(x, y)
    norm = _norm(g)
    lr, clip = 10.0, 1e-3  # an update far above float32 rounding of the weights (norm ~25)
    assert norm > 10 * clip  # the clip is active
    for c, scale in ((clip, clip / norm), (0.0, 1.0)):
        _, _, _, before, after = _one_step({**SGD, "optim.lr": lr, "optim.grad_clip": c}, x, y)
        delta = [(a.double() - b.double()) for a, b in zip(after, before, strict=True)]
        want = [-lr * scale * t for t in g]
        # float32 rounding of the update (one ulp per element) plus a recomputed float32 gradient
        tol = _rounding(after) + 1e-4 * lr * scale * norm
        assert _norm(delta) == pytest.approx(lr * scale * norm, abs=tol)
        assert _norm([d - w for d, w in zip(delta, want, strict=True)]) <= tol


def test_lr_reference_batch_scales_the_lr_the_optimizer_starts_with():
    """lr is quoted at lr_reference_batch and scales linearly to batch_size; step 0 uses it times warm-up."""
    x, y = _batch()
    ref = {"optim.lr": 0.1, "optim.lr_reference_batch": 256, "optim.batch_size": 64}
    warm = {**SGD, "optim.warmup_steps": 10, "optim.warmup_factor": 0.1}
    cfg, trainer, _, before, after = _one_step({**warm, **ref}, x, y)
    assert base_lr(cfg.optim) == pytest.approx(0.1 * 64 / 256, rel=1e-15)
    assert base_lr(apply(cfg, {"optim.batch_size": 512}).optim) == pytest.approx(0.2, rel=1e-15)
    assert base_lr(apply(cfg, {"optim.lr_reference_batch": 0}).optim) == 0.1  # 0: no scaling
    start = 0.025 * lr_factor(0, cfg.optim, STEPS_PER_EPOCH)
    assert start == pytest.approx(0.0025, rel=1e-12)
    # the step taken used that lr: SGD without momentum moves by exactly lr * |g|
    g = _reference_gradient(x, y)
    delta = [(a.double() - b.double()) for a, b in zip(after, before, strict=True)]
    tol = _rounding(after) + 1e-4 * start * _norm(g)
    assert _norm([d + start * t for d, t in zip(delta, g, strict=True)]) <= tol
    # and the schedule continues from it: step 1's lr, in every group
    for group in trainer.optimizer.param_groups:
        assert group["initial_lr"] == pytest.approx(0.025, rel=1e-12)
        assert group["lr"] == pytest.approx(0.025 * lr_factor(1, cfg.optim, STEPS_PER_EPOCH), rel=1e-12)


def test_build_trainer_starts_at_the_scaled_lr_before_any_step():
    """The optimizer as built, before a step: base_lr times the schedule's factor at step 0, in every group."""
    cfg = apply(
        Config(),
        {
            **PLAIN,
            "optim.lr": 0.1,
            "optim.lr_reference_batch": 256,
            "optim.batch_size": 64,
            "optim.warmup_steps": 10,
            "optim.warmup_factor": 0.1,
            "optim.decay_norm_and_bias": False,
        },
    )
    trainer = build_trainer(cfg, _model(), device=torch.device("cpu"), steps_per_epoch=STEPS_PER_EPOCH)
    groups = trainer.optimizer.param_groups
    assert len(groups) == 2  # decayed and exempt: both must be scaled
    assert [g["lr"] for g in groups] == [pytest.approx(0.0025, rel=1e-12)] * 2
