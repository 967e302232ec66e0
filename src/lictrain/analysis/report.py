"""The analysis report: every table and figure of a results folder in one Markdown or HTML file.

Sections: runs (counts by state and source), recommendations (per λ and overall), gamma x w_lr
heatmap, comparison plots of each searched balanced setting, RD curves with BD-rate against
the standard runs, the Pareto front, parameter importance, the full runs table and every
warning met on the way. A section whose data is missing says why instead of failing the report.
Figures are PNGs next to the report (``figures/``), linked relatively.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lictrain.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from lictrain.analysis.analyzer import HyperparameterAnalyzer

__all__ = ["write_report", "markdown_table", "html_table", "inline_html"]

#: rows of the full runs table in the report (the CSV next to it has them all)
MAX_RUN_ROWS = 200


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "–" if math.isnan(value) else f"{float(value):.4g}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    if df.empty:
        return "_(none)_\n"
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    lines = [header, rule]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(none)</em></p>\n"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def inline_html(text: str) -> str:
    """The report's inline Markdown (``**bold**``, `` `code` ``, links) as HTML. CommonMark by
    markdown-it-py with raw HTML off: run names and values from run folders are escaped, never markup."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).renderInline(text)


class _Doc:
    """Collects blocks, renders Markdown or HTML."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"{'#' * level} {text}\n" if self.fmt == "md" else f"<h{level}>{inline_html(text)}</h{level}>\n")

    def text(self, text: str) -> None:
        self.parts.append(f"{text}\n" if self.fmt == "md" else f"<p>{inline_html(text)}</p>\n")

    def bullets(self, items: list[str]) -> None:
        if not items:
            return
        if self.fmt == "md":
            self.parts.append("".join(f"- {i}\n" for i in items))
        else:
            self.parts.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in items) + "</ul>\n")

    def table(self, df: pd.DataFrame) -> None:
        self.parts.append(markdown_table(df) if self.fmt == "md" else html_table(df))

    def figure(self, path: Path, root: Path, caption: str) -> None:
        rel = path.relative_to(root).as_posix()
        if self.fmt == "md":
            self.parts.append(f"![{caption}]({rel})\n")
        else:
            self.parts.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
                              f"<figcaption>{html.escape(caption)}</figcaption></figure>\n")

    def render(self, title: str) -> str:
        body = "\n".join(self.parts)
        if self.fmt == "md":
            return f"# {title}\n\n{body}"
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
                 "text-align:right}th{background:#f3f3f3}img{max-width:100%}figcaption{color:#555}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}</body></html>\n")


def write_report(analyzer: HyperparameterAnalyzer, out_dir: Path, fmt: str = "md", metric: str = "psnr",
                 lambda_value: float | None = None, maximize: bool = True, top_k: int = 5) -> Path:
    """Write ``out_dir/report.md`` (or ``.html``), its figures under ``out_dir/figures`` and
    ``out_dir/runs.csv``; return the report's path.

    Raises:
        ConfigError: For an unknown ``fmt``.
        DataError: If the folder holds no run, or the metric or λ is found in no run.
    """
    from lictrain.analysis import analyzer as A

    if fmt not in ("md", "html"):
        raise ConfigError(f"--format must be md or html, got {fmt!r}")
    df = analyzer._frame()
    if metric not in df.columns:
        have = [c for c in df.columns if c not in A.META]
        raise DataError(f"no run has the metric {metric!r}; available: {', '.join(map(str, have))}")
    if lambda_value is not None:
        A._lambda_mask(df, lambda_value)  # raises naming the λ values there are
    figures = out_dir / "figures"
    doc = _Doc(fmt)
    direction = "higher is better" if maximize else "lower is better"
    scope = "all λ" if lambda_value is None else f"λ = {lambda_value:g}"

    # -- runs ---------------------------------------------------------------------------------
    doc.heading("Runs")
    counts = df["state"].value_counts()
    doc.text(f"{len(df)} run(s) in `{analyzer.results_dir}`: "
             + ", ".join(f"{n} {s}" for s, n in counts.items())
             + f". Sources: " + ", ".join(f"{n} {s}" for s, n in df["source"].value_counts().items()) + ".")
    doc.text(f"Metric: **{metric}** ({direction}); scope: {scope}. Only finished runs with a finite "
             f"{metric} are ranked, drawn or fitted.")
    lambdas = A._lambdas(df[df["state"] == "finished"])

    # -- recommendations --------------------------------------------------------------------
    doc.heading("Recommended settings")
    targets = [lambda_value] if lambda_value is not None else [lam for lam in lambdas if lam is not None]
    for lam in targets:
        try:
            table = analyzer.recommend_parameters(top_k=top_k, lambda_value=lam, metric=metric, maximize=maximize)
        except DataError as exc:
            doc.text(f"λ = {lam:g}: {exc}")
            continue
        doc.heading(f"λ = {lam:g}", 3)
        doc.table(table.drop(columns=["lambda"]))
    if lambda_value is None:
        try:
            doc.heading("All λ together", 3)
            doc.table(analyzer.recommend_parameters(top_k=top_k, metric=metric, maximize=maximize))
        except DataError as exc:
            doc.text(str(exc))

    # -- heatmap and comparisons -------------------------------------------------------------
    varying = A.varying_params(df[df["state"] == "finished"], exclude=("lambda",))
    doc.heading("gamma × w_lr")
    if "gamma" in varying and "w_lr" in varying:
        try:
            path = analyzer.plot_heatmap("gamma", "w_lr", metric, lambda_value, output_dir=figures)
            doc.figure(path, out_dir, f"mean {metric} over gamma and w_lr ({scope})")
        except DataError as exc:
            doc.text(f"No heatmap: {exc}")
    else:
        doc.text("No heatmap: gamma and w_lr do not both vary across the finished runs.")
    doc.heading("PSNR and bpp per setting")
    compared = [p for p in varying if p not in ("use_balanced",)][:6]
    if not compared:
        doc.text("No comparison: no setting besides λ varies across the finished runs.")
    for param in compared:
        try:
            path = analyzer.plot_comparison(param, output_dir=figures)
            doc.figure(path, out_dir, f"PSNR and bpp vs {param}, one panel per λ")
        except DataError as exc:
            doc.text(f"No comparison for {param}: {exc}")

    # -- RD and BD-rate ------------------------------------------------------------------
    doc.heading("RD curves and BD-rate against the standard optimiser")
    rd = analyzer.rd_curves()
    if rd.empty:
        doc.text("No RD curve: no finished run has both bpp and psnr.")
    else:
        bd = A.bd_rate_table(rd)
        from lictrain.analysis.plots import plot_rd_curves

        doc.figure(plot_rd_curves(rd, bd, figures / "rd_curves.png"), out_dir, "RD curve of each configuration")
        doc.text("BD-rate: average bitrate difference at equal PSNR against the standard (non-balanced) runs "
                 "(bjontegaard, pchip); negative saves bits.")
        doc.table(bd)
        doc.heading("RD points", 3)
        doc.table(rd)

    # -- Pareto ---------------------------------------------------------------------------
    doc.heading("Pareto front (bpp vs PSNR)")
    try:
        table = A.pareto_table(df, notes=analyzer._notes())
        if table.empty:
            doc.text("No Pareto front: no finished run has both bpp and psnr.")
        else:
            from lictrain.analysis.plots import plot_pareto

            doc.figure(plot_pareto(table, figures / "pareto.png"), out_dir, "bpp vs PSNR, Pareto front in red")
            doc.table(table[table["pareto"]].drop(columns="pareto"))
    except DataError as exc:
        doc.text(f"No Pareto front: {exc}")

    # -- importance -------------------------------------------------------------------------
    doc.heading(f"Parameter importance for {metric}")
    importance = analyzer.parameter_importance(metric, maximize=maximize, lambda_value=lambda_value)
    if importance.empty:
        doc.text(f"Not computed: needs >= {A.MIN_IMPORTANCE_RUNS} finished runs with a varying setting.")
    else:
        from lictrain.analysis.plots import plot_importance

        doc.figure(plot_importance(importance, metric, figures / f"importance_{metric}.png"), out_dir,
                   f"PED-ANOVA importance for {metric}")
        doc.table(importance)

    # -- all runs -----------------------------------------------------------------------------
    doc.heading("All runs")
    columns = [c for c in ("name", "state", "lambda", "gamma", "w_lr", "use_balanced", "psnr", "bpp", "loss",
                           "ms_ssim", metric) if c in df.columns]
    shown = df.loc[:, list(dict.fromkeys(columns))]
    csv = out_dir / "runs.csv"
    df.to_csv(csv, index=False)
    if len(shown) > MAX_RUN_ROWS:
        doc.text(f"First {MAX_RUN_ROWS} of {len(shown)} runs; all of them, every column: `runs.csv`.")
    else:
        doc.text("Every column of every run: `runs.csv`.")
    doc.table(shown.head(MAX_RUN_ROWS))

    doc.heading("Warnings")
    if analyzer.warnings:
        doc.bullets(list(analyzer.warnings))
    else:
        doc.text("None.")

    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    title = f"Hyperparameter analysis: {analyzer.results_dir.name or analyzer.results_dir} ({stamp})"
    path = out_dir / ("report.md" if fmt == "md" else "report.html")
    path.write_text(doc.render(title), encoding="utf-8")
    return path
