"""Axis care for every PNG: bulk limits without a diverged run, readable ticks, outside legends."""

from __future__ import annotations

import math

import pytest

from lictrain.figures import bulk_limits, legend_outside, limit_to_bulk, outlier_curves, readable_ticks


def axes():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def test_bulk_limits_drop_a_far_outlier_and_pad_the_span() -> None:
    lo, hi = bulk_limits([0.1, 0.2, 0.3, 0.4, 12.5], pad=0.0)
    assert (lo, hi) == pytest.approx((0.1, 0.4))
    lo, hi = bulk_limits([1.0, 2.0, 3.0], pad=0.1)
    assert (lo, hi) == pytest.approx((0.8, 3.2))
    assert bulk_limits([math.nan, math.inf]) is None
    lo, hi = bulk_limits([2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 1000.0], pad=0.0, log=True)
    assert (lo, hi) == pytest.approx((2.0, 5.0))


def test_a_diverged_run_is_an_outlier_curve_even_with_many_points() -> None:
    curves = {"a": [16, 17, 18], "b": [16, 18, 20], "c": [16, 19, 22], "diverged": [6, 6, 6]}
    assert outlier_curves(curves) == {"diverged"}
    losses = {"a": [12, 8, 6], "b": [12, 7, 5], "c": [12, 6, 4], "diverged": [900, 900, 900]}
    assert outlier_curves(losses, log=True) == {"diverged"}
    assert outlier_curves({"a": [1.0], "b": [50.0]}) == set()  # two curves: no majority to side with


def test_limit_to_bulk_counts_the_points_it_leaves_off() -> None:
    fig, ax = axes()
    ys = [16, 17, 18, 16, 18, 20, 16, 19, 22, 6, 6, 6]
    ax.plot(range(12), ys)
    assert limit_to_bulk(ax, ys=ys, groups=[g for g in "abcd" for _ in range(3)]) == 3
    lo, hi = ax.get_ylim()
    assert lo > 6 and hi >= 22
    assert any("3 point(s) off the axes" in t.get_text() for t in ax.texts)
    fig, ax = axes()
    ax.plot([0, 1, 2], [1, 2, 3])
    assert limit_to_bulk(ax, ys=[1, 2, 3]) == 0 and not ax.texts  # nothing to leave off: limits untouched


def test_ticks_never_use_offsets_and_legends_sit_outside() -> None:
    fig, ax = axes()
    ax.plot([0, 1, 2], [6.5362600, 6.5362601, 6.5362602], label="degenerate")
    readable_ticks(ax)
    fig.canvas.draw()
    assert ax.yaxis.get_major_formatter().get_offset() == ""
    legend = legend_outside(ax)
    fig.canvas.draw()
    box, area = legend.get_window_extent(), ax.get_window_extent()
    assert box.x0 >= area.x1  # beside the axes, over no data
