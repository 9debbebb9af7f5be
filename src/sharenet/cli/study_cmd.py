"""`sharenet study SPEC.yaml` and `sharenet report RUNS... --out FILE.md`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run a grid of models x schemes x seeds (skips finished runs, resumes others)")
    p.add_argument("spec", help="study YAML (see experiments/fashion-mnist-study.yaml)")
    p.add_argument("--max-runs", type=int, help="stop after this many runs (a chunk); run again to continue")
    p.add_argument("--dry-run", action="store_true", help="list what would run")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, the CPU cores split between them (local)")
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: a process pool on this machine; ray: each run a Ray task on a cluster, retried on another "
        "node if its node is lost (needs sharenet[ray] and storage every node sees; docs/cluster.md)",
    )
    p.add_argument(
        "--address", help="ray: the cluster's head, HOST:PORT or auto (default: start Ray on this machine alone)"
    )
    p.add_argument("--cpus-per-run", type=int, default=1, help="ray: CPUs (and OMP threads) each run takes (default 1)")
    p.add_argument("--retries", type=int, default=3, help="ray: times a run lost with its node is retried (default 3)")
    p.set_defaults(run=run_study_cmd)

    p = sub.add_parser("report", help="Markdown/CSV table and PNG plots from run directories")
    p.add_argument(
        "runs",
        nargs="+",
        help="run directories or folders holding them (--ablation: one folder per variant, the baseline first)",
    )
    p.add_argument("--out", default="report.md", help="Markdown file; .csv and .png files go beside it")
    p.add_argument("--title", help="a heading for the Markdown file")
    p.add_argument("--notes", help="a Markdown file appended to the report (commands, hardware, discussion)")
    p.add_argument(
        "--ablation",
        action="store_true",
        help="compare recipe variants on the held-out split "
        "(data.val_split): each folder's settings that differ from the first's, val top-1 mean +- std",
    )
    p.add_argument(
        "--compress",
        action="store_true",
        help="compare students made by sharenet compress (or distilled) with the same networks from scratch: "
        "top-1 after the fit, after BatchNorm re-estimation and at the end, against their teacher",
    )
    p.set_defaults(run=run_report)


def run_study_cmd(args) -> int:
    from ..engine.config import ConfigError
    from ..study import load_spec, run_study

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, not {args.jobs}")
    ray_only = [f for f, v in (("--address", args.address), ("--cpus-per-run", args.cpus_per_run != 1)) if v]
    if args.backend != "ray" and (ray_only or args.retries != 3):
        raise ConfigError(f"{' and '.join(ray_only) or '--retries'} apply to --backend ray")
    spec = load_spec(args.spec)
    if args.backend == "ray":
        from ..study.cluster import run_study_ray

        counts = run_study_ray(spec, args.address, args.cpus_per_run, args.retries, args.max_runs, args.dry_run)
    else:
        counts = run_study(spec, args.max_runs, args.dry_run, args.jobs)
    print(
        f"study {args.spec}: {counts['done']} already done, {counts['ran']} ran, {counts['failed']} failed, "
        f"{counts['left']} left"
    )
    return 1 if counts["failed"] else 0


def run_report(args) -> int:
    from ..errors import SharenetError
    from ..study import collect, write_report

    notes = ""
    if args.notes:
        try:
            notes = Path(args.notes).read_text()
        except OSError as e:
            raise SharenetError(f"cannot read --notes {args.notes}: {e.strerror}") from None
    if args.compress:
        from ..study.compression import write_compression

        out = write_compression(args.runs, Path(args.out), args.title, notes)
        print(f"wrote {out}")
        return 0
    if args.ablation:
        from ..study.ablation import write_ablation

        out = write_ablation(args.runs, Path(args.out), args.title, notes)
        print(out.read_text().split("\n\n")[1 if args.title else 0])
        print(f"wrote {out}")
        return 0
    files = write_report(collect(args.runs), Path(args.out), args.title, notes)
    print(Path(files["markdown"]).read_text().split("\n\n")[0])
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0
