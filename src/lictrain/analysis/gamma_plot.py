"""Gamma schedule curves: the data (:func:`gamma_curves`) apart from the drawing.

:func:`gamma_curves` steps each strategy's scheduler through epochs ``0..T`` (inclusive, so the
end value at ``T`` shows) and returns the values; :func:`plot_gamma_curves` draws them side
by side, one panel per strategy, into a PNG with matplotlib's Agg canvas (no pyplot, no
display, no global backend switch).

The ``adaptive`` strategy reacts to the loss, which a plot does not have. Unless real losses
are given (``losses=``), it is driven by a simulated, plateauing loss
``L(t) = 1 + 4 * exp(-5 t / T)`` (:func:`simulated_loss`): it improves fast early and
flattens out, so the curve shows where plateau cuts would fall for the chosen window and
threshold; real runs cut where their own loss plateaus.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lictrain.errors import ConfigError
from lictrain.figures import readable_ticks
from lictrain.schedules.gamma import STRATEGIES, build_gamma_scheduler

__all__ = ["gamma_curves", "plot_gamma_curves", "simulated_loss", "SIMULATED_LOSS_FORMULA"]

logger = logging.getLogger(__name__)

#: The simulated loss that drives ``adaptive`` in a plot, as text for captions and notes.
SIMULATED_LOSS_FORMULA = "L(t) = 1 + 4*exp(-5t/T)"

_CFG_KEYS = (
    "initial_gamma",
    "final_gamma",
    "step_epochs",
    "gamma_decay",
    "window_size",
    "threshold",
    "losses",
)

_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def simulated_loss(epochs: int) -> list[float]:
    """Return the simulated plateauing loss ``1 + 4 exp(-5 t / T)`` for ``t = 0..T``.

    Args:
        epochs: ``T``, a positive integer.

    Returns:
        ``T + 1`` deterministic loss values, falling from 5 towards 1.
    """
    return [1.0 + 4.0 * math.exp(-5.0 * t / epochs) for t in range(epochs + 1)]


def gamma_curves(
    strategies: Iterable[str] | None = None, epochs: int = 3000, **cfg: Any
) -> dict[str, list[float]]:
    """Compute each strategy's gamma for epochs ``0..epochs``.

    Args:
        strategies: Strategy names (default: all five, in the guide's order). Repeats are
            dropped.
        epochs: ``T``, the schedule's ``total_epochs``.
        **cfg: Schedule settings shared by all strategies: ``initial_gamma`` (0.006),
            ``final_gamma`` (0.001), ``step_epochs``, ``gamma_decay``, ``window_size``,
            ``threshold`` (``None``: the scheduler's defaults) and ``losses``, a sequence of at
            least ``epochs + 1`` losses that drives ``adaptive`` instead of
            :func:`simulated_loss`.

    Returns:
        Strategy name -> ``epochs + 1`` gamma values, in the order given.

    Raises:
        ConfigError: For an unknown strategy or setting, too few losses, or any invalid
            schedule setting.
    """
    unknown = sorted(set(cfg) - set(_CFG_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown gamma curve setting(s) {', '.join(unknown)}; expected {', '.join(_CFG_KEYS)}"
        )
    names = list(dict.fromkeys(STRATEGIES if strategies is None else strategies))
    if not names:
        raise ConfigError("no gamma strategy to plot; pass --strategy with one or more of "
                          + ", ".join(STRATEGIES))
    bad = [s for s in names if s not in STRATEGIES]
    if bad:
        raise ConfigError(
            f"unknown gamma strategy {bad[0]!r}; choose from {', '.join(STRATEGIES)}"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
    initial = cfg.get("initial_gamma")
    final = cfg.get("final_gamma")
    losses: Sequence[float] | None = cfg.get("losses")
    if "adaptive" in names:
        if losses is None:
            losses = simulated_loss(epochs)
        elif len(losses) < epochs + 1:
            raise ConfigError(
                f"adaptive curve needs {epochs + 1} losses (epochs 0..{epochs}), got {len(losses)}"
            )
    curves: dict[str, list[float]] = {}
    for name in names:
        sched = build_gamma_scheduler(
            None,
            strategy=name,
            initial_gamma=0.006 if initial is None else initial,
            final_gamma=0.001 if final is None else final,
            total_epochs=epochs,
            step_epochs=cfg.get("step_epochs"),
            gamma_decay=cfg.get("gamma_decay"),
            window_size=cfg.get("window_size"),
            threshold=cfg.get("threshold"),
        )
        if name == "adaptive":
            assert losses is not None
            curves[name] = [sched.step(t, losses[t]) for t in range(epochs + 1)]
        else:
            curves[name] = [sched.step(t) for t in range(epochs + 1)]
    return curves


def plot_gamma_curves(
    curves: Mapping[str, Sequence[float]],
    out_png: str | Path,
    *,
    title: str | None = None,
    notes: Mapping[str, str] | None = None,
) -> Path:
    """Draw gamma curves side by side, one panel per strategy, sharing the gamma axis.

    Args:
        curves: Strategy (or any label) -> gamma per epoch, epoch ``i`` at index ``i``.
        out_png: The output file; ``.png`` (also ``.pdf`` or ``.svg``). Parent folders are
            created.
        title: A figure title (default: "gamma schedules").
        notes: Optional label -> caption under that panel (say, the simulated loss).

    Returns:
        The path written.

    Raises:
        ConfigError: If ``curves`` is empty, a curve is empty or non-finite, or the file type
            is unsupported.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ConfigError("no gamma curves to plot")
    for name, values in curves.items():
        if len(values) == 0:
            raise ConfigError(f"gamma curve {name!r} is empty")
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"gamma curve {name!r} holds non-finite values")
    out = Path(out_png)
    fmt = _FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot write {out}: the output must end in .png (or .pdf, .svg)")
    out.parent.mkdir(parents=True, exist_ok=True)

    n = len(curves)
    fig = Figure(figsize=(3.6 * n + 0.6, 3.6), layout="constrained")
    fig.get_layout_engine().set(wspace=0.06)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    for i, (ax, (name, values)) in enumerate(zip(axes, curves.items())):
        ax.plot(range(len(values)), values, color=f"C{i}", linewidth=1.6)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0, max(len(values) - 1, 1))
        readable_ticks(ax, nbins=4)  # side-by-side panels: "3000" and the next "0" must not touch
        if notes and name in notes:
            ax.text(0.02, 0.02, notes[name], transform=ax.transAxes, fontsize=7,
                    va="bottom", ha="left", color="0.3")
    axes[0].set_ylabel("gamma")
    axes[0].set_ylim(bottom=0)
    fig.suptitle(title or "gamma schedules")
    fig.savefig(out, format=fmt, dpi=110)
    logger.info("wrote gamma plot %s", out)
    return out
