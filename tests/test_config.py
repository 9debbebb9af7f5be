"""Configuration: recipes as published, overrides type-checked, unknown keys named."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharenet.engine.config import Config, ConfigError, apply, flatten, from_dict, parse_set, read_yaml
from sharenet.engine.recipes import RECIPES, recipe_config
from sharenet.errors import SharenetError


def test_recipes_carry_the_papers_values():
    wrn = recipe_config("cifar-wrn")
    assert (wrn.optim.lr, wrn.optim.weight_decay, wrn.optim.epochs, wrn.optim.gamma) == (0.1, 5e-4, 200, 0.2)
    assert wrn.optim.milestones == (60, 120, 160) and wrn.optim.nesterov and wrn.data.reflect_pad
    he = recipe_config("cifar-he")
    assert (he.optim.weight_decay, he.optim.epochs, he.optim.milestones, he.optim.nesterov) == (
        1e-4,
        164,
        (82, 123),
        False,
    )
    fb = recipe_config("imagenet-fb")
    assert (fb.optim.batch_size, fb.optim.epochs, fb.optim.milestones, fb.data.dataset) == (
        256,
        90,
        (30, 60),
        "imagefolder",
    )
    assert set(RECIPES) == {"fashion-mnist", "cifar-wrn", "cifar-he", "imagenet-fb"}


def test_overrides_are_typed():
    cfg = apply(Config(), parse_set(["optim.lr=1e-3", "optim.milestones=3,6", "run.out=none", "data.flip=false"]))
    assert cfg.optim.lr == 0.001 and cfg.optim.milestones == (3, 6) and cfg.run.out is None and not cfg.data.flip


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("optim.lrr=1", "valid optim keys: epochs, batch_size, lr"),
        ("training.lr=1", "valid: model, data, optim, run"),
        ("optim.lr=fast", "optim.lr must be float"),
        ("optim.epochs=2.5", "optim.epochs must be int"),
        ("model.share=all", "one of none, stage, block"),
        ("run.precision=fp8", "one of auto, fp32, bf16, fp16"),
        ("lr", "section.key=value"),
    ],
)
def test_bad_overrides_name_the_valid_choices(item, words):
    with pytest.raises(ConfigError) as info:
        apply(Config(), parse_set([item]))
    assert words in str(info.value)


def test_yaml_file_and_round_trip(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("recipe: cifar-he\nmodel: {name: resnet56, share: block}\noptim: {epochs: 3}\n")
    tree = read_yaml(path)
    cfg = apply(recipe_config(tree["recipe"]), flatten(tree, str(path)))
    assert (cfg.model.name, cfg.model.share, cfg.optim.epochs, cfg.optim.weight_decay) == ("resnet56", "block", 3, 1e-4)
    assert from_dict(cfg.to_dict()) == cfg
    (tmp_path / "bad.yaml").write_text("optim: [1, 2]\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        flatten(read_yaml(tmp_path / "bad.yaml"), "bad.yaml")
    (tmp_path / "broken.yaml").write_text("optim: {lr: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(tmp_path / "broken.yaml")


KEYS = ["optim.lr", "optim.epochs", "optim.milestones", "model.share", "run.out", "data.flip", "nope.x", "optim"]


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(KEYS) | st.text(max_size=12), value=st.text(max_size=12))
def test_any_override_either_applies_or_raises_our_error(key, value):
    try:
        cfg = apply(Config(), parse_set([f"{key}={value}"]))
    except SharenetError:
        return
    assert isinstance(cfg, Config)
