"""Published numbers sharenet reproduces: parameter counts (exact integers) and top-1 errors."""

from __future__ import annotations

from dataclasses import dataclass

from .models.plan import Sharing


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


@dataclass(frozen=True)
class LearnedRow:
    """A network under learned sharing (share="templates" or "basis") with its authors' exact count."""

    name: str  # the authors' name: SWRN-L-k-s (s templates), ResNetXX-SsUu (shared rank s, own rank u)
    model: str
    num_classes: int
    sharing: Sharing  # create_model(model, share=sharing.scheme, **sharing.options())
    params: int  # exact count of the authors' code
    source: str  # the code the count comes from
    rounded: str = ""  # the figure as the paper or the code's README prints it, where it gives one

    def create_kwargs(self) -> dict:
        return {"share": self.sharing.scheme, "num_classes": self.num_classes, **self.sharing.options()}


SOFT_SHARING = "Savarese & Maire 2019, lolemacs/soft-sharing models/swrn.py"
BASES_CIFAR = "Kang et al., ssregibility/Net_RL2 models/cifar10/resnet.py"
BASES_ILSVRC = "Kang et al., ssregibility/Net_RL2 models/ilsvrc/resnet.py"


def _templates(s: int) -> Sharing:
    return Sharing("templates", templates=s)


def _basis(shared: int, unique: int, kind: str) -> Sharing:
    return Sharing("basis", shared_rank=shared, unique_rank=unique, basis=kind)


# rounded: as Net_RL2's README prints them (ResNet34 single: an earlier version; S32U1 double: also the paper).
LEARNED_PARAMS = (
    LearnedRow("SWRN-28-10-2", "wrn28_10", 10, _templates(2), 17_125_630, SOFT_SHARING),
    LearnedRow("SWRN-28-10-6", "wrn28_10", 10, _templates(6), 36_479_302, SOFT_SHARING),  # WRN-28-10 + 108
    LearnedRow("ResNet32-S8U1", "resnet32", 10, _basis(8, 1, "single"), 150_666, BASES_CIFAR, "0.15M"),
    LearnedRow("ResNet32-S16U1 double", "resnet32", 10, _basis(16, 1, "double"), 245_642, BASES_CIFAR, "0.24M"),
    LearnedRow("ResNet56-S8U1", "resnet56", 10, _basis(8, 1, "single"), 201_850, BASES_CIFAR, "0.20M"),
    LearnedRow("ResNet56-S16U1", "resnet56", 10, _basis(16, 1, "single"), 270_842, BASES_CIFAR, "0.22M"),
    LearnedRow("ResNet56-S16U1 double", "resnet56", 10, _basis(16, 1, "double"), 319_226, BASES_CIFAR, "0.31M"),
    LearnedRow("ResNet34-S32U1", "resnet34", 1000, _basis(32, 1, "single"), 8_196_056, BASES_ILSVRC, "8.20M"),
    LearnedRow("ResNet34-S48U1", "resnet34", 1000, _basis(48, 1, "single"), 9_436_888, BASES_ILSVRC, "9.44M"),
    LearnedRow("ResNet34-S32U1 double", "resnet34", 1000, _basis(32, 1, "double"), 9_762_776, BASES_ILSVRC, "9.76M"),
    LearnedRow("ResNet34-S48U1 double", "resnet34", 1000, _basis(48, 1, "double"), 11_786_968, BASES_ILSVRC, "11.79M"),
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
