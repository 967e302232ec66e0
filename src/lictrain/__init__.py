"""lictrain: train learned image codecs with balanced rate-distortion optimisation.

Public API::

    from lictrain import (BalancedOptimizer, AdaptiveGammaScheduler, HPCMGammaScheduler,
                          CheckpointManager, HyperparameterAnalyzer)

Names are imported on first use, so ``import lictrain`` (and the CLI's start-up) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "BalancedOptimizer": "lictrain.optim.balanced",
    "AdaptiveGammaScheduler": "lictrain.schedules.gamma",
    "HPCMGammaScheduler": "lictrain.schedules.gamma",
    "CheckpointManager": "lictrain.checkpoint.manager",
    "HyperparameterAnalyzer": "lictrain.analysis.analyzer",
    "TrainConfig": "lictrain.config",
    "RateDistortionLoss": "lictrain.losses",
    "build_model": "lictrain.models",
    "register_model": "lictrain.models",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'lictrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
