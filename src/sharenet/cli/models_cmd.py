"""`sharenet params` (the paper table, or one model's accounting) and `sharenet import`."""

from __future__ import annotations

import argparse
import json

from ..models import NAME_FORMS, SCHEMES, count_params, create_model, describe
from ..paper import SHARESNET_PARAMS
from ..weights import load_weights, save


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "params",
        help="parameter counts: the ShaResNet table, or one model",
        description=f"Without NAME: the ShaResNet README table. NAME forms: {NAME_FORMS}",
    )
    p.add_argument("name", nargs="?", help="model name; omit for the paper table")
    p.add_argument("--share", default="none", choices=SCHEMES)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--describe", action="store_true", help="also print which convs use each shared kernel")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_params)

    p = sub.add_parser("import", help="convert a torchvision / CIFAR / sharenet checkpoint to a sharenet file")
    p.add_argument("src", help="checkpoint: .pth/.th/.pt pickle (read with weights_only=True) or .safetensors")
    p.add_argument("--model", required=True)
    p.add_argument(
        "--share",
        default="none",
        choices=SCHEMES,
        help="target scheme; a shared target averages the kernels it replaces",
    )
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(run=run_import)


def paper_table() -> list[dict]:
    rows = []
    for row in SHARESNET_PARAMS:
        base = count_params(create_model(row.model, num_classes=row.num_classes))
        shared = count_params(create_model(row.model, share="stage", num_classes=row.num_classes))
        rows.append({
            "model": row.model, "num_classes": row.num_classes, "baseline": base, "shared": shared,
            "reduction": 1 - shared / base, "readme": row.readme,
            "matches_paper": (base, shared) == (row.baseline, row.shared),
        })  # fmt: skip
    return rows


def run_params(args) -> int:
    if args.name is None:
        rows = paper_table()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'model':<18}{'classes':>8}{'baseline':>13}{'ShaResNet':>13}{'saved':>8}  {'README':<24}paper")
        for r in rows:
            print(
                f"{r['model']:<18}{r['num_classes']:>8}{r['baseline']:>13,}{r['shared']:>13,}"
                f"{r['reduction']:>8.1%}  {r['readme']:<24}{'exact' if r['matches_paper'] else 'DIFFERS'}"
            )
        return 0
    model = create_model(args.name, share=args.share, num_classes=args.num_classes, in_chans=args.in_chans)
    info = describe(model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['model']} share={info['share']} num_classes={info['num_classes']}")
    print(f"  parameters            {info['params']:,}")
    print(f"  conv layers           {info['conv_layers']}")
    print(f"  distinct conv kernels {info['distinct_conv_kernels']}")
    print(f"  MACs per image        {info['macs']:,} at {info['input_size']}x{info['input_size']}")
    if args.describe:
        groups = info["shared_kernels"]
        print(f"  shared kernels        {len(groups)}" + ("" if groups else " (every conv has its own)"))
        for key, convs in groups.items():
            print(f"    {key}  used by {len(convs)}: {', '.join(convs)}")
    return 0


def run_import(args) -> int:
    model = create_model(args.model, share=args.share, num_classes=args.num_classes, in_chans=args.in_chans)
    report = load_weights(model, args.src, fuse_kernels=True)
    path = save(model, args.out, extra={"imported_from": str(args.src), "layout": report.layout})
    print(
        f"read {args.src} ({report.layout} layout, share={report.source_share}) -> {path} (share={report.target_share})"
    )
    for key, dists in report.fused.items():
        print(f"  fused {key} from {len(dists)} kernels: relative distance to mean max {max(dists.values()):.3f}")
    return 0
