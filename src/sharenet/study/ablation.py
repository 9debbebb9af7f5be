"""`sharenet report --ablation BASE VARIANT...`: recipe changes compared on the held-out split.

A recipe is tuned on `data.val_split`, never on the test set, so this table reads the runs'
validation top-1 only (summary.json: final epoch, never the best one). Each folder given is one
variant; its runs (seeds) must share one configuration apart from the seed and how it was run.
The first folder is the baseline: every other row names the settings it changes and the
difference of its mean to the baseline's, beside its seed spread; the table gives no verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..engine.config import KEYS, stored_value
from ..errors import SharenetError
from ..rundir import CONFIG, SUMMARY, finished_runs
from .records import Section, mean_std, write_page

# keys that say how a run was executed or evaluated, not what it trained: they may differ within a variant
HOW_RUN = {k.name for k in KEYS.values() if k.local} | {
    "run.seed",
    "run.compile",
    "run.checkpoint_every",
    "run.checkpoint_minutes",
    "run.keep_checkpoints",
    "run.log_every",
    "run.eval_batch_size",
    "run.tta",
}


def recipe_of(config: dict) -> dict[str, object]:
    """A run's config.json as {section.key: value}, keys it predates at their defaults, how-run keys left out."""
    return {name: stored_value(config, name) for name in KEYS if name not in HOW_RUN}


def variant(folder: str | Path) -> dict:
    """One folder's finished runs: their shared recipe, seeds and validation scores."""
    runs = finished_runs(Path(folder)) if Path(folder).exists() else []
    if not runs:
        raise SharenetError(f"no finished runs ({SUMMARY}) under {folder}")
    recipes, seeds, val, tta, wall = [], [], [], [], []
    for run in runs:
        summary, config = run.read_json(SUMMARY), run.read_json(CONFIG)
        if summary.get("val_top1") is None:
            raise SharenetError(f"{run.path} has no validation score: train ablation runs with data.val_split")
        recipes.append(recipe_of(config))
        seeds.append(config["run"]["seed"])
        val.append(summary["val_top1"])
        tta.append(summary.get("val_top1_tta"))
        wall.append(summary["wall_s"])
    differ = sorted(k for k in recipes[0] if any(r[k] != recipes[0][k] for r in recipes))
    if differ:
        raise SharenetError(f"{folder}: its runs differ in {', '.join(differ)}; one variant per folder")
    return {
        "name": Path(folder).name,
        "recipe": recipes[0],
        "seeds": sorted(seeds),
        "val": val,
        "tta": None if None in tta else tta,
        "wall_s": wall,
    }


def _changes(base: dict, other: dict) -> str:
    keys = [k for k in base if base[k] != other[k]]
    return ", ".join(f"`{k}={json.dumps(other[k])}`" for k in keys) or "(the baseline's recipe)"


def ablation_markdown(folders: list[str | Path]) -> str:
    """The table: one row per folder, the first being the baseline."""
    variants = [variant(f) for f in folders]
    base = variants[0]
    base_mean, _ = mean_std(base["val"])
    lines = [
        "| variant | changes to the baseline | seeds | val top-1 % (mean ± std) | vs baseline (pts) "
        "| val top-1 with flip TTA % | minutes per run |",
        "|" + "---|" * 7,
    ]
    for i, v in enumerate(variants):
        mean, std = mean_std(v["val"])
        tta = "" if v["tta"] is None else "{:.2f} ± {:.2f}".format(*(100 * x for x in mean_std(v["tta"])))
        change = "baseline" if i == 0 else _changes(base["recipe"], v["recipe"])
        delta = "" if i == 0 else f"{100 * (mean - base_mean):+.2f}"
        minutes = sum(v["wall_s"]) / len(v["wall_s"]) / 60
        lines.append(
            f"| {v['name']} | {change} | {', '.join(map(str, v['seeds']))} | {100 * mean:.2f} ± "
            f"{100 * std:.2f} | {delta} | {tta} | {minutes:.1f} |"
        )
    return "\n".join(lines) + "\n"


def ablation_section(folders: list[str | Path]) -> Section:
    """The variants' table, and which split it reads."""
    notes = "Validation top-1 on the held-out split (data.val_split), final epoch; the test set is not read."
    return Section("", ablation_markdown(folders), notes)


def write_ablation(folders: list[str | Path], out: Path, title: str | None = None, notes: str = "") -> Path:
    """FILE.md: the table, then `notes` (commands, hardware, which changes were kept and why)."""
    return write_page(out, title, [ablation_section(folders)], notes)
