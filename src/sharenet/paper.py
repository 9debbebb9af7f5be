"""Published numbers sharenet reproduces: the ShaResNet README's parameter table (exact integers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamRow:
    model: str
    num_classes: int
    baseline: int  # parameters of the unshared network
    shared: int  # parameters under ShaResNet (share="stage")
    readme: str  # the figure as the ShaResNet README rounds it


SHARESNET_PARAMS = (
    ParamRow("preact_resnet164", 10, 1_703_258, 929_114, "1.70M -> 0.93M (45%)"),
    ParamRow("wrn40_4", 10, 8_949_210, 5_852_634, "8.95M -> 5.85M (35%)"),
    ParamRow("wrn28_10", 100, 36_536_884, 26_860_084, "36.54M -> 26.86M (26%)"),
    ParamRow("resnet34", 1000, 21_797_672, 13_613_864, "21.8M -> 13.6M (37%)"),
    ParamRow("resnet50", 1000, 25_557_032, 20_469_800, "25.6M -> 20.5M (20%)"),
    ParamRow("resnet101", 1000, 44_549_160, 29_434_920, "44.5M -> 29.4M (33%)"),
    ParamRow("resnet152", 1000, 60_192_808, 36_821_032, "60.2M -> 36.8M (39%)"),
)


# Top-1 test error (%) the papers report: (dataset, model, share) -> error. ShaResNet, single crop.
PAPER_TOP1_ERROR = {
    ("cifar10", "preact_resnet164", "stage"): 6.2,
    ("cifar10", "preact_resnet164", "none"): 5.46,
    ("cifar10", "wrn40_4", "stage"): 5.1,
    ("cifar10", "wrn40_4", "none"): 4.17,
    ("cifar100", "wrn28_10", "stage"): 20.2,
    ("cifar100", "wrn28_10", "none"): 20.0,
    ("imagefolder", "resnet34", "stage"): 28.25,
    ("imagefolder", "resnet50", "stage"): 24.61,
    ("imagefolder", "resnet101", "stage"): 22.91,
    ("imagefolder", "resnet152", "stage"): 22.23,
}
