"""Assertions shared by the test modules."""

from sharenet.models import Conv3x3, share_groups


def assert_tied(model):
    """Every conv in a plan group applies its owner's very tensor; returns the group count."""
    groups = share_groups(model)
    for key, convs in groups.items():
        owner = model.get_submodule(key.removesuffix(".weight")).weight
        for conv in convs:
            module = model.get_submodule(conv)
            assert isinstance(module, Conv3x3)
            assert module.kernel() is owner, f"{conv} no longer applies {key}"
    return len(groups)
