"""Strategy names, defaults, setting validation and optimiser plumbing of the gamma schedules.

Shared by :mod:`lictrain.schedules.gamma_scheduler` and :mod:`lictrain.schedules.multiscale`
(:mod:`lictrain.schedules.gamma` re-exports the strategy names and defaults). A leaf: it imports
nothing of ours but the errors, so :mod:`lictrain.optim` can reuse :func:`is_real` cheaply.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from lictrain.errors import ConfigError
from lictrain.settings import is_real

#: Strategy names accepted by :class:`AdaptiveGammaScheduler`, in the guide's order.
STRATEGIES: tuple[str, ...] = ("linear", "cosine", "step", "adaptive", "hpcm")

#: Strategies that decay from ``initial_gamma`` to ``final_gamma`` and so need
#: ``final_gamma <= initial_gamma``.
USES_FINAL: frozenset[str] = frozenset({"linear", "cosine", "adaptive"})

DEFAULT_STEP_EPOCHS: tuple[int, ...] = (1000, 2000)
DEFAULT_GAMMA_DECAY: float = 0.5
DEFAULT_WINDOW_SIZE: int = 50
DEFAULT_THRESHOLD: float = 0.01

#: The strategy parameters every scheduler accepts as keyword arguments.
KWARGS: frozenset[str] = frozenset({"step_epochs", "gamma_decay", "window_size", "threshold"})

#: Version of the schedulers' ``state_dict()`` format (saved in checkpoints).
STATE_VERSION = 1


def positive_gamma(name: str, value: Any) -> float:
    """``value`` as a float, if it is a positive finite number.

    Raises:
        ConfigError: Otherwise (the message names ``name``).
    """
    if not is_real(value) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def make_setter(optimizer: Any) -> Callable[[Any], None] | None:
    """Return a function that writes gamma into ``optimizer`` (``None``: compute only).

    Chosen once at construction so that ``step()`` does no type dispatch.

    Raises:
        ConfigError: If ``optimizer`` has neither a ``gamma`` attribute nor param groups that
            carry ``"gamma"`` (a plain Adam: gamma scheduling needs the balanced optimiser).
    """
    if optimizer is None:
        return None
    if hasattr(optimizer, "gamma"):
        return functools.partial(setattr, optimizer, "gamma")
    groups = getattr(optimizer, "param_groups", None)
    if groups is not None and len(groups) > 0 and all("gamma" in g for g in groups):

        def set_groups(value: Any, _groups: Any = groups) -> None:
            for group in _groups:
                group["gamma"] = value

        return set_groups
    raise ConfigError(
        f"{type(optimizer).__name__} has no gamma to schedule (neither a 'gamma' attribute nor "
        "param groups with a 'gamma' key); gamma schedules need the balanced optimiser "
        "(--use_balanced)"
    )


def check_settings(
    strategy: str,
    initial_gamma: Any,
    final_gamma: Any,
    total_epochs: Any,
    kwargs: dict[str, Any],
) -> tuple[float, float | None, int, Sequence[Any], Any, Any, Any]:
    """Validate :class:`~lictrain.schedules.gamma.AdaptiveGammaScheduler`'s arguments.

    ``None`` strategy parameters take their defaults.

    Returns:
        ``(initial_gamma, final_gamma, total_epochs, step_epochs, gamma_decay, window_size,
        threshold)``, checked (gammas as floats, ``total_epochs`` as an integer).

    Raises:
        ConfigError: See :class:`~lictrain.schedules.gamma.AdaptiveGammaScheduler`.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"unknown gamma strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    unknown = sorted(set(kwargs) - KWARGS)
    if unknown:
        raise ConfigError(
            f"unknown gamma schedule argument(s) {', '.join(unknown)}; "
            f"expected {', '.join(sorted(KWARGS))}"
        )
    if isinstance(total_epochs, bool) or not isinstance(total_epochs, numbers.Integral):
        if is_real(total_epochs) and float(total_epochs).is_integer():
            total_epochs = int(total_epochs)
        else:
            raise ConfigError(f"total_epochs must be a positive integer, got {total_epochs!r}")
    if total_epochs <= 0:
        raise ConfigError(f"total_epochs must be a positive integer, got {total_epochs!r}")
    g0 = positive_gamma("initial_gamma", initial_gamma)
    if final_gamma is None:
        if strategy in USES_FINAL:
            raise ConfigError(
                f"the {strategy} gamma strategy needs final_gamma (--gamma_final)"
            )
        gf = None
    else:
        gf = positive_gamma("final_gamma", final_gamma)
        if strategy in USES_FINAL and gf > g0:
            raise ConfigError(
                f"final_gamma ({gf:g}) must not exceed initial_gamma ({g0:g}) for the "
                f"{strategy} strategy, which only decays gamma; lower --gamma_final"
            )

    step_epochs = kwargs.get("step_epochs")
    if step_epochs is None:
        step_epochs = DEFAULT_STEP_EPOCHS
    if isinstance(step_epochs, (str, bytes)) or not isinstance(step_epochs, Sequence):
        raise ConfigError(f"step_epochs must be a list of epochs, got {step_epochs!r}")
    for e in step_epochs:
        if not is_real(e) or not math.isfinite(e) or e < 0:
            raise ConfigError(
                f"step_epochs must be non-negative epochs, got {list(step_epochs)!r}"
            )
    gamma_decay = kwargs.get("gamma_decay")
    if gamma_decay is None:
        gamma_decay = DEFAULT_GAMMA_DECAY
    if not is_real(gamma_decay) or not 0 < gamma_decay <= 1:
        raise ConfigError(f"gamma_decay must be in (0, 1], got {gamma_decay!r}")
    window_size = kwargs.get("window_size")
    if window_size is None:
        window_size = DEFAULT_WINDOW_SIZE
    if (
        isinstance(window_size, bool)
        or not isinstance(window_size, numbers.Integral)
        or window_size < 1
    ):
        raise ConfigError(f"window_size must be a positive integer, got {window_size!r}")
    threshold = kwargs.get("threshold")
    if threshold is None:
        threshold = DEFAULT_THRESHOLD
    if not is_real(threshold) or not math.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
    return g0, gf, total_epochs, step_epochs, gamma_decay, window_size, threshold
