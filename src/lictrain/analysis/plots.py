"""Figures of the analysis tables: heatmaps, per-λ comparisons, RD curves, Pareto front, importance.

Every function takes a table computed by :mod:`lictrain.analysis.tables` and a PNG path,
draws with matplotlib's Agg canvas (no pyplot: no display, no global backend switch, safe in
threads) and returns the path it wrote.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lictrain.figures import bulk_limits, legend_outside, limit_to_bulk, readable_ticks

__all__ = ["plot_heatmaps", "plot_comparison", "plot_rd_curves", "plot_pareto", "plot_importance", "grid_shape"]

DPI = 110


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, cols) for ``n`` panels, at most ``max_cols`` wide."""
    cols = max(1, min(max_cols, n))
    return math.ceil(n / cols), cols


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def _lambda_title(lam: Any) -> str:
    return "all runs" if lam is None or (isinstance(lam, float) and math.isnan(lam)) else f"λ = {_fmt(lam)}"


def plot_heatmaps(tables: dict[Any, pd.DataFrame], param1: str, param2: str, metric: str, path: Path) -> Path:
    """One seaborn heatmap per λ (rows ``param1``, columns ``param2``, cells the mean ``metric``)."""
    import seaborn as sns

    rows, cols = grid_shape(len(tables))
    sample = next(iter(tables.values()))
    cell_w = max(4.5, 0.9 * sample.shape[1] + 2.5)
    cell_h = max(3.5, 0.6 * sample.shape[0] + 1.8)
    fig = _figure(cell_w * cols, cell_h * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (lam, table) in zip(axes, tables.items()):
        shown = table.copy()
        shown.index = [_fmt(v) for v in shown.index]
        shown.columns = [_fmt(v) for v in shown.columns]
        # the colour scale spans the bulk of the cells: one diverged configuration would grey out the
        # differences that matter (it keeps its printed value, at the scale's end colour)
        limits = bulk_limits(shown.to_numpy(float).ravel().tolist(), pad=0.0)
        vmin, vmax = limits if limits else (None, None)
        sns.heatmap(shown, annot=True, fmt=".4g", cmap="viridis", ax=ax, vmin=vmin, vmax=vmax,
                    cbar_kws={"label": metric})
        ax.set_xlabel(param2)
        ax.set_ylabel(param1)
        ax.set_title(f"{metric}: {_lambda_title(lam)}")
    for ax in axes[len(tables):]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_comparison(table: pd.DataFrame, param: str, path: Path, left: str = "psnr", right: str = "bpp") -> Path:
    """Per λ, ``left`` (PSNR) and ``right`` (bpp) against ``param``, each on its own y axis.

    ``table`` is :func:`lictrain.analysis.analyzer.comparison_table`: means with ±1 std bars.
    Any number of λ values: panels wrap at three per row.
    """
    lambdas = list(dict.fromkeys(table["lambda"].tolist()))
    rows, cols = grid_shape(len(lambdas))
    fig = _figure(5.2 * cols, 3.8 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    values = table[param].tolist()
    numeric = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values)
    positions: dict[Any, float] = {}
    if not numeric:
        positions = {v: float(i) for i, v in enumerate(sorted(dict.fromkeys(values), key=_fmt))}
    log_x = numeric and min(values) > 0 and max(values) / min(values) >= 10
    for ax, lam in zip(axes, lambdas):
        part = table[(table["lambda"] == lam) | (table["lambda"].isna() & pd.isna(lam))]
        part = part.sort_values(param, key=lambda s: s.map(positions) if positions else s)
        x = part[param].map(positions).to_numpy(float) if positions else part[param].to_numpy(float)
        twin = ax.twinx()
        h1 = ax.errorbar(x, part[f"{left}_mean"], yerr=part[f"{left}_std"].fillna(0), color="C0", marker="o",
                         capsize=3, label=left.upper() if left == "psnr" else left)
        h2 = twin.errorbar(x, part[f"{right}_mean"], yerr=part[f"{right}_std"].fillna(0), color="C1", marker="s",
                           linestyle="--", capsize=3, label=right)
        ax.set_ylabel("PSNR (dB)" if left == "psnr" else left, color="C0")
        twin.set_ylabel("bpp" if right == "bpp" else right, color="C1")
        ax.tick_params(axis="y", colors="C0")
        twin.tick_params(axis="y", colors="C1")
        ax.set_xlabel(param)
        if log_x:
            ax.set_xscale("log")
        if positions:
            ax.set_xticks(list(positions.values()), [_fmt(v) for v in positions])
        ax.set_title(_lambda_title(lam))
        ax.grid(alpha=0.3)
        readable_ticks(ax, x=not (log_x or positions))
        readable_ticks(twin, x=False)
        legend_outside(ax, where="below", handles=[h1, h2])
    for ax in axes[len(lambdas):]:
        ax.set_visible(False)
    fig.suptitle(f"PSNR and bpp vs {param}")
    return _save(fig, path)


def plot_rd_curves(rd: pd.DataFrame, bd: pd.DataFrame, path: Path, rate: str = "bpp", distortion: str = "psnr") -> Path:
    """One RD curve per configuration (standard runs dashed black), BD-rate vs standard in the legend."""
    configs = list(dict.fromkeys(rd["config"]))
    many = len(configs) > 8
    fig = _figure(10 if many else 7, 5)
    ax = fig.subplots()
    bd_of = dict(zip(bd["config"], bd["bd_rate_pct"])) if len(bd) else {}
    colors = iter(f"C{i % 10}" for i in range(len(configs) + 1))
    for config in configs:
        part = rd[rd["config"] == config].sort_values(rate)
        standard = bool(part["standard"].iloc[0])
        label = config
        value = bd_of.get(config)
        if value is not None and not math.isnan(value):
            label += f" (BD-rate {value:+.2f}%)"
        ax.plot(part[rate], part[distortion], marker="o", label=label,
                color="black" if standard else next(colors), linestyle="--" if standard else "-",
                linewidth=2 if standard else 1.3)
    ax.set_xlabel("bpp")
    ax.set_ylabel("PSNR (dB)" if distortion == "psnr" else distortion)
    ax.set_title("RD curves per configuration (one point per λ)")
    ax.grid(alpha=0.3)
    readable_ticks(ax)
    limit_to_bulk(ax, rd[rate].tolist(), rd[distortion].tolist())
    legend_outside(ax, fontsize="x-small" if many else "small")  # beside the axes: never over a curve
    return _save(fig, path)


def plot_pareto(table: pd.DataFrame, path: Path, rate: str = "bpp", distortion: str = "psnr") -> Path:
    """All runs in the bpp/PSNR plane (coloured by λ) and the Pareto front as a step line."""
    fig = _figure(7, 5)
    ax = fig.subplots()
    if "lambda" in table.columns and table["lambda"].notna().any():
        points = ax.scatter(table[rate], table[distortion], c=np.log10(table["lambda"].astype(float)),
                            cmap="viridis", s=18, alpha=0.8)
        fig.colorbar(points, ax=ax, label="log10 λ")
    else:
        ax.scatter(table[rate], table[distortion], s=18, alpha=0.8)
    front = table[table["pareto"]].sort_values(rate)
    ax.step(front[rate], front[distortion], where="post", color="crimson", linewidth=1.5,
            label=f"Pareto front ({len(front)} runs)")
    ax.scatter(front[rate], front[distortion], color="crimson", s=30, zorder=3)
    ax.set_xlabel("bpp")
    ax.set_ylabel("PSNR (dB)" if distortion == "psnr" else distortion)
    ax.set_title(f"bpp vs PSNR: {len(table)} finished runs")
    ax.grid(alpha=0.3)
    readable_ticks(ax)
    limit_to_bulk(ax, table[rate].tolist(), table[distortion].tolist())
    legend_outside(ax, where="below")
    return _save(fig, path)


def plot_importance(table: pd.DataFrame, metric: str, path: Path) -> Path:
    """Horizontal bars of parameter importance (PED-ANOVA) for ``metric``."""
    fig = _figure(6, 0.5 * len(table) + 1.6)
    ax = fig.subplots()
    ordered = table.sort_values("importance")
    ax.barh(ordered["param"].astype(str), ordered["importance"], color="C2")
    for y, value in enumerate(ordered["importance"]):
        ax.text(value, y, f" {value:.2f}", va="center", fontsize="small")
    ax.set_xlim(0, max(1.0, float(ordered["importance"].max()) * 1.15))
    ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
    ax.set_title(f"What decides {metric}")
    return _save(fig, path)
