"""Build a gamma scheduler from its settings or from training flags.

Also importable from :mod:`lictrain.schedules.gamma`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lictrain.schedules.gamma_scheduler import AdaptiveGammaScheduler, HPCMGammaScheduler

__all__ = ["build_gamma_scheduler", "gamma_scheduler_from_args"]


def build_gamma_scheduler(
    optimizer: Any,
    strategy: str,
    initial_gamma: float,
    final_gamma: float | None,
    total_epochs: int,
    *,
    step_epochs: Sequence[float] | None = None,
    gamma_decay: float | None = None,
    window_size: int | None = None,
    threshold: float | None = None,
) -> AdaptiveGammaScheduler:
    """Build the scheduler for ``strategy`` (:class:`HPCMGammaScheduler` for ``hpcm``).

    ``None`` strategy parameters take their defaults.

    Raises:
        ConfigError: For any invalid setting (see :class:`AdaptiveGammaScheduler`).
    """
    kwargs = {
        "step_epochs": step_epochs,
        "gamma_decay": gamma_decay,
        "window_size": window_size,
        "threshold": threshold,
    }
    if strategy == "hpcm":
        return HPCMGammaScheduler(
            optimizer,
            total_epochs=total_epochs,
            initial_gamma=initial_gamma,
            final_gamma=final_gamma,
            **kwargs,
        )
    return AdaptiveGammaScheduler(
        optimizer,
        strategy=strategy,
        initial_gamma=initial_gamma,
        final_gamma=final_gamma,
        total_epochs=total_epochs,
        **kwargs,
    )


def gamma_scheduler_from_args(optimizer: Any, args: Any) -> AdaptiveGammaScheduler:
    """Build the scheduler from training flags, as the guide's ``train.py`` does.

    Reads ``args.gamma_strategy``, ``args.gamma``, ``args.gamma_final``, ``args.epochs`` and,
    when present, ``args.step_epochs``, ``args.gamma_decay``, ``args.adaptive_window`` and
    ``args.adaptive_threshold`` (missing or ``None``: the defaults).

    Raises:
        ConfigError: For any invalid setting.
    """
    return build_gamma_scheduler(
        optimizer,
        strategy=args.gamma_strategy,
        initial_gamma=args.gamma,
        final_gamma=getattr(args, "gamma_final", None),
        total_epochs=args.epochs,
        step_epochs=getattr(args, "step_epochs", None),
        gamma_decay=getattr(args, "gamma_decay", None),
        window_size=getattr(args, "adaptive_window", None),
        threshold=getattr(args, "adaptive_threshold", None),
    )
