"""The sharing plan: exact counts of the learned schemes, the plan as the one description the
modules, accounting, recognition, unshare and fitting agree with, and the learned schemes' recipe parts."""

import pytest
import torch

import sharenet
from sharenet.engine.config import OptimConfig
from sharenet.engine.optim import param_groups
from sharenet.errors import InvalidArgumentError, PlanMismatchError
from sharenet.models import RULES, SCHEMES, basis_penalty, create_model, make_plan
from sharenet.models.plan import Sharing, recognise
from sharenet.weights.transfer import fuse, unshare, unshared_state_dict

from .helpers import assert_tied

# Published counts of the learned schemes (Savarese & Maire 2019; Kang et al.), and the reference codes' other models.
LEARNED = [
    ("wrn28_10", 10, {"share": "templates", "templates": 2}, 17_125_630),  # Savarese & Maire, SWRN-28-10-2
    ("wrn28_10", 10, {"share": "templates", "templates": 6}, 36_479_194 + 108),  # SWRN-28-10-6: no saving
    ("resnet32", 10, {"share": "basis", "shared_rank": 8, "unique_rank": 1}, 150_666),  # Kang et al., S8U1
    ("resnet32", 10, {"share": "basis", "shared_rank": 16, "unique_rank": 1, "basis": "double"}, 245_642),
    ("resnet56", 10, {"share": "basis", "shared_rank": 8, "unique_rank": 1}, 201_850),
    ("resnet56", 10, {"share": "basis", "shared_rank": 16, "unique_rank": 1}, 270_842),
    ("resnet56", 10, {"share": "basis", "shared_rank": 16, "unique_rank": 1, "basis": "double"}, 319_226),
    ("resnet34", 1000, {"share": "basis", "shared_rank": 32, "unique_rank": 1, "basis": "double"}, 9_762_776),
    ("resnet34", 1000, {"share": "basis", "shared_rank": 32, "unique_rank": 1}, 8_196_056),
    ("resnet34", 1000, {"share": "basis", "shared_rank": 48, "unique_rank": 1}, 9_436_888),
    ("resnet34", 1000, {"share": "basis", "shared_rank": 48, "unique_rank": 1, "basis": "double"}, 11_786_968),
]
# sharenet's own extension of templates to the other families (the 3x3 convs of blocks 2..n of each
# stage) and of bases to ResNet-18, as the plan counts them (test_plan_counts_... checks the plan's sums).
OURS = [
    ("resnet20", {"share": "templates"}, 172_978),  # 269,722 - 2 x (2,304 + 9,216 + 36,864) + 24 mixes
    ("preact_resnet164", {"share": "templates"}, 977_600),
    ("resnet50", {"share": "templates"}, 23_640_128),
    ("wrn40_4", {"share": "templates", "templates": 3}, 3_530_292),
    ("resnet18", {"share": "basis"}, 6_489_892),
]


@pytest.mark.parametrize(("name", "classes", "options", "count"), LEARNED)
def test_learned_schemes_have_the_reference_codes_counts(name, classes, options, count):
    with torch.device("meta"):
        model = create_model(name, num_classes=classes, **options)
    assert sharenet.count_params(model) == count


@pytest.mark.parametrize(("name", "options", "count"), OURS)
def test_counts_of_the_extension_to_other_families(name, options, count):
    with torch.device("meta"):
        assert sharenet.count_params(create_model(name, **options)) == count


def _schemes():
    for name in ("resnet20", "resnet18", "wrn16_2", "preact_resnet20", "resnet50"):
        kind = create_model(name).arch.kind
        for share in SCHEMES:
            if share == "none" or share in RULES[kind]:
                yield name, share


@pytest.mark.parametrize(("name", "share"), list(_schemes()))
def test_plan_counts_and_recognises_without_modules(name, share):
    """The plan's own tensors account for every parameter the scheme changes, and a state dict's
    tensor shapes identify the plan (options included) with no model built for the guess."""
    model = create_model(name, share=share)
    plain = create_model(name)
    assert sharenet.count_params(model) - model.plan.params() == sharenet.count_params(plain) - plain.plan.params()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: shapes[k] for k in model.plan.tensors()} == model.plan.tensors()
    assert recognise(model.arch, shapes) == model.plan.sharing
    assert_tied(model)


def test_recognition_reads_options_off_the_shapes():
    for options in ({"templates": 3}, {"shared_rank": 4, "unique_rank": 0, "basis": "double"}):
        share = "templates" if "templates" in options else "basis"
        model = create_model("resnet20", share=share, **options)
        assert model.sharing_of(model.state_dict()) == Sharing(share, **options)


def test_plan_is_data_built_without_modules():
    arch = create_model("resnet32").arch
    plan = make_plan(arch, Sharing("basis", shared_rank=8, unique_rank=1))
    groups = plan.groups()
    assert list(groups) == ["stages.0.basis.weight", "stages.1.basis.weight", "stages.2.basis.weight"]
    assert all(len(convs) == 8 for convs in groups.values())  # conv1 and conv2 of blocks 2..5
    ranks = [plan.owned()[i].out_ch for i in range(3)]
    assert ranks == [8, 16, 32]  # x stage width / first width
    assert {s.own_rank for s in plan.slots if s.source == "basis"} == {1, 2, 4}
    double = make_plan(arch, Sharing("basis", basis="double")).groups()
    assert [k.split(".")[2] for k in double] == ["basis1", "basis2"] * 3


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: create_model("wrn16_4", share="basis"), "basic blocks"),
        (lambda: create_model("resnet50", share="basis"), "basic blocks"),
        (lambda: create_model("resnet20", share="stage", templates=2), "templates applies to share='templates'"),
        (lambda: create_model("resnet20", share="templates", shared_rank=2), "share='basis'"),
        (lambda: create_model("resnet20", share="templates", templates=0), "templates must be an integer >= 1"),
        (lambda: create_model("resnet20", share="basis", basis="triple"), "single, double"),
        (lambda: create_model("resnet20", share="basis", unique_rank=-1), "unique_rank"),
        (lambda: create_model("resnet8", share="templates"), "shares no conv"),  # one block per stage
    ],
)
def test_bad_options_explain_themselves(call, words):
    with pytest.raises(InvalidArgumentError, match=words):
        call()


def _random_stats(model):
    """BatchNorm statistics and affine parameters away from their initial values, as after training."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model


@pytest.mark.parametrize(
    "options",
    [
        {"share": "templates"},
        {"share": "templates", "templates": 1},
        {"share": "basis"},
        {"share": "basis", "basis": "double", "unique_rank": 0},
    ],
    ids=lambda o: "-".join(str(v) for v in o.values()),
)
@torch.no_grad()
def test_unshare_gives_the_same_outputs(options):
    """Template mixes expand exactly; a filter-basis conv folds into one kernel whose bias the next
    BatchNorm absorbs (eval mode). Compared in float64, where only rounding differs."""
    model = _random_stats(create_model("resnet20", **options)).double().eval()
    plain = unshare(model).eval()
    assert plain.share == "none" and sharenet.count_params(plain) == 269_722
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    expected = model(x)
    torch.testing.assert_close(plain(x), expected, rtol=0, atol=1e-9 * float(expected.abs().max()))


def test_basis_without_a_following_norm_has_no_plain_equivalent():
    model = create_model("resnet20", share="basis")
    slot = next(s for s in model.plan.slots if s.source == "basis")
    object.__setattr__(slot, "norm", None)  # a plan whose basis conv feeds the residual sum directly
    with pytest.raises(InvalidArgumentError, match="no plain equivalent"):
        unshared_state_dict(model)


@torch.no_grad()
def test_templates_fit_exactly_when_the_bank_is_as_large_as_its_users():
    """s >= the number of convs in the stage: the SVD fit reproduces every unshared kernel."""
    plain = _random_stats(create_model("wrn16_2")).double().eval()  # blocks 2..n: 2 convs per stage
    model = create_model("wrn16_2", share="templates", templates=2).double().eval()
    report = fuse(model, unshared_state_dict(plain))
    assert max(e for errors in report.values() for e in errors.values()) < 1e-9
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    expected = plain(x)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-9 * float(expected.abs().max()))
    assert_tied(model)


@torch.no_grad()
def test_smaller_banks_and_bases_fit_by_least_squares_and_report_each_conv():
    plain = create_model("resnet20")
    for options in ({"share": "templates", "templates": 1}, {"share": "basis", "shared_rank": 4}):
        model = create_model("resnet20", **options)
        report = sharenet.load_weights(model, plain.state_dict(), fuse_kernels=True).fused
        assert list(report) == list(model.plan.groups())
        for key, errors in report.items():
            assert list(errors) == model.plan.groups()[key]
            assert all(0 < e < 1 for e in errors.values())  # a lossy fit, better than nothing
        assert_tied(model)
    # the best rank-1 fit beats the mean of the kernels (the hard-sharing fit of the same convs) in
    # total squared error: the mean is one rank-1 candidate (every coefficient 1)
    one = create_model("resnet20", share="templates", templates=1)
    errors = sharenet.load_weights(one, plain.state_dict(), fuse_kernels=True).fused["stages.1.bank.templates"]
    kernels = [plain.get_parameter(f"{c}.weight") for c in errors]
    mean = torch.stack(kernels).mean(0)
    fitted = sum((err * w.norm()) ** 2 for err, w in zip(errors.values(), kernels, strict=True))
    assert fitted < sum((mean - w).norm() ** 2 for w in kernels)


@torch.no_grad()
def test_a_basis_that_spans_the_kernels_fits_them_exactly_beside_own_filters():
    """Shared ranks of in*9 span every kernel: the own filters then fit noise, which the
    least-squares coefficients must not count twice."""
    plain = create_model("resnet14")
    model = create_model("resnet14", share="basis", shared_rank=144, unique_rank=1)
    report = sharenet.load_weights(model, plain.state_dict(), fuse_kernels=True).fused
    assert max(e for errors in report.values() for e in errors.values()) < 1e-5


def test_weights_of_another_plan_are_refused_naming_its_options():
    source = create_model("resnet20", share="templates", templates=3)
    target = create_model("resnet20", share="stage")
    with pytest.raises(PlanMismatchError, match="share='templates', templates=3"):
        target.load_state_dict(source.state_dict())
    with pytest.raises(PlanMismatchError, match="templates=3, this model is share='templates', templates=2"):
        create_model("resnet20", share="templates", templates=2).load_state_dict(source.state_dict())  # same keys
    with pytest.raises(PlanMismatchError, match="templates=3"):
        sharenet.load_weights(create_model("resnet20", share="templates", templates=2), source.state_dict())
    same = create_model("resnet20", share="templates", templates=3)
    sharenet.load_weights(same, source.state_dict())
    assert torch.equal(same.get_parameter("stages.0.bank.templates"), source.get_parameter("stages.0.bank.templates"))


def test_saved_file_rebuilds_the_learned_plan(tmp_path):
    model = create_model("resnet20", share="basis", shared_rank=4, unique_rank=2, basis="double")
    path = sharenet.save(model, tmp_path / "m.safetensors")
    loaded = sharenet.load(path)
    assert loaded.plan == model.plan and loaded.config == model.config
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_template_coefficients_get_no_weight_decay():
    model = create_model("resnet20", share="templates")
    decayed, exempt = param_groups(model, OptimConfig())
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in exempt["params"]} == model.no_weight_decay()
    assert exempt["weight_decay"] == 0 and len(model.no_weight_decay()) == 12
    assert all("coefficients" not in names[id(p)] for p in decayed["params"])


def test_initialisation_follows_the_papers():
    torch.manual_seed(0)
    model = create_model("resnet32", share="templates", templates=2)
    users = model.plan.groups()["stages.1.bank.templates"]
    coeff = torch.stack([model.get_parameter(f"{c}.coefficients") for c in users]).detach()
    torch.testing.assert_close(coeff.T @ coeff, torch.eye(2))  # orthogonal (convs, s) matrix
    for basis in ("single", "double"):
        model = create_model("resnet32", share="basis", basis=basis).requires_grad_(False)
        # shared bases start orthonormal (jointly under "double"): the shared-only penalty is zero
        assert float(basis_penalty(model, own=False)) < 1e-10
        assert float(basis_penalty(model, own=True)) > 1  # own bases start kaiming-scaled


def test_orthogonality_penalty_terms():
    """Kang et al.: squared entries of B B^T - I, shared rows against all rows plus each own basis
    against itself, one mean over all stages; computed here directly on a tiny model."""
    with pytest.raises(InvalidArgumentError, match="share='basis'"):
        basis_penalty(create_model("resnet14", share="templates"))
    model = create_model("resnet14", share="basis", shared_rank=2, unique_rank=1)
    total, count = 0.0, 0
    model.requires_grad_(False)
    for stage in model.stages:
        shared = stage.basis.weight.flatten(1)
        owns = [m.basis.weight.flatten(1) for m in stage.modules() if isinstance(m, sharenet.models.BasisConv3x3)]
        b = torch.cat([shared, *owns])
        d = (b @ b.T - torch.eye(len(b))) ** 2
        ns = len(shared)
        total += float(d[:ns].sum()) + sum(float(((u @ u.T - torch.eye(len(u))) ** 2).sum()) for u in owns)
        count += ns * len(b) + sum(len(u) ** 2 for u in owns)
    assert float(basis_penalty(model, own=True, weight=10)) == pytest.approx(10 * total / count, rel=1e-5)
    model.requires_grad_(True)
    basis_penalty(model).backward()
    assert model.stages[0].basis.weight.grad is not None


@torch.no_grad()
@pytest.mark.parametrize(
    "options",
    [
        {"share": "stage", "relax_rank": 2},
        {"share": "ring", "params": 150_000},
        {"share": "templates", "templates": 2},
        {"share": "basis", "shared_rank": 8, "unique_rank": 1},
    ],
    ids=lambda o: o["share"],
)
def test_a_data_aware_fit_on_inputs_alike_in_every_direction_is_the_weight_space_fit(options):
    """C = c I for every conv weighs every kernel entry alike: the output-space closed forms (the
    whitened SVDs, the weighted means) must then give back the weight-space fit's kernels exactly,
    whatever c, so that the two differ only by what the inputs say."""
    plain = _random_stats(create_model("resnet20")).double().eval()
    by_weights, by_data = (create_model("resnet20", **options).double().eval() for _ in range(2))
    unshared = unshared_state_dict(plain)
    fuse(by_weights, unshared)
    c = {s.path: 3.7 * torch.eye(s.in_ch * s.kernel**2, dtype=torch.float64) for s in by_data.plan.slots if s.fitted}
    errors = fuse(by_data, unshared, c)
    ours, theirs = unshared_state_dict(by_data), unshared_state_dict(by_weights)
    for slot in by_data.plan.slots:
        key = f"{slot.path}.weight"
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-9 * float(theirs[key].abs().max()))
    assert {p for conv in errors.values() for p in conv} == set(c)
