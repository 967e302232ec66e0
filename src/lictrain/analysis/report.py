"""The analysis report: every table and figure of a results folder in one Markdown or HTML file.

Sections: runs (counts by state and source), recommendations (per λ and overall), gamma x w_lr
heatmap, comparison plots of each searched balanced setting, RD curves with BD-rate against
the standard runs, the Pareto front, parameter importance, the full runs table and every
warning met on the way. A section whose data is missing says why instead of failing the report.
Figures are PNGs next to the report (``figures/``), linked relatively.

The report reads the runs through any :class:`ReportSource` (in practice a
:class:`~lictrain.analysis.analyzer.HyperparameterAnalyzer`), so this module does not import
the analyzer: the analyzer imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pandas as pd

from lictrain.analysis.document import Document, html_table, inline_html, markdown_table
from lictrain.analysis.frame import META, lambda_mask, lambdas, varying_params
from lictrain.analysis.importance import MIN_IMPORTANCE_RUNS
from lictrain.analysis.plots import plot_importance, plot_pareto, plot_rd_curves
from lictrain.analysis.tables import bd_rate_table, pareto_table
from lictrain.errors import ConfigError, DataError

__all__ = ["write_report", "markdown_table", "html_table", "inline_html", "ReportSource"]

#: rows of the full runs table in the report (the CSV next to it has them all)
MAX_RUN_ROWS = 200


class ReportSource(Protocol):
    """What the report needs from an analyzer: the runs, its warnings, and its tables and figures."""

    results_dir: Path
    warnings: list[str]

    def frame(self) -> pd.DataFrame: ...

    def notes(self) -> list[str]: ...

    def recommend_parameters(self, top_k: int = 5, lambda_value: float | None = None, metric: str = "psnr",
                             maximize: bool = True) -> pd.DataFrame: ...

    def plot_heatmap(self, param1: str, param2: str, metric: str, lambda_value: float | None = None,
                     output_dir: str | Path | None = None) -> Path: ...

    def plot_comparison(self, param_name: str, output_dir: str | Path | None = None) -> Path: ...

    def rd_curves(self) -> pd.DataFrame: ...

    def parameter_importance(self, metric: str = "psnr", maximize: bool | None = None,
                             lambda_value: float | None = None) -> pd.DataFrame: ...


@dataclass
class _Request:
    """One report's inputs, shared by its sections."""

    source: ReportSource
    df: pd.DataFrame
    out_dir: Path
    metric: str
    lambda_value: float | None
    maximize: bool
    top_k: int

    @property
    def figures(self) -> Path:
        return self.out_dir / "figures"

    @property
    def scope(self) -> str:
        return "all λ" if self.lambda_value is None else f"λ = {self.lambda_value:g}"

    @property
    def finished(self) -> pd.DataFrame:
        return self.df[self.df["state"] == "finished"]


def write_report(analyzer: ReportSource, out_dir: Path, fmt: str = "md", metric: str = "psnr",
                 lambda_value: float | None = None, maximize: bool = True, top_k: int = 5) -> Path:
    """Write ``out_dir/report.md`` (or ``.html``), its figures under ``out_dir/figures`` and
    ``out_dir/runs.csv``; return the report's path.

    Raises:
        ConfigError: For an unknown ``fmt``.
        DataError: If the folder holds no run, or the metric or λ is found in no run.
    """
    if fmt not in ("md", "html"):
        raise ConfigError(f"--format must be md or html, got {fmt!r}")
    df = analyzer.frame()
    _check_request(df, metric, lambda_value)
    request = _Request(analyzer, df, out_dir, metric, lambda_value, maximize, top_k)
    doc = Document(fmt)
    for section in (_runs_section, _recommendations_section, _heatmap_section, _comparisons_section,
                    _rd_section, _pareto_section, _importance_section, _all_runs_section, _warnings_section):
        section(doc, request)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    title = f"Hyperparameter analysis: {analyzer.results_dir.name or analyzer.results_dir} ({stamp})"
    path = out_dir / ("report.md" if fmt == "md" else "report.html")
    path.write_text(doc.render(title), encoding="utf-8")
    return path


def _check_request(df: pd.DataFrame, metric: str, lambda_value: float | None) -> None:
    """Refuse a metric or λ that no run has before anything is written."""
    if metric not in df.columns:
        have = [c for c in df.columns if c not in META]
        raise DataError(f"no run has the metric {metric!r}; available: {', '.join(map(str, have))}")
    if lambda_value is not None:
        lambda_mask(df, lambda_value)  # raises naming the λ values there are


def _runs_section(doc: Document, r: _Request) -> None:
    df = r.df
    direction = "higher is better" if r.maximize else "lower is better"
    doc.heading("Runs")
    counts = df["state"].value_counts()
    doc.text(f"{len(df)} run(s) in `{r.source.results_dir}`: "
             + ", ".join(f"{n} {s}" for s, n in counts.items())
             + ". Sources: " + ", ".join(f"{n} {s}" for s, n in df["source"].value_counts().items()) + ".")
    doc.text(f"Metric: **{r.metric}** ({direction}); scope: {r.scope}. Only finished runs with a finite "
             f"{r.metric} are ranked, drawn or fitted.")


def _recommendations_section(doc: Document, r: _Request) -> None:
    doc.heading("Recommended settings")
    targets = [r.lambda_value] if r.lambda_value is not None else [lam for lam in lambdas(r.finished) if lam is not None]
    for lam in targets:
        try:
            table = r.source.recommend_parameters(top_k=r.top_k, lambda_value=lam, metric=r.metric,
                                                  maximize=r.maximize)
        except DataError as exc:
            doc.text(f"λ = {lam:g}: {exc}")
            continue
        doc.heading(f"λ = {lam:g}", 3)
        doc.table(table.drop(columns=["lambda"]))
    if r.lambda_value is None:
        try:
            doc.heading("All λ together", 3)
            doc.table(r.source.recommend_parameters(top_k=r.top_k, metric=r.metric, maximize=r.maximize))
        except DataError as exc:
            doc.text(str(exc))


def _heatmap_section(doc: Document, r: _Request) -> None:
    varying = varying_params(r.finished, exclude=("lambda",))
    doc.heading("gamma × w_lr")
    if "gamma" not in varying or "w_lr" not in varying:
        doc.text("No heatmap: gamma and w_lr do not both vary across the finished runs.")
        return
    try:
        path = r.source.plot_heatmap("gamma", "w_lr", r.metric, r.lambda_value, output_dir=r.figures)
        doc.figure(path, r.out_dir, f"mean {r.metric} over gamma and w_lr ({r.scope})")
    except DataError as exc:
        doc.text(f"No heatmap: {exc}")


def _comparisons_section(doc: Document, r: _Request) -> None:
    doc.heading("PSNR and bpp per setting")
    compared = [p for p in varying_params(r.finished, exclude=("lambda",)) if p not in ("use_balanced",)][:6]
    if not compared:
        doc.text("No comparison: no setting besides λ varies across the finished runs.")
    for param in compared:
        try:
            path = r.source.plot_comparison(param, output_dir=r.figures)
            doc.figure(path, r.out_dir, f"PSNR and bpp vs {param}, one panel per λ")
        except DataError as exc:
            doc.text(f"No comparison for {param}: {exc}")


def _rd_section(doc: Document, r: _Request) -> None:
    doc.heading("RD curves and BD-rate against the standard optimiser")
    rd = r.source.rd_curves()
    if rd.empty:
        doc.text("No RD curve: no finished run has both bpp and psnr.")
        return
    bd = bd_rate_table(rd)
    doc.figure(plot_rd_curves(rd, bd, r.figures / "rd_curves.png"), r.out_dir, "RD curve of each configuration")
    doc.text("BD-rate: average bitrate difference at equal PSNR against the standard (non-balanced) runs "
             "(bjontegaard, pchip); negative saves bits.")
    doc.table(bd)
    doc.heading("RD points", 3)
    doc.table(rd)


def _pareto_section(doc: Document, r: _Request) -> None:
    doc.heading("Pareto front (bpp vs PSNR)")
    try:
        table = pareto_table(r.df, notes=r.source.notes())
        if table.empty:
            doc.text("No Pareto front: no finished run has both bpp and psnr.")
        else:
            doc.figure(plot_pareto(table, r.figures / "pareto.png"), r.out_dir, "bpp vs PSNR, Pareto front in red")
            doc.table(table[table["pareto"]].drop(columns="pareto"))
    except DataError as exc:
        doc.text(f"No Pareto front: {exc}")


def _importance_section(doc: Document, r: _Request) -> None:
    doc.heading(f"Parameter importance for {r.metric}")
    importance = r.source.parameter_importance(r.metric, maximize=r.maximize, lambda_value=r.lambda_value)
    if importance.empty:
        doc.text(f"Not computed: needs >= {MIN_IMPORTANCE_RUNS} finished runs with a varying setting.")
        return
    doc.figure(plot_importance(importance, r.metric, r.figures / f"importance_{r.metric}.png"), r.out_dir,
               f"PED-ANOVA importance for {r.metric}")
    doc.table(importance)


def _all_runs_section(doc: Document, r: _Request) -> None:
    """The main columns of every run (the first :data:`MAX_RUN_ROWS`), all of them in ``runs.csv``."""
    df = r.df
    doc.heading("All runs")
    columns = [c for c in ("name", "state", "lambda", "gamma", "w_lr", "use_balanced", "psnr", "bpp", "loss",
                           "ms_ssim", r.metric) if c in df.columns]
    shown = df.loc[:, list(dict.fromkeys(columns))]
    df.to_csv(r.out_dir / "runs.csv", index=False)
    if len(shown) > MAX_RUN_ROWS:
        doc.text(f"First {MAX_RUN_ROWS} of {len(shown)} runs; all of them, every column: `runs.csv`.")
    else:
        doc.text("Every column of every run: `runs.csv`.")
    doc.table(shown.head(MAX_RUN_ROWS))


def _warnings_section(doc: Document, r: _Request) -> None:
    doc.heading("Warnings")
    if r.source.warnings:
        doc.bullets(list(r.source.warnings))
    else:
        doc.text("None.")
