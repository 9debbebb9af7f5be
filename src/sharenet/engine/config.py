"""Run configuration: frozen dataclasses, named recipes, YAML files and `section.key=value` overrides.

Each key is declared once, as a dataclass field made by `key()`: default, why, choices, bounds,
what resuming a checkpoint requires of it, and its `sharenet train` flag. Coercion, range checks
(validate.py), resume checks, the command-line flags and the README's key table
(`sharenet train --list-keys`) all read `KEYS`, so none of them can drift from the declaration.
Everything is validated before any work starts: unknown sections or keys and ill-typed values
raise ConfigError naming the valid choices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from ..data import DATASETS
from ..errors import InvalidArgumentError
from ..models.plan import BASIS_KINDS, OPTIONS, SCHEMES


class ConfigError(InvalidArgumentError):
    """An unknown config key, an ill-typed value, or a value outside its choices."""


@dataclass(frozen=True)
class Key:
    """Everything known about one config key; `KEYS` fills in name, hint, type and default."""

    why: str  # what the key does, and why one would change it: help text and README
    choices: tuple = ()  # the allowed values, when they are a closed set
    low: float | None = None  # lowest allowed value
    below: float | None = None  # values must stay below this
    high: float | None = None  # highest allowed value (an inclusive upper bound)
    above: float | None = None  # values must stay above this (a strict lower bound, instead of low)
    need: str | None = None  # what a value under `low` lacks, for the error message
    resume: bool = False  # a checkpoint made with another value cannot be continued
    local: bool = False  # where or how to run, not what is trained: a change on resume is not reported
    flag: str | bool | None = None  # `sharenet train` option; True: --name (--no-name for a bool that is on)
    name: str = ""  # section.key
    hint: typing.Any = None  # the resolved type, for coercion
    type: str = ""  # the annotation as written, for people
    default: typing.Any = None
    absent: typing.Any = None  # what a run saved before the key existed used (the default unless set)

    @property
    def bounds(self) -> str:
        """The allowed range as error messages and the README write it: "[0, 1)", ">= 1" or ""."""
        if self.below is not None:
            return f"[{self.low:g}, {self.below:g})"
        if self.high is not None:
            return f"[{self.low:g}, {self.high:g}]"
        if self.above is not None:
            return f"> {self.above:g}"
        return "" if self.low is None else f">= {self.low:g}"


_SAME = object()


def key(
    default,
    why: str,
    *,
    choices: tuple = (),
    low: float | None = None,
    below: float | None = None,
    high: float | None = None,
    above: float | None = None,
    need: str | None = None,
    resume: bool = False,
    local: bool = False,
    flag: str | bool | None = None,
    absent: typing.Any = _SAME,
) -> typing.Any:
    """A dataclass field declaring one config key: its default plus `Key` metadata (`flag=True`: derived name).

    `absent`: the value a saved config that predates the key ran with, where the default has
    since changed (the default recipe's values are the defaults; older runs did not have them)."""
    absent = default if absent is _SAME else absent
    meta = Key(why, tuple(choices), low, below, high, above, need, resume, local, flag, absent=absent)
    return field(default=default, metadata={"key": meta})


# One declaration per key; adding a key is adding its line here. The defaults are sharenet's default
# recipe (5 epochs of resnet20 share=stage on Fashion-MNIST): `Config()` is what `sharenet train`
# runs with no flags, and each named recipe (recipes.py) states only what it changes. Keys with
# resume=True shape a checkpoint's state (model, data, batch, EMA, parameter groups); the others may
# change when a run is continued. Older checkpoints and config.json files lack newer keys: a key
# whose default differs from what runs did before it existed says so with `absent=`.
# fmt: off
@dataclass(frozen=True)
class ModelConfig:
    name: str = key("resnet20", "registered name or family form (resnet56, wrn28_10, ...)", resume=True, flag="--model")
    share: str = key("stage", "stage: one 3x3 kernel per stage (ShaResNet); block: one per block (Dai et al.); "
                     "templates: per-conv mixes of a bank per stage (Savarese & Maire); basis: shared filter bases "
                     "(Kang et al.); ring: every stage conv reads one vector of any size (RPG, Wang et al.); "
                     "stage_all: one kernel per stage for every C->C 3x3 conv",
                     choices=SCHEMES, resume=True, flag=True)
    shortcut: str | None = key(None, "CIFAR basic ResNets: A (zero-pad, He et al.; none means A) or B (1x1 conv)",
                               resume=True)
    dropout: float = key(0.0, "Wide ResNets only", low=0.0, below=1, resume=True)
    width: int | None = key(None, "channels of the first stage, the others in proportion; none: the family's (16; "
                            "ImageNet 64; WRN 16k), or what model.params chooses", low=1, resume=True)
    params: int | None = key(None, "a parameter budget: share=ring gets the ring size that makes the count exactly "
                             "this, every other scheme the widest network within it (the choice is printed and "
                             "recorded in config.json)", low=1, resume=True, flag=True)
    templates: int = key(2, "share=templates: kernels in each stage's bank (Savarese & Maire's s)", low=1, resume=True)
    shared_rank: int = key(16, "share=basis: first-stage rank of the shared basis, scaled with the stage width "
                           "(Kang et al.'s S)", low=1, resume=True)
    unique_rank: int = key(1, "share=basis: first-stage rank of each conv's own basis, scaled alike (their U)", low=0,
                           resume=True)
    basis: str = key("single", "share=basis: one shared basis per stage, or one per conv position (double)",
                     choices=BASIS_KINDS, resume=True)
    ring_size: int | None = key(None, "share=ring: entries of the parameter ring; none: the largest conv's kernel "
                                "(RPG's default), or what model.params chooses", low=1, resume=True)
    ring_seed: int = key(0, "share=ring: seeds the map of ring entries and signs (a pure function of it, recorded "
                         "in weight files)", low=0, resume=True)
    relax_rank: int | None = key(0, "share=stage, block, stage_all, ring: relaxed sharing, a low-rank correction "
                                 "of this rank on every conv that reads a shared kernel (0: hard sharing); none: "
                                 "the largest rank within model.params", low=0, resume=True)
    zero_init_residual: bool = key(False, "start each block as the identity: zero the scale of the BatchNorm before "
                                   "its residual add (Goyal et al.); post-activation blocks (CIFAR, ImageNet) only")

    def create_kwargs(self) -> dict:
        """create_model's keywords: the architecture options and those of the chosen scheme only."""
        options = {k: getattr(self, k) for k in OPTIONS.get(self.share, ())}
        if "relax_rank" in options and options["relax_rank"] is None:
            options["relax_rank"] = "auto"
        sizes = {"width": self.width, "params": self.params}
        return {"share": self.share, "shortcut": self.shortcut, "dropout": self.dropout, **sizes, **options}

    def resolved(self, model_config: dict) -> ModelConfig:
        """This config with what a budget chose (width, ring size) written in: it rebuilds the model as is."""
        if self.params is None:
            return self
        chosen = {"width": model_config["width"]}
        if self.share == "ring":
            chosen["ring_size"] = model_config["ring_size"]
        if self.relax_rank is None:
            chosen["relax_rank"] = model_config.get("relax_rank", 0)
        return replace(self, **chosen)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = key("fashion-mnist", "imagefolder: data_dir holds train/<class>/ and val/<class>/", choices=DATASETS,
                       resume=True, flag=True)
    data_dir: str | None = key(None, "data root; none: $SHARENET_DATA, then system locations", local=True, flag=True)
    crop_pad: int = key(0, "random-crop padding in pixels; 0 disables (in-memory data sets)", low=0)
    reflect_pad: bool = key(False, "reflection padding (Wide-ResNet code) instead of zeros (He et al.)")
    flip: bool = key(True, "random horizontal flip")
    download: bool = key(True, "fetch a missing data set from its official source, checksum-verified")
    workers: int = key(2, "DataLoader processes, image folders only", low=0)
    bad_images: str = key("error", "image folders: an image that cannot be decoded stops the run naming it (error), or "
                          "is skipped and counted (skip: bad_images in metrics.jsonl and summary.json)",
                          choices=("error", "skip"))
    val_split: int = key(0, "hold out the last N training images as a validation set, evaluated every epoch (val_* "
                         "in metrics.jsonl): tune on it, never on the test set; 0: train on all", low=0, resume=True)


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = key(5, "passes over the training set", low=1, need="at least one epoch", flag=True)
    batch_size: int = key(128, "global: summed over all ranks", low=1, need="a positive batch", resume=True, flag=True)
    lr: float = key(0.2, "at lr_reference_batch; scaled linearly to batch_size when they differ", low=0, flag=True,
                    need="a non-negative learning rate")
    lr_reference_batch: int = key(0, "0: lr applies to batch_size as given (no scaling)", low=0)
    momentum: float = key(0.9, "SGD momentum", low=0, below=1, need="non-negative momentum")
    nesterov: bool = key(True, "Nesterov momentum (Wide-ResNet code, fb.resnet.torch); He et al.: plain momentum")
    weight_decay: float = key(5e-4, "L2 penalty, applied by SGD", low=0, need="non-negative weight decay")
    decay_norm_and_bias: bool = key(True, "false exempts BatchNorm and bias parameters from decay", resume=True)
    schedule: str = key("cosine", "lr after warm-up: cosine to 0, x gamma at milestones, or constant",
                        choices=("cosine", "multistep", "constant"))
    milestones: tuple[int, ...] = key((), "multistep: epochs at which lr is multiplied by gamma")
    gamma: float = key(0.1, "multistep: lr factor at each milestone")
    warmup_steps: int = key(200, "optimizer steps before the schedule proper starts", low=0)
    warmup_factor: float = key(0.1, "lr multiplier at step 0 of the warm-up")
    warmup_mode: str = key("linear", "linear: ramp to 1; constant: hold (He et al.'s ResNet-110 trick)",
                           choices=("linear", "constant"))
    label_smoothing: float = key(0.1, "cross-entropy label smoothing", low=0, below=1, need="in [0, 1)")
    grad_clip: float = key(0.0, "max global gradient norm; 0 disables", low=0, need="0 (off) or a positive norm")
    ortho_penalty: float = key(0.0, "share=basis: weight of the bases' orthogonality penalty (Kang et al.'s lambda_R: "
                               "10); 0: off", low=0, need="0 (off) or a positive weight")
    ortho_own: bool = key(True, "the penalty also keeps each conv's own basis orthonormal (Kang et al.'s CIFAR code; "
                          "their ImageNet code: false)")
    ema_decay: float = key(0.0, "weight EMA per step, each shared kernel once (0: off); evaluated and saved when on",
                           low=0, below=1, need="0 (off) or in (0, 1)", resume=True)
    ema_warmup: bool = key(True, "the EMA decay warms up as timm's ModelEmaV3 (min(decay, 1 - (1 + step)^-2/3)): a "
                           "short run's average forgets the initial weights")


@dataclass(frozen=True)
class RunConfig:
    seed: int = key(0, "seeds weights, data order and augmentation", flag=True)
    device: str = key("auto", "auto: cuda when available, else cpu", choices=("auto", "cpu", "cuda"), local=True,
                      flag=True)
    precision: str = key("auto", "auto: bf16 where the hardware has it natively, else fp32; fp16 needs CUDA",
                         choices=("auto", "fp32", "bf16", "fp16"))
    channels_last: bool = key(True, "NHWC activations: faster convolutions on CPU (oneDNN) and GPU")
    compile: str = key("auto", "torch.compile; auto: on for runs of >= 2,000 steps with a compiler present",
                       choices=("auto", "on", "off"))
    out: str | None = key(None, "run directory; default runs/<timestamp>-<model>-<share>", local=True, flag=True)
    max_steps: int = key(0, "stop after this many optimizer steps, then evaluate and save (0: run every epoch)",
                         low=0, need="0 (no limit) or a positive count", flag=True)
    checkpoint_every: int = key(0, "steps between checkpoints, which are also saved at epoch ends (0: only there)",
                                low=0, need="0 (epoch ends only) or a positive count", flag=True)
    checkpoint_minutes: float = key(10.0, "also checkpoint when this many minutes passed since the last one, so a "
                                    "hard kill loses at most that much (0: off)", low=0,
                                    need="0 (off) or a positive number of minutes")
    keep_checkpoints: int = key(2, "newest complete checkpoints kept on disk", low=1, need="at least one")
    log_every: int = key(50, "steps between metrics.jsonl rows", low=1)
    tensorboard: bool = key(False, "also write metrics.jsonl's rows and summary.json as TensorBoard scalars in "
                            "RUN/tb/ (rank 0; pip install 'sharenet[tensorboard]')", local=True)
    eval_batch_size: int = key(500, "batch size for test-set evaluation", low=1, need="a positive batch")
    tta: bool = key(True, "the final evaluation also averages each image's logits with its horizontal flip's "
                    "(summary.json: test_top1_tta beside the plain test_top1; twice the inference cost)", absent=False)
    progress: bool = key(True, "progress bar (also off when stderr is not a terminal)", local=True, flag=True)
    sync_bn: bool = key(False, "BatchNorm statistics over the global batch of all ranks (distributed runs)")
    deterministic: bool = key(False, "deterministic algorithms only (torch.use_deterministic_algorithms; cuBLAS "
                              "workspace :4096:8): a CUDA run and its resume repeat bit for bit, somewhat slower; "
                              "CPU runs are deterministic without it", local=True)


@dataclass(frozen=True)
class DistilConfig:
    teacher: str | None = key(None, "knowledge distillation (Hinton et al.): a trained network whose temperature-"
                              "softened outputs the student also matches; a run directory, a sharenet weight file or "
                              "any checkpoint sharenet import reads (then of model.name's architecture); none: labels "
                              "only. A resume checks it is the same file (SHA-256)")
    fit: bool = key(False, "start the student from the teacher's weights, each shared tensor fitted to the kernels it "
                    "replaces (mean, SVD, least squares), then re-estimate BatchNorm; sharenet compress sets it. A "
                    "student of another width or depth cannot be fitted: it starts from scratch, as the run says",
                    resume=True)
    fit_on: str = key("weights", "distil.fit: fit each conv's outputs on calibration images (data, what sharenet "
                      "compress does: the shared kernel and corrections of least output error, SVD-LLM's "
                      "whitening) or its weights (weights: means and plain SVDs), under every scheme",
                      choices=("data", "weights"), resume=True)
    calibration_batches: int = key(20, "distil.fit_on=data: training batches whose conv inputs weigh the fit",
                                   low=1, resume=True)
    alpha: float = key(0.9, "weight of the distillation term: loss = (1 - alpha) CE + alpha T^2 KL(teacher || "
                       "student); 0.9 with T = 4 is the knowledge-distillation setting of Tian et al.'s CRD "
                       "benchmark", low=0, high=1)
    temperature: float = key(4.0, "T, the softmax temperature of both networks' outputs in the KL term", above=0,
                             need="a positive temperature")
    bn_batches: int = key(100, "distil.fit: training batches whose statistics replace the fitted student's BatchNorm "
                          "running statistics before training (0: keep the teacher's)", low=0, resume=True)
# fmt: on


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    distil: DistilConfig = field(default_factory=DistilConfig)
    recipe: str = "fashion-mnist"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {name: hint for name, hint in typing.get_type_hints(Config).items() if name != "recipe"}


def _declared_keys() -> dict[str, Key]:
    out = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if "key" not in f.metadata:
                raise TypeError(f"{cls.__name__}.{f.name} must be declared with key(default, why, ...)")
            k, name = f.metadata["key"], f"{section}.{f.name}"
            if (k.below is not None or k.high is not None) and k.low is None:
                raise TypeError(f"{name}: an upper bound (below=, high=) needs a lower one (low=)")
            flag = k.flag
            if flag is True:  # derived: --batch-size, or --no-progress for a bool that defaults to True
                flag = "--" + ("no-" if f.default is True else "") + f.name.replace("_", "-")
            out[name] = replace(k, name=name, hint=hints[f.name], type=str(f.type), default=f.default, flag=flag)
    return out


KEYS: dict[str, Key] = _declared_keys()  # "section.key" -> Key, in declaration order


def _as_type(dotted: str, hint, value):
    """`value` as type `hint` (from YAML or a command-line string), or ConfigError."""
    if isinstance(value, str) and hint is not str:
        with contextlib.suppress(yaml.YAMLError):
            value = yaml.safe_load(value) if value.strip() else value
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:
        items = value if isinstance(value, (list, tuple)) else [] if value in ("", None) else [value]
        if isinstance(value, str):
            items = [v for v in value.split(",") if v.strip()]
        return tuple(_as_type(dotted, args[0], v) for v in items)
    if hint in (int, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = hint(value)  # YAML 1.1 reads 1e-3 as a string
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, (str, int, float)) and not isinstance(value, bool),
    }[hint]
    if not ok:
        raise ConfigError(f"{dotted} must be {hint.__name__}, got {value!r}")
    return hint(value)


def coerce(dotted: str, value):
    """`value` for key `dotted`, typed and checked against the key's choices, or ConfigError."""
    k = KEYS[dotted]
    value = _as_type(dotted, k.hint, value)
    if k.choices and value is not None and value not in k.choices:
        raise ConfigError(f"{dotted} must be one of {', '.join(k.choices)}, got {value!r}")
    return value


def apply(cfg: Config, overrides: dict[str, object]) -> Config:
    """Config with `{"section.key": value}` applied, each checked against its key's type and choices."""
    sections = {}
    for dotted, value in overrides.items():
        section, _, name = dotted.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r} in {dotted!r}; valid: {', '.join(SECTIONS)}")
        if dotted not in KEYS:
            valid = ", ".join(f.name for f in fields(SECTIONS[section]))
            raise ConfigError(f"unknown config key {dotted!r}; valid {section} keys: {valid}")
        sections.setdefault(section, {})[name] = coerce(dotted, value)
    return replace(cfg, **{s: replace(getattr(cfg, s), **kv) for s, kv in sections.items()})


def parse_set(items: list[str]) -> dict[str, str]:
    """`["optim.lr=0.05", ...]` -> {"optim.lr": "0.05"}."""
    out = {}
    for item in items:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted.strip():
            raise ConfigError(f"--set takes section.key=value, got {item!r}")
        out[dotted.strip()] = value
    return out


METADATA_KEYS = ("recipe", "paper", "expected", "command", "notes")  # experiment files' non-config keys


def flatten(tree: dict, where: str) -> dict[str, object]:
    """A YAML config {section: {key: value}} as {"section.key": value}."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{where} must hold a mapping of sections, got {type(tree).__name__}")
    out = {}
    for section, values in tree.items():
        if section in METADATA_KEYS:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section {section!r} must be a mapping of keys, got {values!r}")
        out.update({f"{section}.{k}": v for k, v in values.items()})
    return out


def stored_value(tree: dict, dotted: str):
    """One key of a saved config tree (config.json, a checkpoint's config), in JSON's form.

    A tree written before the key existed holds no value for it: the run used the key's default,
    so that is what it reads as. Sequences come back as lists, the form JSON stores them in, so a
    stored value and the same value of a live Config compare equal.
    """
    section, name = dotted.split(".")
    value = tree.get(section, {}).get(name, KEYS[dotted].absent)
    return list(value) if isinstance(value, tuple) else value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return tree


def from_dict(tree: dict) -> Config:
    """A Config from config.json / to_dict() output; keys that are not config fields are ignored."""
    overrides = {
        f"{section}.{k}": v
        for section in SECTIONS
        if isinstance(tree.get(section), dict)
        for k, v in tree[section].items()
    }
    missing = {dotted: k.absent for dotted, k in KEYS.items() if dotted not in overrides and k.absent != k.default}
    return replace(apply(Config(), {**missing, **overrides}), recipe=tree.get("recipe", Config.recipe))
