"""Argument checks of :class:`~lictrain.optim.balanced.BalancedOptimizer`.

Every bad argument raises one :class:`~lictrain.errors.ConfigError` (a ``ValueError``) with a
one-line message naming the problem and the fix, before anything is built.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from lictrain.errors import ConfigError
from lictrain.settings import is_real

__all__ = ["METHODS", "UPDATE_MODES", "check_arguments", "check_betas", "finite_real", "task_values"]

METHODS = ("trajectory", "qp")
UPDATE_MODES = ("same-batch", "next-batch")


def finite_real(x: Any) -> bool:
    """Whether ``x`` is a finite real number (``bool`` excluded)."""
    return is_real(x) and math.isfinite(float(x))


def check_betas(betas: Any, name: str) -> None:
    """Raise :class:`ConfigError` unless ``betas`` is two numbers in ``[0, 1)``."""
    ok = (
        isinstance(betas, (tuple, list))
        and len(betas) == 2
        and all(finite_real(b) and 0.0 <= b < 1.0 for b in betas)
    )
    if not ok:
        raise ConfigError(
            f"{name} must be two numbers in [0, 1), got {betas!r}: pass e.g. (0.9, 0.999)"
        )


def check_arguments(
    *,
    n_tasks: Any,
    lr: Any,
    betas: Any,
    w_betas: Any,
    eps: Any,
    w_eps: Any,
    weight_decay: Any,
    max_grad_norm: Any,
    method: Any,
    balanced_update: Any,
    qp_ridge: Any,
    cautious_max_scale: Any,
) -> None:
    """Check the constructor's scalar arguments, in the order they are documented.

    Raises:
        ConfigError: For the first bad argument.
    """
    if not isinstance(n_tasks, int) or isinstance(n_tasks, bool) or n_tasks < 2:
        raise ConfigError(
            f"n_tasks must be an integer >= 2, got {n_tasks!r}: pass one task per loss term "
            "(2 for distortion + rate)"
        )
    if not finite_real(lr) or lr <= 0:
        raise ConfigError(f"lr must be a positive number, got {lr!r}: pass e.g. lr=1e-4")
    check_betas(betas, "betas")
    check_betas(w_betas, "w_betas")
    if not finite_real(eps) or eps < 0:
        raise ConfigError(f"eps must be a number >= 0, got {eps!r}: pass e.g. eps=1e-8")
    if not finite_real(w_eps) or w_eps < 0:
        raise ConfigError(f"w_eps must be a number >= 0, got {w_eps!r}: pass e.g. w_eps=1e-8")
    if not finite_real(weight_decay) or weight_decay < 0:
        raise ConfigError(
            f"weight_decay must be a number >= 0, got {weight_decay!r}: pass 0 to disable it"
        )
    if max_grad_norm is not None and (not finite_real(max_grad_norm) or max_grad_norm <= 0):
        raise ConfigError(
            f"max_grad_norm must be a positive number or None, got {max_grad_norm!r}: "
            "pass None to disable clipping"
        )
    _check_modes(method, balanced_update)
    if not finite_real(qp_ridge) or qp_ridge < 0:
        raise ConfigError(f"qp_ridge must be a number >= 0, got {qp_ridge!r}: pass e.g. 1e-4")
    if cautious_max_scale is not None and (
        not finite_real(cautious_max_scale) or cautious_max_scale < 1
    ):
        raise ConfigError(
            f"cautious_max_scale must be a number >= 1 or None, got {cautious_max_scale!r}: "
            "pass None for no cap"
        )


def _check_modes(method: Any, balanced_update: Any) -> None:
    if method not in METHODS:
        raise ConfigError(
            f"unknown balanced method {method!r}: use 'trajectory' (from scratch) or 'qp' "
            "(fine-tuning)"
        )
    if balanced_update not in UPDATE_MODES:
        raise ConfigError(
            f"unknown balanced_update {balanced_update!r}: use 'same-batch' or 'next-batch'"
        )


def task_values(value: Any, name: str, n_tasks: int, allow_negative: bool) -> list[float]:
    """A scalar or a length-``n_tasks`` sequence of finite numbers -> that many Python floats.

    Raises:
        ConfigError: For a non-number, a wrong length, a non-finite value or (unless
            ``allow_negative``) a negative one.
    """
    if is_real(value):
        items = [float(value)] * n_tasks
    else:
        try:
            items = [float(v) for v in (value.tolist() if isinstance(value, Tensor) else value)]
        except (TypeError, ValueError):
            raise ConfigError(
                f"{name} must be a number or a sequence of {n_tasks} numbers, got {value!r}"
            ) from None
        if len(items) != n_tasks:
            raise ConfigError(
                f"{name} has {len(items)} values but n_tasks={n_tasks}: give one "
                "value per task or a single number"
            )
    for v in items:
        if not math.isfinite(v) or (not allow_negative and v < 0):
            bound = "finite" if allow_negative else "finite and >= 0"
            raise ConfigError(f"{name} values must be {bound}, got {value!r}: fix {name}")
    return items
