"""Training strategies: how a batch becomes an update, and what is scheduled per epoch.

``standard``: Adam on ``λD + R``. ``balanced``: :class:`lictrain.BalancedOptimizer` on the
task losses, with an optional gamma schedule. Both expose the same small interface, so the
loop in :mod:`lictrain.training.fit` does not branch on the method.
"""

from __future__ import annotations

from typing import Any

import torch

from lictrain.config import TrainConfig
from lictrain.losses import RateDistortionLoss
from lictrain.training.balanced import BalancedStrategy
from lictrain.training.distributed import DistInfo
from lictrain.training.param_groups import parameter_groups
from lictrain.training.steps import StandardStep, StepOutcome


class StandardStrategy:
    """Adam on ``λD + R`` (with aux step, clipping and non-finite skipping)."""

    def __init__(self, cfg: TrainConfig, trained: torch.nn.Module, model: torch.nn.Module,
                 criterion: RateDistortionLoss, net_params: list[torch.nn.Parameter],
                 aux_optimizer: torch.optim.Optimizer | None) -> None:
        groups = parameter_groups(model, net_params, cfg.peak_lr, cfg.lr_groups)
        self.optimizer = torch.optim.Adam(groups, lr=cfg.peak_lr)
        self._step = StandardStep(trained, criterion, self.optimizer, aux_optimizer, net_params, cfg.clip_max_norm,
                                  aux_model=model)

    def step(self, batch: torch.Tensor) -> StepOutcome:
        return self._step(batch)

    def begin_epoch(self, epoch: int) -> None:
        pass

    def epoch_values(self) -> dict[str, float]:
        return {}

    def sync_tensor(self) -> torch.Tensor | None:
        return None

    def end_epoch(self, epoch: int, test_loss: float) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self._step.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._step.skipped = int(state.get("skipped", 0))


def build_strategy(cfg: TrainConfig, trained: torch.nn.Module, model: torch.nn.Module,
                   criterion: RateDistortionLoss, net_params: list[torch.nn.Parameter],
                   aux_optimizer: torch.optim.Optimizer | None, alignment: int, device: torch.device,
                   dist: DistInfo | None = None) -> Any:
    """The strategy ``cfg`` asks for (standard, or balanced with its gamma schedule).

    ``trained`` is what the step runs forward/backward through (the DDP wrapper under
    torchrun, else ``model``); ``model`` is the bare module (aux loss, no-grad passes).
    """
    if cfg.use_balanced:
        return BalancedStrategy(cfg, trained, model, criterion, net_params, aux_optimizer, alignment, device,
                                dist or DistInfo())
    return StandardStrategy(cfg, trained, model, criterion, net_params, aux_optimizer)
