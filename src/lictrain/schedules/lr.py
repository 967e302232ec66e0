"""Learning-rate schedules.

``multistep`` is HPCM's: 1e-4 until epoch 2750 of 3000, then 3e-5, 1e-5 from 2850 and 1e-6
from 2950, i.e. factors 0.3, 0.1 and 0.01 of the base LR, with milestones scaled to the run's
length (``round(E·m/3000)``; milestones that collide in very short runs apply together).
``plateau`` is CompressAI's example: ReduceLROnPlateau on the test loss.
``cosine`` and ``linear`` are the short-budget recipe, stepped per *batch*: a linear warm-up
from 0 to the peak LR over ``warmup_steps``, then a cosine (or linear) decay to
``FINAL_LR_FACTOR`` x the peak at the last step. A warm-up is what lets a short run use a peak
LR several times higher than CompressAI's 1e-4 without the first steps blowing the entropy
model's scales up (see ``bench/time_to_quality.py``).
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from lictrain.errors import ConfigError

HPCM_EPOCHS = 3000
HPCM_MILESTONES = ((2750, 0.3), (2850, 0.1), (2950, 0.01))
#: per-epoch schedules (stepped after the test pass) and per-batch ones
EPOCH_SCHEDULES = ("multistep", "plateau")
STEP_SCHEDULES = ("cosine", "linear")
LR_SCHEDULES = EPOCH_SCHEDULES + STEP_SCHEDULES
#: the decaying schedules end at this fraction of the peak LR
FINAL_LR_FACTOR = 0.01
#: default warm-up of the decaying schedules, as a fraction of all steps
WARMUP_FRACTION = 0.05


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


def default_warmup_steps(total_steps: int) -> int:
    """Warm-up length when none is given: ``WARMUP_FRACTION`` of the run, at least one step."""
    return max(1, round(WARMUP_FRACTION * total_steps))


def warmup_decay_factor(step: int, total_steps: int, warmup_steps: int, shape: str = "cosine") -> float:
    """LR factor at batch ``step`` (0-based): linear warm-up, then cosine/linear decay.

    The warm-up reaches the peak (1.0) at step ``warmup_steps - 1``; the decay then falls to
    :data:`FINAL_LR_FACTOR` at the last step ``total_steps - 1`` and stays there after it.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    peak_step = max(warmup_steps - 1, 0)
    progress = min(1.0, (step - peak_step) / max(1, total_steps - 1 - peak_step))
    fall = 0.5 * (1.0 + math.cos(math.pi * progress)) if shape == "cosine" else 1.0 - progress
    return FINAL_LR_FACTOR + (1.0 - FINAL_LR_FACTOR) * fall


class WarmupDecay:
    """:func:`warmup_decay_factor` as an object whose length can change mid-run.

    A budgeted run re-plans its length as it measures its own pace
    (:mod:`lictrain.training.budget`); ``LambdaLR`` saves this object's attributes in its
    state, so a resumed run continues the same schedule.
    """

    def __init__(self, total_steps: int, warmup_steps: int, shape: str) -> None:
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.shape = shape

    def __call__(self, step: int) -> float:
        return warmup_decay_factor(step, self.total_steps, self.warmup_steps, self.shape)


def set_total_steps(scheduler: LRScheduler | ReduceLROnPlateau, total_steps: int) -> None:
    """Change the length of a warm-up/decay schedule (others are left alone) and apply it now."""
    if isinstance(scheduler, LambdaLR) and all(isinstance(f, WarmupDecay) for f in scheduler.lr_lambdas):
        for factor in scheduler.lr_lambdas:
            factor.total_steps = total_steps
        resync_lr(scheduler)


def is_per_step(kind: str) -> bool:
    """True for schedules stepped after every batch rather than every epoch."""
    return kind in STEP_SCHEDULES


def build_lr_scheduler(optimizer: torch.optim.Optimizer, kind: str, epochs: int, steps_per_epoch: int = 1,
                       warmup_steps: int | None = None) -> LRScheduler | ReduceLROnPlateau:
    """The LR schedule ``kind`` for ``optimizer`` over ``epochs`` x ``steps_per_epoch`` batches.

    ``multistep`` and ``plateau`` are stepped per epoch, ``cosine`` and ``linear`` per batch
    (see :func:`is_per_step`); ``warmup_steps`` (default :func:`default_warmup_steps`) only
    applies to the latter.
    """
    if kind in STEP_SCHEDULES:
        total = epochs * steps_per_epoch
        warmup = min(total, warmup_steps if warmup_steps is not None else default_warmup_steps(total))
        return LambdaLR(optimizer, WarmupDecay(total, warmup, kind))
    if kind == "multistep":
        milestones = hpcm_milestones(epochs)
        return LambdaLR(optimizer, lambda epoch: multistep_factor(epoch, milestones))
    if kind == "plateau":
        return ReduceLROnPlateau(optimizer, mode="min")
    raise ConfigError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {kind!r}")


def step_lr_scheduler(scheduler: LRScheduler | ReduceLROnPlateau, test_loss: float) -> None:
    """Advance one epoch (the plateau schedule watches the test loss)."""
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(test_loss)
    else:
        scheduler.step()


def lr_at(scheduler: LRScheduler | ReduceLROnPlateau, step: int) -> float | None:
    """The first group's LR of a per-step schedule at ``step`` (``None`` for other schedules)."""
    if isinstance(scheduler, LambdaLR):
        return float(scheduler.base_lrs[0] * scheduler.lr_lambdas[0](step))
    return None


def resync_lr(scheduler: LRScheduler | ReduceLROnPlateau) -> None:
    """After a resume, set the optimiser's LR from the (possibly re-scaled) schedule.

    The optimiser's saved state carries the LR of the old run; when a resumed run changes
    ``--epochs``, the multistep milestones (or the cosine's length) move and the LR must
    follow the new schedule.
    The plateau schedule's LR *is* its state, so it is left as saved.
    """
    if isinstance(scheduler, LambdaLR):
        for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
