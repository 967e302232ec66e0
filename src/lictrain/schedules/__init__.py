"""lictrain.schedules: gamma schedules for the balanced optimiser (LR schedules to come)."""

from lictrain.schedules.gamma import (
    STRATEGIES,
    AdaptiveGammaScheduler,
    HPCMGammaScheduler,
    MultiScaleGammaScheduler,
    build_gamma_scheduler,
    gamma_scheduler_from_args,
)

__all__ = [
    "STRATEGIES",
    "AdaptiveGammaScheduler",
    "HPCMGammaScheduler",
    "MultiScaleGammaScheduler",
    "build_gamma_scheduler",
    "gamma_scheduler_from_args",
]
