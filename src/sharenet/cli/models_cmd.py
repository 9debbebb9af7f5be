"""`sharenet params` (the papers' tables, or one model's accounting) and `sharenet import`."""

from __future__ import annotations

import argparse
import json
import os
import typing

import torch

from ..engine.config import KEYS
from ..errors import InvalidArgumentError
from ..models import NAME_FORMS, SCHEMES, ResNet, create_model, describe
from ..models.budget import chosen, count_on_meta
from ..models.plan import OPTION_NAMES
from ..paper import LEARNED_PARAMS, SHARESNET_PARAMS
from ..weights import load_weights, save
from ..weights.files import read_metadata

SCHEME_HELP = KEYS["model.share"].why
SIZE_NAMES = ("width", "params")  # create_model keywords that size any scheme
GROUP_LABEL = {"templates": "template banks", "basis": "shared bases"}  # what a plan group holds


def _add_model_args(p: argparse.ArgumentParser, share_help: str) -> None:
    """--share, its options, --width and --params (passed to create_model only when given), --num-classes,
    --in-chans."""
    p.add_argument("--share", default="none", choices=SCHEMES, help=share_help)
    for name in (*OPTION_NAMES, *SIZE_NAMES):  # help and default as the config key declares them
        key = KEYS[f"model.{name}"]
        kind = {"choices": key.choices} if key.choices else {"type": _scalar(key.hint)}
        p.add_argument(f"--{name.replace('_', '-')}", **kind, help=f"{key.why} (default {key.default})")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--in-chans", type=int, default=3)


def _scalar(hint):
    """int for `int | None`: what a flag's value converts to."""
    return next((t for t in typing.get_args(hint) if t is not type(None)), hint)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "params",
        help="parameter counts: the papers' tables, or one model",
        description=f"Without NAME: the ShaResNet table and the learned-sharing counts. NAME forms: {NAME_FORMS}",
    )
    p.add_argument("name", nargs="?", help="model name; omit for the papers' tables")
    _add_model_args(p, SCHEME_HELP)
    p.add_argument("--describe", action="store_true", help="also print which convs use each shared tensor")
    p.add_argument(
        "--sizes",
        action="store_true",
        help="without NAME: file bytes of resnet20/56 under each scheme as safetensors, ONNX and int8 "
        "ONNX (needs the export extra)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_params)

    p = sub.add_parser("import", help="convert a torchvision / CIFAR / sharenet checkpoint to a sharenet file")
    p.add_argument("src", help="checkpoint: .pth/.th/.pt pickle (read with weights_only=True) or .safetensors")
    p.add_argument("--model", required=True)
    _add_model_args(
        p, "target scheme; its shared tensors are fitted to the kernels they replace (mean, or SVD for templates/basis)"
    )
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument(
        "--calibration",
        type=int,
        default=0,
        metavar="N",
        help="fit each conv's outputs on the inputs N training images give it, instead of its weights (a sharenet "
        "file that records its data set; about 2560 is compress's default); 0 (default): fit weights",
    )
    p.add_argument("--data-dir", default=None, help="where the source's data set is (default: its standard place)")
    p.set_defaults(run=run_import)


def _create(name: str, args) -> ResNet:
    """The model the flags ask for; a scheme option reaches create_model only when given, so that
    one given for another scheme is refused there."""
    given = {k: getattr(args, k) for k in (*OPTION_NAMES, *SIZE_NAMES) if getattr(args, k) is not None}
    return create_model(name, share=args.share, num_classes=args.num_classes, in_chans=args.in_chans, **given)


def paper_table() -> list[dict]:
    rows = []
    for row in SHARESNET_PARAMS:
        base = count_on_meta(create_model, name=row.model, num_classes=row.num_classes)
        shared = count_on_meta(create_model, name=row.model, share="stage", num_classes=row.num_classes)
        rows.append(
            {
                "model": row.model,
                "num_classes": row.num_classes,
                "baseline": base,
                "shared": shared,
                "reduction": 1 - shared / base,
                "readme": row.readme,
                "matches_paper": (base, shared) == (row.baseline, row.shared),
            }
        )
    return rows


def learned_table() -> list[dict]:
    rows = []
    for row in LEARNED_PARAMS:
        kwargs = row.create_kwargs()
        base = count_on_meta(create_model, name=row.model, num_classes=row.num_classes)
        ours = count_on_meta(create_model, name=row.model, **kwargs)
        rows.append(
            {
                "name": row.name,
                "model": row.model,
                "num_classes": row.num_classes,
                "options": kwargs,
                "baseline": base,
                "params": ours,
                "reduction": 1 - ours / base,
                "published": row.params,
                "rounded": row.rounded,
                "source": row.source,
                "matches_paper": ours == row.params,
            }
        )
    return rows


def print_tables(sharesnet: list[dict], learned: list[dict]) -> None:
    print(f"{'model':<18}{'classes':>8}{'baseline':>13}{'ShaResNet':>13}{'saved':>8}  {'README':<24}paper")
    for r in sharesnet:
        print(
            f"{r['model']:<18}{r['num_classes']:>8}{r['baseline']:>13,}{r['shared']:>13,}"
            f"{r['reduction']:>8.1%}  {r['readme']:<24}{'exact' if r['matches_paper'] else 'DIFFERS'}"
        )
    print()
    header = f"{'learned sharing':<23}{'model':<10}{'classes':>8}{'baseline':>13}{'params':>13}{'saved':>8}"
    print(f"{header}  {'README':<8}code")
    for r in learned:
        print(
            f"{r['name']:<23}{r['model']:<10}{r['num_classes']:>8}{r['baseline']:>13,}{r['params']:>13,}"
            f"{r['reduction']:>8.1%}  {r['rounded'] or '-':<8}{'exact' if r['matches_paper'] else 'DIFFERS'}"
        )


def run_params(args) -> int:
    if args.sizes:
        from ..deploy.sizes import format_sizes, size_table

        rows = size_table(*([args.name], SCHEMES) if args.name else ())
        print(json.dumps(rows, indent=2) if args.json else format_sizes(rows))
        return 0
    if args.name is None:
        sharesnet, learned = paper_table(), learned_table()
        if args.json:
            print(json.dumps({"sharesnet": sharesnet, "learned": learned}, indent=2))
        else:
            print_tables(sharesnet, learned)
        return 0
    model = _create(args.name, args)
    info = describe(model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    options = "".join(f" {k}={v}" for k, v in info["sharing"].items())
    print(f"{info['model']} share={info['share']}{options} width={info['width']} num_classes={info['num_classes']}")
    if args.params is not None:
        print(f"  budget                {args.params:,}: {chosen(model.config)}")
    print(f"  parameters            {info['params']:,}")
    print(f"  conv layers           {info['conv_layers']}")
    print(f"  distinct conv kernels {info['distinct_conv_kernels']}")
    print(f"  MACs per image        {info['macs']:,} at {info['input_size']}x{info['input_size']}")
    if args.describe:
        groups = info["shared_kernels"]
        label = GROUP_LABEL.get(info["share"], "shared kernels")
        print(f"  {label:<22}{len(groups)}" + ("" if groups else " (every conv has its own)"))
        for key, convs in groups.items():
            print(f"    {key}  used by {len(convs)}: {', '.join(convs)}")
        fixes = info["corrections"]
        if fixes:
            print(
                f"  corrections           {fixes['convs']} convs add B A of rank {fixes['rank']} to the kernel "
                f"they read: {fixes['params']:,} parameters"
            )
    return 0


def run_import(args) -> int:
    model = _create(args.model, args)
    src = str(args.src)
    meta = read_metadata(src) if src.endswith(".safetensors") and os.path.isfile(src) else None
    recorded = {k: v for k, v in ((meta or {}).get("extra") or {}).items() if k in ("dataset", "preprocess")}
    images = _calibration_images(args, meta) if args.calibration else None
    report = load_weights(model, src, fuse_kernels=True, calibration=images)
    # the source's data set and preprocessing carry over: predict, export checks and a later import read them
    path = save(model, args.out, extra={"imported_from": src, "layout": report.layout, **recorded})
    print(
        f"read {args.src} ({report.layout} layout, share={report.source_share}) -> {path} (share={report.target_share})"
    )
    for key, errors in report.fused.items():
        worst = max(errors, key=errors.get)
        mean = sum(errors.values()) / len(errors)
        of = "outputs' " if images is not None else ""
        fit = f"{of}relative error max {errors[worst]:.3f} ({worst}), mean {mean:.3f}"
        print(f"  fused {key} from {len(errors)} kernels: {fit}")
    return 0


def _calibration_images(args, meta: dict | None) -> torch.Tensor:
    """N training images of the data set the source file records, preprocessed as it was trained."""
    from ..deploy.check import dataset_images

    if args.calibration < 0:
        raise InvalidArgumentError(
            f"--calibration must be 0 (fit weights) or a number of images, got {args.calibration}"
        )
    if not meta or not (meta.get("extra") or {}).get("dataset"):
        raise InvalidArgumentError(
            f"--calibration reads the training images of the data set the source was trained on, and {args.src} "
            "records none (a sharenet file does); leave it out to fit weights"
        )
    return dataset_images(meta, "train", args.calibration, args.data_dir)[0]
