"""``lictrain gamma-plot``: draw gamma schedules before spending GPU days on them.

Example::

    lictrain gamma-plot --strategy cosine hpcm --epochs 3000 --gamma 0.006 \\
        --gamma_final 0.001 --out gamma.png

Every flag also has a dashed spelling (``--gamma-final``, ``--step-epochs``, ...). With no
``--strategy`` all five strategies are drawn side by side. ``adaptive`` reacts to the loss, so
the plot drives it with a simulated plateauing loss ``L(t) = 1 + 4*exp(-5t/T)`` and says so.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lictrain.analysis.gamma_plot import SIMULATED_LOSS_FORMULA, gamma_curves, plot_gamma_curves
from lictrain.errors import ConfigError
from lictrain.schedules.gamma import (
    DEFAULT_GAMMA_DECAY,
    DEFAULT_STEP_EPOCHS,
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW_SIZE,
    STRATEGIES,
)

__all__ = ["add_parser", "build_parser", "run"]

HELP = "plot gamma schedules (all five strategies side by side by default)"


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--strategy", "--strategies", dest="strategy", nargs="+", choices=STRATEGIES,
        default=list(STRATEGIES), metavar="S",
        help=f"strategies to plot, any of {', '.join(STRATEGIES)} (default: all)",
    )
    p.add_argument("--epochs", dest="epochs", type=int, default=3000,
                   help="total epochs T (default: 3000)")
    p.add_argument("--gamma", dest="gamma", type=float, default=0.006,
                   help="initial gamma g0 (default: 0.006)")
    p.add_argument("--gamma_final", "--gamma-final", dest="gamma_final", type=float,
                   default=0.001,
                   help="final gamma gf for linear/cosine, floor for adaptive (default: 0.001)")
    p.add_argument("--step_epochs", "--step-epochs", dest="step_epochs", type=int, nargs="+",
                   default=list(DEFAULT_STEP_EPOCHS), metavar="E",
                   help="epochs where the step strategy decays gamma (default: 1000 2000)")
    p.add_argument("--gamma_decay", "--gamma-decay", dest="gamma_decay", type=float,
                   default=DEFAULT_GAMMA_DECAY,
                   help="decay factor of step and adaptive, in (0, 1] (default: 0.5)")
    p.add_argument("--adaptive_window", "--adaptive-window", dest="adaptive_window", type=int,
                   default=DEFAULT_WINDOW_SIZE,
                   help="adaptive: epochs over which loss improvement is measured (default: 50)")
    p.add_argument("--adaptive_threshold", "--adaptive-threshold", dest="adaptive_threshold",
                   type=float, default=DEFAULT_THRESHOLD,
                   help="adaptive: relative improvement below which gamma is cut (default: 0.01)")
    p.add_argument("--out", "-o", dest="out", default=None, metavar="PNG",
                   help="output image (default: gamma_schedules.png); an existing file needs --force")
    p.add_argument("--force", action="store_true", help="replace an existing output image")
    return p


#: longest schedule gamma-plot simulates (HPCM trains 3,000 epochs)
MAX_PLOT_EPOCHS = 1_000_000


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``gamma-plot`` subcommand to ``subparsers`` (from ``add_subparsers()``).

    Sets ``func=run`` as the parser's default.

    Returns:
        The subcommand's parser.
    """
    p = subparsers.add_parser("gamma-plot", help=HELP, description=HELP)
    _configure(p)
    p.set_defaults(func=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser with the ``gamma-plot`` flags (for tests and scripts)."""
    return _configure(argparse.ArgumentParser(prog="lictrain gamma-plot", description=HELP))


def run(args: argparse.Namespace) -> int:
    """Compute the requested curves, write the image and print where it went.

    Returns:
        0 on success.

    Raises:
        ConfigError: For a bad flag value (non-positive epochs or gamma, gamma_final above
            gamma for linear/cosine/adaptive, a decay outside (0, 1], ...).
    """
    if args.epochs is None or args.epochs <= 0:
        raise ConfigError(f"--epochs must be a positive integer, got {args.epochs}")
    if args.epochs > MAX_PLOT_EPOCHS:  # every epoch is simulated: 1e9 of them would run for hours
        raise ConfigError(f"--epochs {args.epochs} is more than gamma-plot simulates ({MAX_PLOT_EPOCHS:,}); plot a "
                          "shorter run (the schedules scale with T)")
    strategies = list(dict.fromkeys(args.strategy or STRATEGIES))
    curves = gamma_curves(
        strategies,
        args.epochs,
        initial_gamma=args.gamma,
        final_gamma=args.gamma_final,
        step_epochs=args.step_epochs,
        gamma_decay=args.gamma_decay,
        window_size=args.adaptive_window,
        threshold=args.adaptive_threshold,
    )
    notes: dict[str, str] = {}
    if "adaptive" in curves:
        notes["adaptive"] = f"simulated loss {SIMULATED_LOSS_FORMULA}"
        print(
            f"note: adaptive is driven by a simulated plateauing loss {SIMULATED_LOSS_FORMULA}; "
            "a real run cuts gamma where its own loss plateaus",
            file=sys.stderr,
        )
    if "hpcm" in curves:
        notes["hpcm"] = "ignores --gamma_final"
    if "step" in curves and not any(0 <= e <= args.epochs for e in args.step_epochs or ()):
        print(f"note: no --step_epochs within 0..{args.epochs}; step stays flat", file=sys.stderr)
    g0 = 0.006 if args.gamma is None else args.gamma
    gf = 0.001 if args.gamma_final is None else args.gamma_final
    title = f"gamma schedules (T={args.epochs}, g0={g0:g}, gf={gf:g})"
    from pathlib import Path

    from lictrain.cli.common import check_output

    check_output(Path(args.out or "gamma_schedules.png"), named=args.out is not None, force=args.force, flag="--out")
    out = plot_gamma_curves(curves, args.out or "gamma_schedules.png", title=title, notes=notes)
    summary = ", ".join(f"{k} {v[0]:.4g}->{v[-1]:.4g}" for k, v in curves.items())
    print(f"wrote {out} ({summary})")
    return 0
