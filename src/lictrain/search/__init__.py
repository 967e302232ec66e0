"""Hyperparameter sweeps: grid (every combination) and Optuna (TPE, median pruning).

* :mod:`lictrain.search.grid` -- ``key=values`` specs, combinations, the grid sweep;
* :mod:`lictrain.search.study` -- Optuna studies in RDB storage (resume, heartbeats, retries);
* :mod:`lictrain.search.trial` -- one trial = one ``fit()`` run directory.

``lictrain sweep`` (:mod:`lictrain.cli.sweep`) is the command line; docs/sweeps.md the guide.
"""

from lictrain.search.grid import ParamSpec, SweepSummary, grid_combinations, parse_grid, run_grid, trial_name
from lictrain.search.study import OBJECTIVES, StudySettings, run_optuna

__all__ = ["ParamSpec", "SweepSummary", "parse_grid", "grid_combinations", "trial_name", "run_grid",
           "OBJECTIVES", "StudySettings", "run_optuna"]
