"""Studies: grids of models x sharing schemes x seeds, run resumably, and reports built from run records."""

from .records import collect
from .report import write_report
from .runner import StudySpec, load_spec, plan_runs, run_study

__all__ = ["StudySpec", "collect", "load_spec", "plan_runs", "run_study", "write_report"]
