"""Named training recipes: the papers' published hyper-parameters, as data.

Each recipe states only what it changes from the dataclass defaults (`config.py`), which are
the default recipe. The papers' values: Zagoruyko & Komodakis' Wide-ResNet code (used for
ShaResNet's CIFAR rows), He et al. 2016 ("Deep Residual Learning"), and fb.resnet.torch for
ImageNet.
"""

from __future__ import annotations

from .config import Config, ConfigError, apply

DEFAULT_RECIPE = Config.recipe  # what `sharenet train` runs without --recipe: Config()

# The papers' recipes share these departures from the default: lr 0.1, no warm-up, no label
# smoothing, no flip TTA in the reported accuracy.
PAPER = {"optim.lr": 0.1, "optim.warmup_steps": 0, "optim.label_smoothing": 0.0, "run.tta": False}

RECIPES: dict[str, dict[str, object]] = {
    # sharenet's default (resnet20 share=stage on Fashion-MNIST): the dataclass defaults themselves.
    DEFAULT_RECIPE: {},
    # the earlier 15-epoch default, which the 3-epoch study (docs/study-3-epochs.md) used
    "fashion-mnist-15": {
        "data.crop_pad": 2,
        "optim.epochs": 15,
        "optim.lr": 0.1,
        "optim.label_smoothing": 0.0,
        "run.tta": False,
    },
    # sharenet compress: a student started from its teacher's fitted weights and distilled, 2 epochs;
    # lr chosen on data.val_split among 0.01-0.2 (docs/compress-lr-choice.md); the fit is of the convs'
    # outputs on calibration images (the runs of docs/compress.md predate it and fitted weights)
    "compress": {
        "distil.fit_on": "data",
        "optim.epochs": 2,
        "optim.lr": 0.02,
        "optim.warmup_steps": 50,
    },
    # Wide-ResNet code: Nesterov, wd 5e-4, lr x0.2 at 60/120/160 of 200 epochs, reflect-pad crop + flip
    "cifar-wrn": {
        **PAPER,
        "data.dataset": "cifar10",
        "data.crop_pad": 4,
        "data.reflect_pad": True,
        "optim.epochs": 200,
        "optim.schedule": "multistep",
        "optim.milestones": (60, 120, 160),
        "optim.gamma": 0.2,
    },
    # He et al. 2016: plain momentum, wd 1e-4, lr /10 at 82 and 123 of 164 epochs, zero-pad crop + flip
    # (ResNet-110: add --set optim.warmup_steps=400 --set optim.warmup_mode=constant)
    "cifar-he": {
        **PAPER,
        "data.dataset": "cifar10",
        "data.crop_pad": 4,
        "optim.epochs": 164,
        "optim.nesterov": False,
        "optim.weight_decay": 1e-4,
        "optim.schedule": "multistep",
        "optim.milestones": (82, 123),
    },
    # fb.resnet.torch: Nesterov, wd 1e-4, batch 256, lr /10 every 30 of 90 epochs; RRC 224 + flip + jitter + PCA
    "imagenet-fb": {
        **PAPER,
        "data.dataset": "imagefolder",
        "optim.epochs": 90,
        "optim.batch_size": 256,
        "optim.weight_decay": 1e-4,
        "optim.schedule": "multistep",
        "optim.milestones": (30, 60),
        "run.eval_batch_size": 250,
    },
}


def recipe_config(name: str | None = None) -> Config:
    """The named recipe's Config; None: the default recipe."""
    name = name or DEFAULT_RECIPE
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)}")
    return apply(Config(recipe=name), RECIPES[name])
