"""Axis care shared by every PNG lictrain writes: readable ticks, limits that ignore a diverged
run, legends outside the data.

Kept apart from the plots themselves (``evaluation/rd.py``, ``analysis/plots.py``,
``analysis/gamma_plot.py``, the benchmarks) so that each figure gets the same conventions:

* ticks from ``MaxNLocator`` (at most ~7, round steps) and never matplotlib's offset notation
  (``1e-7+6.53626``);
* :func:`bulk_limits`: a diverged run (5 bpp, 6 dB, loss 1e3) does not squash the runs that
  matter; the points left off the axes are counted in a note on the figure;
* :func:`legend_outside`: legends sit beside (or below) the axes, never over a curve.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

#: a value further than this many interquartile ranges outside the quartiles is off the axes
OUTLIER_IQR = 3.0


def readable_ticks(ax: Any, *, x: bool = True, y: bool = True, nbins: int = 7) -> None:
    """Round, well-spaced ticks without offset notation on the linear axes of ``ax``."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    for enabled, axis, scale in ((x, ax.xaxis, ax.get_xscale()), (y, ax.yaxis, ax.get_yscale())):
        if not enabled or scale != "linear":
            continue
        axis.set_major_locator(MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]))
        formatter = ScalarFormatter(useOffset=False)
        formatter.set_scientific(False)
        axis.set_major_formatter(formatter)


def bulk_limits(values: Sequence[float], pad: float = 0.06, log: bool = False) -> tuple[float, float] | None:
    """Limits that hold the bulk of ``values``: finite ones within :data:`OUTLIER_IQR`
    interquartile ranges of the quartiles (in log10 when ``log``), padded by ``pad`` of the span.

    Returns ``None`` when no value is finite (leave matplotlib's own limits).
    """
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v) and (v > 0 or not log)], dtype=float)
    if arr.size == 0:
        return None
    data = np.log10(arr) if log else arr
    q1, q3 = np.percentile(data, [25, 75])
    fence = OUTLIER_IQR * max(q3 - q1, 1e-12)
    kept = data[(data >= q1 - fence) & (data <= q3 + fence)]
    lo, hi = float(kept.min()), float(kept.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    lo, hi = lo - pad * span, hi + pad * span
    return (10**lo, 10**hi) if log else (lo, hi)


def outlier_curves(curves: dict[Any, Sequence[float]], log: bool = False) -> set[Any]:
    """Curves (runs) whose median lies far from the others': more than a decade (``log``) or a
    quarter of the typical value away from the median of medians, and 4 robust spreads.

    Point-wise fences miss a diverged *run*: its many points form their own quartile.
    """
    medians: dict[Any, float] = {}
    for name, values in curves.items():
        finite = [v for v in values if v is not None and math.isfinite(v) and (v > 0 or not log)]
        if finite:
            medians[name] = float(np.median(np.log10(finite) if log else finite))
    if len(medians) < 3:
        return set()
    centre = float(np.median(list(medians.values())))
    spread = 1.4826 * float(np.median([abs(m - centre) for m in medians.values()]))
    tolerance = 1.0 if log else 0.25 * max(abs(centre), 1e-12)
    return {name for name, m in medians.items() if abs(m - centre) > max(4 * spread, tolerance)}


def limit_to_bulk(ax: Any, xs: Sequence[float] | None = None, ys: Sequence[float] | None = None,
                  groups: Sequence[Any] | None = None) -> int:
    """Set ``ax``'s limits to the bulk of the data; note on the axes how many points were left off.

    ``groups`` (one label per point, e.g. the run): whole curves far from the others (see
    :func:`outlier_curves`) are left off, then outlying points as by :func:`bulk_limits`.

    Returns:
        The number of points outside the new limits.
    """
    xs = list(xs) if xs is not None else None
    ys = list(ys) if ys is not None else None
    if groups is not None:
        groups = list(groups)
        off_groups: set[Any] = set()
        for values, log in ((xs, ax.get_xscale() == "log"), (ys, ax.get_yscale() == "log")):
            if values:
                by_group: dict[Any, list[float]] = {}
                for g, v in zip(groups, values):
                    by_group.setdefault(g, []).append(v)
                off_groups |= outlier_curves(by_group, log)
        keep = [g not in off_groups for g in groups]
        kx = [v for v, k in zip(xs, keep) if k] if xs else None
        ky = [v for v, k in zip(ys, keep) if k] if ys else None
    else:
        kx, ky = xs, ys
    xlim = bulk_limits(kx, log=ax.get_xscale() == "log") if kx else None
    ylim = bulk_limits(ky, log=ax.get_yscale() == "log") if ky else None
    n = len(xs or ys or [])
    off = 0
    for i in range(n):
        x = xs[i] if xs else None
        y = ys[i] if ys else None
        if (xlim and x is not None and math.isfinite(x) and not xlim[0] <= x <= xlim[1]) or \
           (ylim and y is not None and math.isfinite(y) and not ylim[0] <= y <= ylim[1]):
            off += 1
    if off:  # only a figure with outliers gets its limits changed
        if xlim:
            ax.set_xlim(*xlim)
        if ylim:
            ax.set_ylim(*ylim)
        ax.text(0.99, 0.01, f"{off} point(s) off the axes (diverged?)", transform=ax.transAxes, ha="right",
                va="bottom", fontsize="x-small", color="dimgray")
    return off


def legend_outside(ax: Any, *, where: str = "right", fontsize: str | float = "small", **kwargs: Any) -> Any:
    """A legend beside (``right``) or below (``below``) ``ax``, outside the data area."""
    handles, labels = kwargs.pop("handles", None), None
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
        if not handles:
            return None
    if where == "below":
        placement = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.14), "ncols": min(3, len(handles))}
    else:
        placement = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}
    if labels is None:  # handles given: their own labels
        return ax.legend(handles=handles, fontsize=fontsize, frameon=False, **placement, **kwargs)
    return ax.legend(handles, labels, fontsize=fontsize, frameon=False, **placement, **kwargs)
