"""Checks of the arguments of :class:`CheckpointManager` and its ``save_checkpoint``.

Bad settings raise :class:`ConfigError` before anything is written; a metric value that
cannot be ranked (NaN, inf) is accepted with a warning: the checkpoint is kept as a recent
one but never ranked best.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

from lictrain.errors import ConfigError

# The manager's logger: records keep the name they had before the split.
log = logging.getLogger("lictrain.checkpoint.manager")

_RESERVED_KEYS = frozenset(
    {"epoch", "model_state", "optimizer_state", "metric", "metric_value", "lictrain"}
)


def check_settings(keep_last_n: Any, keep_best: Any, metric: Any) -> None:
    """Check the retention settings of a manager.

    Raises:
        ConfigError: For a bad ``keep_last_n``, ``keep_best`` or ``metric``.
    """
    if isinstance(keep_last_n, bool) or not isinstance(keep_last_n, int) or keep_last_n < 1:
        raise ConfigError(
            f"keep_last_n must be an integer >= 1 (the latest checkpoint is needed to "
            f"resume), got {keep_last_n!r}"
        )
    if isinstance(keep_best, bool) or not isinstance(keep_best, int) or keep_best < 0:
        raise ConfigError(f"keep_best must be an integer >= 0, got {keep_best!r}")
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"metric must be a non-empty name such as 'loss', got {metric!r}")


def save_arguments(
    epoch: Any, metric_value: Any, is_best: bool | None, extra: Mapping[str, Any], metric: str
) -> tuple[int, float | None, bool, bool]:
    """Check ``save_checkpoint``'s arguments; warn about a metric that cannot be ranked.

    Returns:
        ``(epoch, metric value, whether it is finite, whether it may be ranked best)``.

    Raises:
        ConfigError: For a bad epoch, an extra entry named like a reserved key or a metric
            value that is not a number.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) and not _is_int_like(epoch):
        raise ConfigError(f"epoch must be an integer, got {epoch!r}")
    epoch = int(epoch)
    if epoch < 0:
        raise ConfigError(f"epoch must be >= 0, got {epoch}")
    clash = _RESERVED_KEYS.intersection(extra)
    if clash:
        raise ConfigError(
            f"extra checkpoint entries {sorted(clash)} clash with reserved keys; rename them"
        )
    value = _metric_float(metric_value, metric)
    finite = value is not None and math.isfinite(value)
    if value is not None and not finite:
        log.warning(
            "%s=%s at epoch %d is not finite; checkpoint kept as a recent one but never "
            "ranked best", metric, value, epoch,
        )
    if is_best is not None and not is_best:
        eligible = False
    else:
        eligible = finite
        if is_best and not finite:
            log.warning(
                "is_best=True at epoch %d but %s=%s cannot be ranked; not ranked best",
                epoch, metric, value,
            )
    return epoch, value, finite, eligible


def _is_int_like(value: Any) -> bool:
    try:
        return int(value) == value and not isinstance(value, float)
    except (TypeError, ValueError):
        return False


def _metric_float(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ConfigError(f"metric_value for {name!r} must be a scalar, got shape {tuple(value.shape)}")
        return float(value.detach().cpu().item())
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metric_value for {name!r} must be a number, got {value!r}") from exc
