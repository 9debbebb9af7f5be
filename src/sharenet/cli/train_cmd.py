"""`sharenet train` and `sharenet eval`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..engine.config import CHOICES, ConfigError, apply, flatten, parse_set, read_yaml
from ..engine.evaluation import per_class, plot_confusion, run_eval
from ..engine.recipes import RECIPES, recipe_config

FLAGS = {  # command-line flag -> config key
    "model": "model.name", "share": "model.share", "dataset": "data.dataset", "data_dir": "data.data_dir",
    "epochs": "optim.epochs", "batch_size": "optim.batch_size", "lr": "optim.lr", "seed": "run.seed",
    "device": "run.device", "out": "run.out", "max_steps": "run.max_steps",
    "checkpoint_every": "run.checkpoint_every",
}  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (default: resnet20 share=stage on Fashion-MNIST)")
    p.add_argument("--model", help="model name (default resnet20)")
    p.add_argument("--share", choices=CHOICES["model.share"])
    p.add_argument("--dataset", choices=CHOICES["data.dataset"])
    p.add_argument("--data-dir")
    p.add_argument("--recipe", choices=list(RECIPES), help="named preset (default fashion-mnist)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size, summed over ranks")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=CHOICES["run.device"])
    p.add_argument("--out", help="run directory (default runs/<timestamp>-<model>-<share>)")
    p.add_argument("--resume", metavar="auto|PATH", help="continue from the newest checkpoint in --out, or PATH")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps, then evaluate and save")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="save the training state every N steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML: {recipe: NAME, model: {...}, optim: {...}, ...}")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override (repeatable)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(run=run_train)

    p = sub.add_parser("eval", help="evaluate a run directory or weight file on a test set")
    p.add_argument("source", help="run directory or .safetensors weight file")
    p.add_argument("--dataset", choices=CHOICES["data.dataset"])
    p.add_argument("--data-dir")
    p.add_argument("--device", choices=CHOICES["run.device"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", nargs="?", const="", metavar="PNG", help="write a confusion matrix (default: beside)")
    p.set_defaults(run=run_evaluate)


def resolve_config(args):
    """defaults < recipe < --config file < flags < --set."""
    tree = read_yaml(args.config) if args.config else {}
    cfg = recipe_config(args.recipe or tree.get("recipe") or "fashion-mnist")
    cfg = apply(cfg, flatten(tree, args.config) if tree else {})
    cfg = apply(cfg, {key: getattr(args, flag) for flag, key in FLAGS.items() if getattr(args, flag) is not None})
    if args.no_progress:
        cfg = apply(cfg, {"run.progress": False})
    return apply(cfg, parse_set(args.set))


def run_train(args) -> int:
    from ..engine.fit import fit  # heavy imports only when training
    from ..engine.validate import check_config

    cfg = resolve_config(args)
    if args.print_config:
        check_config(cfg)
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if args.resume == "auto" and not cfg.run.out:
        raise ConfigError("--resume auto needs --out DIR: the run directory to continue")
    fit(cfg, resume=args.resume)
    return 0


def run_evaluate(args) -> int:
    result, out_dir, classes = run_eval(args.source, args.dataset, args.data_dir, args.device, args.batch_size)
    accuracy = per_class(result["confusion"], classes)
    report = {"top1": result["top1"], "top5": result["top5"], "loss": result["loss"], "samples": result["samples"],
              "per_class": accuracy}  # fmt: skip
    if args.plot is not None:
        path = Path(args.plot) if args.plot else out_dir / "confusion.png"
        report["confusion_png"] = str(plot_confusion(result, classes, path, f"{args.source}"))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"top-1 {report['top1']:.4f}  top-5 {report['top5']:.4f}  loss {report['loss']:.4f}  "
          f"({report['samples']} images)")  # fmt: skip
    width = max(len(c) for c in classes)
    for name, acc in accuracy.items():
        print(f"  {name:<{width}}  {acc:.4f}")
    if "confusion_png" in report:
        print(f"confusion matrix: {report['confusion_png']}")
    return 0
