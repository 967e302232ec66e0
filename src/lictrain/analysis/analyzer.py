"""``HyperparameterAnalyzer``: runs on disk -> one DataFrame -> tables -> figures and a report.

The data is computed apart from the drawing. :mod:`lictrain.analysis.frame` builds the runs
DataFrame (:func:`runs_frame`, :func:`usable_runs`, :func:`config_labels`, ...);
:mod:`lictrain.analysis.tables` computes tables from it (:func:`recommend`,
:func:`heatmap_tables`, :func:`comparison_table`, :func:`rd_table`, :func:`bd_rate_table`,
:func:`pareto_table`) and :mod:`lictrain.analysis.importance` the parameter importance
(:func:`importance_table`); :mod:`lictrain.analysis.plots` draws them and
:mod:`lictrain.analysis.report` writes them out. :class:`HyperparameterAnalyzer` ties them
together behind the guide's interface; the module-level names are re-exported here.

A run is *usable* for a metric when its state is ``finished`` and the metric is a finite
number: failed, stopped (pruned or interrupted) and running runs, and runs whose metric is
missing or NaN, are never recommended, drawn or fitted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from lictrain.analysis import plots
from lictrain.analysis.frame import (  # noqa: F401 (re-exported: the analyzer's module-level API)
    BALANCED_ONLY, HYPERPARAMS, MAX_LEVELS, MAXIMIZE, META, SCHEDULE_ONLY, binned, config_labels, runs_frame,
    usable_runs, varying_params)
from lictrain.analysis.importance import MIN_IMPORTANCE_RUNS, importance_table  # noqa: F401 (re-exported)
from lictrain.analysis.notes import Notes
from lictrain.analysis.readers import scan_runs
from lictrain.analysis.report import write_report
from lictrain.analysis.tables import (  # noqa: F401 (re-exported)
    bd_rate_table, comparison_table, heatmap_tables, pareto_table, rd_table, recommend)
from lictrain.errors import DataError

__all__ = [
    "HyperparameterAnalyzer", "runs_frame", "usable_runs", "recommend", "heatmap_tables",
    "comparison_table", "config_labels", "rd_table", "bd_rate_table", "pareto_table",
    "importance_table", "varying_params", "binned", "MAXIMIZE", "HYPERPARAMS", "BALANCED_ONLY",
]

log = logging.getLogger(__name__)


class HyperparameterAnalyzer:
    """Post-hoc analysis of a hyperparameter search (section 3 of the guide), offline.

    Args:
        results_dir: A folder holding runs at any depth: lictrain run directories
            (``run.json``), W&B offline runs and synced W&B run folders.
        output_dir: Where figures and reports go (default: ``results_dir``).
        workers: Processes for reading many run files (``None``: automatic).

    Example::

        analyzer = HyperparameterAnalyzer("outputs/hparam_search")
        df = analyzer.load_results()
        print(analyzer.recommend_parameters(top_k=5, lambda_value=0.0035))
        analyzer.plot_heatmap("gamma", "w_lr", "psnr", lambda_value=0.0035)
    """

    def __init__(self, results_dir: str | Path, output_dir: str | Path | None = None,
                 workers: int | None = None) -> None:
        self.results_dir = Path(results_dir).expanduser()
        self.output_dir = Path(output_dir).expanduser() if output_dir is not None else self.results_dir
        self.workers = workers
        self.df: pd.DataFrame | None = None
        #: one line per problem met (unreadable files, runs left out), in order
        self.warnings: list[str] = []

    # -- loading -------------------------------------------------------------------------------
    def load_results(self) -> pd.DataFrame:
        """Read every run below ``results_dir`` into :attr:`df` (one row per run) and return it.

        Columns: ``name``, ``state`` (``finished``/``failed``/``running``/``stopped``), ``status``,
        ``run_id``, ``source``, ``path``, then the config (``lambda``, ``gamma``, ``w_lr``, ...)
        and the final metrics (``loss``, ``bpp``, ``psnr``, ``ms_ssim``, ...).

        Raises:
            DataError: If the folder is missing or holds no run.
        """
        runs, problems = scan_runs(self.results_dir, workers=self.workers)
        for problem in problems:
            self._warn(problem)
        if not runs:
            raise DataError(f"no runs found in {self.results_dir} (looked for run.json, "
                            "wandb/offline-run-*/run-*.wandb and synced wandb/run-*/files/)")
        self.df = runs_frame(runs)
        return self.df

    def frame(self) -> pd.DataFrame:
        """:attr:`df`, loading the results first when they are not loaded yet."""
        if self.df is None:
            self.load_results()
        assert self.df is not None
        return self.df

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("warning: %s", message)

    def notes(self) -> list[str]:
        """A fresh notes list for a table function: whatever it notes becomes a warning here."""
        return Notes(self._warn)

    # -- tables --------------------------------------------------------------------------------
    def recommend_parameters(self, top_k: int = 5, lambda_value: float | None = None, metric: str = "psnr",
                             maximize: bool = True) -> pd.DataFrame:
        """The ``top_k`` finished runs by ``metric``: ``gamma``, ``w_lr``, the metric, ``lambda``, ``name``.

        ``lambda_value=None`` ranks runs of all λ together; failed runs and runs whose metric is
        missing or NaN are never recommended.
        """
        return recommend(self.frame(), top_k, lambda_value, metric, maximize, notes=self.notes())

    def rd_curves(self) -> pd.DataFrame:
        """RD points (mean bpp and PSNR per λ) of every configuration; see :func:`rd_table`."""
        return rd_table(self.frame(), notes=self.notes())

    def bd_rates(self) -> pd.DataFrame:
        """BD-rate of each balanced configuration against the standard runs; see :func:`bd_rate_table`."""
        return bd_rate_table(self.rd_curves())

    def pareto_front(self) -> pd.DataFrame:
        """The runs on the bpp/PSNR Pareto front (fewest bits for their PSNR)."""
        table = pareto_table(self.frame(), notes=self.notes())
        return table[table["pareto"]].drop(columns="pareto").reset_index(drop=True)

    def parameter_importance(self, metric: str = "psnr", maximize: bool | None = None,
                             lambda_value: float | None = None) -> pd.DataFrame:
        """PED-ANOVA importance of each varying hyperparameter for ``metric``; see :func:`importance_table`."""
        maximize = MAXIMIZE.get(metric, True) if maximize is None else maximize
        return importance_table(self.frame(), metric, maximize, lambda_value, notes=self.notes())

    # -- figures -------------------------------------------------------------------------------
    def _out(self, output_dir: str | Path | None) -> Path:
        out = Path(output_dir).expanduser() if output_dir is not None else self.output_dir
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot write figures to {out} ({exc.strerror}); pass a writable output folder") from exc
        return out

    def plot_heatmap(self, param1: str, param2: str, metric: str, lambda_value: float | None = None,
                     output_dir: str | Path | None = None) -> Path:
        """Heatmap of the mean ``metric`` over ``param1`` x ``param2`` (one panel per λ when
        ``lambda_value`` is None); returns the PNG's path."""
        tables = heatmap_tables(self.frame(), param1, param2, metric, lambda_value, notes=self.notes())
        tag = "all" if lambda_value is None else f"{lambda_value:g}"
        path = self._out(output_dir) / f"heatmap_{metric}_{param1}_{param2}_lambda-{tag}.png"
        return plots.plot_heatmaps(tables, param1, param2, metric, path)

    def plot_comparison(self, param_name: str, output_dir: str | Path | None = None) -> Path:
        """PSNR and bpp (own axes) against ``param_name``, one panel per λ; returns the PNG's path."""
        table = comparison_table(self.frame(), param_name, notes=self.notes())
        return plots.plot_comparison(table, param_name, self._out(output_dir) / f"comparison_{param_name}.png")

    def plot_rd_curves(self, output_dir: str | Path | None = None) -> Path:
        """RD curves per configuration, BD-rates in the legend; returns the PNG's path."""
        rd = self.rd_curves()
        if rd.empty:
            raise DataError("no finished run with bpp and psnr: no RD curve to draw")
        return plots.plot_rd_curves(rd, bd_rate_table(rd), self._out(output_dir) / "rd_curves.png")

    def plot_pareto(self, output_dir: str | Path | None = None) -> Path:
        """All finished runs in the bpp/PSNR plane with their Pareto front; returns the PNG's path."""
        table = pareto_table(self.frame(), notes=self.notes())
        if table.empty:
            raise DataError("no finished run with bpp and psnr: no Pareto front to draw")
        return plots.plot_pareto(table, self._out(output_dir) / "pareto.png")

    def plot_importance(self, metric: str = "psnr", output_dir: str | Path | None = None) -> Path | None:
        """Bar chart of :meth:`parameter_importance`; ``None`` when there is too little data."""
        table = self.parameter_importance(metric)
        if table.empty:
            return None
        return plots.plot_importance(table, metric, self._out(output_dir) / f"importance_{metric}.png")

    def report(self, output_dir: str | Path | None = None, fmt: str = "md", metric: str = "psnr",
               lambda_value: float | None = None, maximize: bool | None = None, top_k: int = 5) -> Path:
        """Write a Markdown (``fmt="md"``) or HTML report with every table and figure; returns its path."""
        maximize = MAXIMIZE.get(metric, True) if maximize is None else maximize
        return write_report(self, self._out(output_dir), fmt=fmt, metric=metric, lambda_value=lambda_value,
                            maximize=maximize, top_k=top_k)
