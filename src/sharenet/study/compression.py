"""The compression report: students made by `sharenet compress` (or distilled from scratch) beside
the same networks trained from scratch on labels, read from their run directories.

One row per student network and way it was made: its share of the teacher's parameters, its test
top-1 after the fit, after BatchNorm re-estimation and at the end of training (mean +- std over
seeds), what it costs against its teacher (the mean difference over seeds with its 95 % t-interval:
one teacher, so each seed's student is set against the same network), the epochs and time each run
took, and on which machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SharenetError
from ..rundir import CONFIG, SUMMARY, RunDir
from .records import Section, finished_at, machine, mean_std, pct, pts_interval, variant, write_page


@dataclass
class Student:
    name: str  # "resnet56 stage", with its variant
    params: int
    how: str  # how it was made
    seed: int
    epochs: float
    top1: float
    fitted: float | None
    bn: float | None
    teacher: dict | None
    wall_s: float  # training, and the fit before it
    machine: str


def read_students(paths: list[str | Path]) -> list[Student]:
    return [_student(run) for run in finished_at(paths)]


def _student(run: RunDir) -> Student:
    summary, config = run.read_json(SUMMARY), run.read_json(CONFIG)
    model, teacher, start = config["model"], summary.get("teacher"), summary.get("start") or {}
    extra = variant(model)
    name = f"{model['name']} {model['share']}" + (f" ({extra})" if extra else "")
    if teacher is None:
        how = "from scratch, labels only"
    elif start.get("from") == "fit":  # of the teacher's kernels, or of its convs' outputs on calibration images
        how = f"fit on {start.get('fit_on', 'weights')} + distillation"
    else:
        how = "distillation from scratch"
    return Student(
        name,
        summary["params"],
        how,
        config["run"]["seed"],
        summary["epochs"],
        summary["test_top1"],
        start.get("fitted_test_top1"),
        start.get("bn_test_top1"),
        teacher,
        summary["wall_s"] + start.get("seconds", 0.0),
        machine(config),
    )


def _over_seeds(values: list[float]) -> str:
    """ "92.99 ± 0.06" in %, the std only where there are two seeds or more."""
    mean, std = mean_std(values)
    return pct(mean) + (f" ± {pct(std)}" if len(values) > 1 else "")


def compression_markdown(students: list[Student]) -> str:
    """The teachers, then one row per (student, way made), students in order of parameters."""
    teachers = {s.teacher["sha256"]: s.teacher for s in students if s.teacher}
    if len(teachers) > 1:
        raise SharenetError("the runs distil from more than one teacher: report each teacher's students apart")
    teacher = next(iter(teachers.values()), None)
    lines = []
    if teacher is not None:
        where = Path(teacher["file"]).parent.name or teacher["file"]
        lines += [
            f"Teacher: `{where}`, {teacher['params']:,} parameters, test top-1 {100 * teacher['test_top1']:.2f} % "
            f"(SHA-256 {teacher['sha256'][:12]}…).",
            "",
        ]
    lines += [
        "| student | parameters | of teacher | made by | seeds | epochs | top-1 fitted | after BatchNorm | test top-1 "
        "| vs teacher [95 % interval] | minutes per run | machine |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    groups: dict[tuple, list[Student]] = {}
    for s in students:
        groups.setdefault((s.params, s.name, s.how), []).append(s)
    for (params, name, how), runs in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1], kv[0][2])):
        runs.sort(key=lambda s: s.seed)
        top1 = [s.top1 for s in runs]
        fitted = [s.fitted for s in runs if s.fitted is not None]
        bn = [s.bn for s in runs if s.bn is not None]
        vs = pts_interval([x - teacher["test_top1"] for x in top1]) if teacher else ""
        share = f"{100 * params / teacher['params']:.0f} %" if teacher else ""
        minutes = mean_std([s.wall_s / 60 for s in runs])[0]
        epochs = {f"{s.epochs:g}" for s in runs}
        machines = sorted({s.machine for s in runs})
        cells = (
            name,
            f"{params:,}",
            share,
            how,
            ", ".join(str(s.seed) for s in runs),
            "/".join(sorted(epochs)),
            _over_seeds(fitted) if fitted else "",
            _over_seeds(bn) if bn else "",
            _over_seeds(top1),
            vs,
            f"{minutes:.1f}",
            "; ".join(machines),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compression_section(students: list[Student]) -> Section:
    """The teacher and its students' table, and what each column measures."""
    notes = (
        "Final-epoch test top-1 in %, mean ± std over the seeds listed; 'vs teacher' is the student's mean "
        "minus the teacher's, in points, with its 95 % Student-t interval over the seeds where there are two or "
        "more. 'top-1 fitted': the student straight after its shared tensors (and corrections) were fitted to the "
        "teacher's kernels ('fit on weights') or to its convs' outputs on calibration images ('fit on data'); "
        "'after BatchNorm': after its running statistics were re-estimated on training batches."
    )
    return Section("", compression_markdown(students), notes)


def write_compression(paths: list[str | Path], out: Path, title: str | None = None, notes: str = "") -> Path:
    """FILE.md: the students' table, then `notes`."""
    return write_page(out, title, [compression_section(read_students(paths))], notes)
