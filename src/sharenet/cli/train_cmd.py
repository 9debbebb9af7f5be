"""`sharenet train`, `sharenet compress` (training from a teacher) and `sharenet eval`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..engine.config import KEYS, ConfigError, Key, apply, flatten, parse_set, read_yaml
from ..engine.evaluation import per_class, plot_confusion, run_eval
from ..engine.recipes import DEFAULT_RECIPE, RECIPES, recipe_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (default: resnet20 share=stage on Fashion-MNIST)")
    add_train_args(p, DEFAULT_RECIPE)
    p.add_argument("--list-keys", action="store_true", help="print every config key as a Markdown table and exit")
    p.set_defaults(run=run_train)

    p = sub.add_parser(
        "compress",
        help="a shared network from a trained one: its weights fitted to the scheme, then distilled from it",
        description="Train a student under --share (and --params) from TEACHER: started from the teacher's "
        "weights fitted to the student's sharing plan, BatchNorm re-estimated, then trained on the teacher's data "
        "with knowledge distillation (the compress recipe: 2 epochs). The student is the teacher's architecture "
        "unless flags change it; a run directory like any training run's.",
    )
    p.add_argument(
        "teacher",
        help="run directory, sharenet weight file, or a checkpoint sharenet import reads (then --model names its "
        "architecture and --dataset its data)",
    )
    add_train_args(p, default_recipe="compress")
    p.set_defaults(run=run_compress)

    p = sub.add_parser("eval", help="evaluate a run directory or weight file on a test set")
    p.add_argument("source", help="run directory or .safetensors weight file")
    p.add_argument("--dataset", choices=KEYS["data.dataset"].choices)
    p.add_argument("--data-dir")
    p.add_argument("--device", choices=KEYS["run.device"].choices)
    p.add_argument("--batch-size", type=int)
    p.add_argument(
        "--tta",
        action="store_true",
        help="also average each image's logits with its horizontal flip's (reported beside the plain top-1)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", nargs="?", const="", metavar="PNG", help="write a confusion matrix (default: beside)")
    p.set_defaults(run=run_evaluate)


def add_train_args(p: argparse.ArgumentParser, default_recipe: str) -> None:
    """What `train` and `compress` share: recipe, key flags, --resume, --config, --set."""
    p.add_argument("--recipe", choices=list(RECIPES), help=f"named preset (default {default_recipe})")
    add_key_flags(p)
    p.add_argument("--resume", metavar="auto|PATH", help="continue from the newest checkpoint in --out, or PATH")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML: {recipe: NAME, model: {...}, optim: {...}, ...}")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any key (repeatable); --list-keys shows them all",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def add_key_flags(p: argparse.ArgumentParser) -> None:
    """One option per key declared with a flag, stored under the key's own name; help is its why."""
    for k in KEYS.values():
        if not k.flag:
            continue
        helptext = f"{k.why} [{k.name}]".replace("%", "%%")
        if k.hint is bool:  # --no-progress sets False, any other bool flag True
            on = not k.flag.startswith("--no-")
            p.add_argument(k.flag, dest=k.name, action="store_const", const=on, help=("" if on else "off: ") + helptext)
            continue
        metavar = None if k.choices else k.flag.lstrip("-").replace("-", "_").upper()
        kind = k.hint if k.hint in (int, float) else None
        p.add_argument(k.flag, dest=k.name, type=kind, choices=k.choices or None, metavar=metavar, help=helptext)


def resolve_config(args, default_recipe: str | None = None, base: dict | None = None):
    """defaults < recipe < `base` (compress: what the teacher says) < --config file < flags < --set."""
    tree = read_yaml(args.config) if args.config else {}
    cfg = recipe_config(args.recipe or tree.get("recipe") or default_recipe)
    cfg = apply(cfg, base or {})
    cfg = apply(cfg, flatten(tree, args.config) if tree else {})
    flags = {k.name: getattr(args, k.name) for k in KEYS.values() if k.flag}
    cfg = apply(cfg, {name: value for name, value in flags.items() if value is not None})
    return apply(cfg, parse_set(args.set))


def key_table() -> str:
    """Every config key as a Markdown table; README.md holds this output verbatim (a test compares them)."""
    rows = [
        "| key | type | default | choices or bounds | on resume | flag | what and why |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in KEYS.values():
        cells = (
            f"`{k.name}`",
            f"`{k.type}`",
            f"`{_as_written(k.default)}`",
            ", ".join(k.choices) or k.bounds,
            _on_resume(k),
            f"`{k.flag}`" if k.flag else "",
            k.why,
        )
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("<", "\\<") for c in cells) + " |")  # not HTML
    return "\n".join(rows)


def _as_written(value) -> str:
    """A default as one writes it in a YAML --config file or --set."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return "none" if value is None else str(value)


def _on_resume(k: Key) -> str:
    return "must match" if k.resume else "may change (local)" if k.local else "may change"


def run_train(args) -> int:
    if args.list_keys:
        print(key_table())
        return 0
    fit_or_print(resolve_config(args), args)
    return 0


def fit_or_print(cfg, args) -> dict | None:
    """--print-config prints the checked config; otherwise train it (--resume auto needs --out)."""
    if args.print_config:
        from ..engine.validate import check_config

        check_config(cfg)
        print(json.dumps(cfg.to_dict(), indent=2))
        return None
    if args.resume == "auto" and not cfg.run.out:
        raise ConfigError("--resume auto needs --out DIR: the run directory to continue")
    from ..engine.fit import fit  # heavy imports only when training

    return fit(cfg, resume=args.resume)


def run_compress(args) -> int:
    summary = fit_or_print(compress_config(args), args)
    if summary is None:
        return 0
    t, start = summary["teacher"], summary.get("start") or {}
    stages = [("fitted", "fitted_test_top1"), ("BatchNorm re-estimated", "bn_test_top1")]
    steps = [f"{start[k]:.4f} {label}" for label, k in stages if k in start]
    steps.append(f"{summary['test_top1']:.4f} distilled")
    print(
        f"teacher: {t['params']:,} parameters, test top-1 {t['test_top1']:.4f}; "
        f"student: {summary['params']:,} parameters, test top-1 " + " -> ".join(steps)
    )
    return 0


def compress_config(args):
    """The student's config: the compress recipe, then what it inherits from its teacher
    (engine/inherit.py), then the flags; under a budget, what the budget chooses."""
    from ..engine.inherit import free_for_budget, inherited

    explicit = (
        {**flatten(read_yaml(args.config), args.config), **parse_set(args.set)} if args.config else parse_set(args.set)
    )
    given = {k.name for k in KEYS.values() if k.flag and getattr(args, k.name) is not None} | set(explicit)
    if "model.share" not in given:
        raise ConfigError("sharenet compress needs --share SCHEME: the scheme the student shares its weights by")
    cfg = resolve_config(args, "compress", inherited(args.teacher, given))
    return free_for_budget(cfg, set(explicit))


def run_evaluate(args) -> int:
    result, out_dir, classes = run_eval(
        args.source, args.dataset, args.data_dir, args.device, args.batch_size, args.tta
    )
    accuracy = per_class(result["confusion"], classes)
    report = {
        "top1": result["top1"],
        "top5": result["top5"],
        "loss": result["loss"],
        "samples": result["samples"],
        "per_class": accuracy,
    }
    if args.tta:
        report.update({f"{k}_tta": result["tta"][k] for k in ("top1", "top5", "loss")})
    if args.plot is not None:
        path = Path(args.plot) if args.plot else out_dir / "confusion.png"
        report["confusion_png"] = str(plot_confusion(result, classes, path, f"{args.source}"))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"top-1 {report['top1']:.4f}  top-5 {report['top5']:.4f}  loss {report['loss']:.4f}  "
        f"({report['samples']} images)"
    )
    if args.tta:
        print(f"with flip TTA (2 passes): top-1 {report['top1_tta']:.4f}  top-5 {report['top5_tta']:.4f}")
    width = max(len(c) for c in classes)
    for name, acc in accuracy.items():
        print(f"  {name:<{width}}  {acc:.4f}")
    if "confusion_png" in report:
        print(f"confusion matrix: {report['confusion_png']}")
    return 0
