"""Learning-rate schedules.

``multistep`` is HPCM's: 1e-4 until epoch 2750 of 3000, then 3e-5, 1e-5 from 2850 and 1e-6
from 2950, i.e. factors 0.3, 0.1 and 0.01 of the base LR, with milestones scaled to the run's
length (``round(E·m/3000)``; milestones that collide in very short runs apply together).
``plateau`` is CompressAI's example: ReduceLROnPlateau on the test loss.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from lictrain.errors import ConfigError

HPCM_EPOCHS = 3000
HPCM_MILESTONES = ((2750, 0.3), (2850, 0.1), (2950, 0.01))


def hpcm_milestones(epochs: int) -> list[tuple[int, float]]:
    """HPCM's (epoch, LR factor) milestones scaled from 3000 epochs to ``epochs``."""
    return [(round(epochs * m / HPCM_EPOCHS), factor) for m, factor in HPCM_MILESTONES]


def multistep_factor(epoch: int, milestones: list[tuple[int, float]]) -> float:
    """LR factor at ``epoch``: that of the last milestone reached (1.0 before the first)."""
    factor = 1.0
    for milestone, value in milestones:
        if epoch >= milestone:
            factor = value
    return factor


def build_lr_scheduler(optimizer: torch.optim.Optimizer, kind: str, epochs: int) -> LRScheduler | ReduceLROnPlateau:
    """The per-epoch LR schedule ``kind`` (``multistep`` or ``plateau``) for ``optimizer``."""
    if kind == "multistep":
        milestones = hpcm_milestones(epochs)
        return LambdaLR(optimizer, lambda epoch: multistep_factor(epoch, milestones))
    if kind == "plateau":
        return ReduceLROnPlateau(optimizer, mode="min")
    raise ConfigError(f"--lr-schedule must be multistep or plateau, got {kind!r}")


def step_lr_scheduler(scheduler: LRScheduler | ReduceLROnPlateau, test_loss: float) -> None:
    """Advance one epoch (the plateau schedule watches the test loss)."""
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(test_loss)
    else:
        scheduler.step()


def resync_lr(scheduler: LRScheduler | ReduceLROnPlateau) -> None:
    """After a resume, set the optimiser's LR from the (possibly re-scaled) schedule.

    The optimiser's saved state carries the LR of the old run; when a resumed run changes
    ``--epochs``, the multistep milestones move and the LR must follow the new schedule.
    The plateau schedule's LR *is* its state, so it is left as saved.
    """
    if isinstance(scheduler, LambdaLR):
        for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
