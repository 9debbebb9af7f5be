"""Run configuration: frozen dataclasses, named recipes, YAML files and `section.key=value` overrides.

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

from ..errors import InvalidArgumentError


class ConfigError(InvalidArgumentError):
    """An unknown config key, an ill-typed value, or a value outside its choices."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet20"  # any registered name or family form (resnet56, wrn28_10, ...)
    share: str = "stage"  # none | stage (ShaResNet) | block (Dai et al.)
    shortcut: str | None = None  # CIFAR basic ResNets: "A" (He et al. default) or "B"
    dropout: float = 0.0  # Wide ResNets only


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion-mnist"  # fashion-mnist | cifar10 | cifar100 | imagefolder
    data_dir: str | None = None  # else $SHARENET_DATA, then system locations
    crop_pad: int = 2  # random-crop padding in pixels; 0 disables (in-memory data sets)
    reflect_pad: bool = False  # reflection padding (Wide-ResNet code) instead of zeros (He et al.)
    flip: bool = True  # random horizontal flip
    download: bool = True  # fetch a missing data set from its official source, checksum-verified
    workers: int = 2  # DataLoader processes, image folders only


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 15
    batch_size: int = 128  # global: summed over all ranks
    lr: float = 0.1  # at `lr_reference_batch`; scaled linearly to `batch_size` when they differ
    lr_reference_batch: int = 0  # 0: lr applies to batch_size as given (no scaling)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True  # False exempts BatchNorm and bias parameters from decay
    schedule: str = "cosine"  # cosine | multistep | constant
    milestones: tuple[int, ...] = ()  # multistep: epochs at which lr is multiplied by gamma
    gamma: float = 0.1
    warmup_steps: int = 0  # optimizer steps before the schedule proper starts
    warmup_factor: float = 0.1  # lr multiplier at step 0 of the warm-up
    warmup_mode: str = "linear"  # linear (ramp to 1) | constant (He et al.'s ResNet-110 trick)
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max global gradient norm; 0 disables
    ema_decay: float = 0.0  # EMA of the weights per step (0 disables); evaluated and saved when on


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 where the hardware has it, else fp32) | fp32 | bf16 | fp16
    channels_last: bool = True  # NHWC activations: faster convolutions on CPU (oneDNN) and GPU
    compile: str = "auto"  # torch.compile: on | off | auto (runs of >= 2,000 steps with a compiler present)
    out: str | None = None  # run directory; default runs/<timestamp>-<model>-<share>
    max_steps: int = 0  # stop after this many optimizer steps (0: run every epoch)
    checkpoint_every: int = 0  # steps between checkpoints (0: at epoch ends only)
    keep_checkpoints: int = 2  # newest complete checkpoints kept on disk
    log_every: int = 50  # steps between metrics.jsonl rows
    eval_batch_size: int = 500
    progress: bool = True  # progress bar (also off when stderr is not a terminal)
    sync_bn: bool = False  # SyncBatchNorm across ranks (distributed runs)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    recipe: str = "fashion-mnist"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "model.share": ("none", "stage", "block"),
    "data.dataset": ("fashion-mnist", "cifar10", "cifar100", "imagefolder"),
    "optim.schedule": ("cosine", "multistep", "constant"),
    "optim.warmup_mode": ("linear", "constant"),
    "run.device": ("auto", "cpu", "cuda"),
    "run.precision": ("auto", "fp32", "bf16", "fp16"),
    "run.compile": ("auto", "on", "off"),
}
SECTIONS = {f.name: f.type for f in fields(Config) if f.name != "recipe"}


def _section_fields(section: str) -> dict[str, dataclasses.Field]:
    cls = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}[section]
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def coerce(key: str, hint, value):
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
        return tuple(coerce(key, args[0], v) for v in items)
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
        raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}")
    value = hint(value)
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    return value


def apply(cfg: Config, overrides: dict[str, object]) -> Config:
    """Config with `{"section.key": value}` applied, each checked against its field's type."""
    sections = {}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r} in {dotted!r}; valid: {', '.join(SECTIONS)}")
        valid = _section_fields(section)
        if key not in valid:
            raise ConfigError(f"unknown config key {dotted!r}; valid {section} keys: {', '.join(valid)}")
        sections.setdefault(section, {})[key] = coerce(dotted, valid[key], value)
    return replace(cfg, **{s: replace(getattr(cfg, s), **kv) for s, kv in sections.items()})


def parse_set(items: list[str]) -> dict[str, str]:
    """`["optim.lr=0.05", ...]` -> {"optim.lr": "0.05"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes section.key=value, got {item!r}")
        out[key.strip()] = value
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
    return replace(apply(Config(), overrides), recipe=tree.get("recipe", Config.recipe))
