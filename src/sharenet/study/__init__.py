"""Studies: grids of models x sharing schemes x seeds, run resumably, and reports built from run records."""

from .report import collect, write_report
from .runner import StudySpec, load_spec, plan_runs, run_study

__all__ = ["StudySpec", "collect", "load_spec", "plan_runs", "run_study", "write_report"]
