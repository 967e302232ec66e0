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
from typing import Any

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

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


class LRSchedule:
    """The LR as a pure function of the global step: ``lr(step) = base_lr x factor(step)``.

    ``cosine``/``linear``: :func:`warmup_decay_factor` over ``total_steps`` (a budget that
    re-plans its length changes that one number); ``multistep``: HPCM's milestones, by the
    step's epoch; ``plateau``: CompressAI's ReduceLROnPlateau on the test loss, whose LR *is*
    its state (saved in :meth:`state_dict`). Each optimiser group keeps its own base LR
    (``--lr-groups``). Nothing else is state: a resumed run sets the LR of the step it
    continues from, and checkpoints of the older LambdaLR-based schedules still resume.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, epochs: int, steps_per_epoch: int = 1,
                 warmup_steps: int | None = None, total_steps: int | None = None) -> None:
        if kind not in LR_SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {kind!r}")
        self.optimizer, self.kind = optimizer, kind
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.epochs = epochs
        self.total_steps = total_steps or epochs * self.steps_per_epoch
        self.warmup_steps = min(self.total_steps, warmup_steps if warmup_steps is not None
                                else default_warmup_steps(self.total_steps))
        self.base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self.plateau = ReduceLROnPlateau(optimizer, mode="min") if kind == "plateau" else None
        self.apply(0)

    @property
    def per_step(self) -> bool:
        return is_per_step(self.kind)

    def factor(self, step: int) -> float:
        """The LR factor of global training step ``step`` (0-based)."""
        if self.per_step:
            return warmup_decay_factor(step, self.total_steps, self.warmup_steps, self.kind)
        if self.kind == "multistep":
            return multistep_factor(step // self.steps_per_epoch, hpcm_milestones(self.epochs))
        return 1.0

    def lr(self, step: int) -> float:
        """The first group's LR at ``step`` (under plateau: the current one)."""
        if self.plateau is not None:
            return float(self.optimizer.param_groups[0]["lr"])
        return self.base_lrs[0] * self.factor(step)

    def apply(self, step: int) -> None:
        """Set every group's LR for training step ``step`` (plateau: left as it is)."""
        if self.plateau is not None:
            return
        factor = self.factor(step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def end_epoch(self, test_loss: float) -> None:
        """After an epoch's test pass: the plateau schedule watches the test loss."""
        if self.plateau is not None:
            self.plateau.step(test_loss)

    def set_length(self, epochs: int, total_steps: int | None = None) -> None:
        """A new run length (a budget's re-plan, a resume with another ``--epochs``)."""
        self.epochs = epochs
        self.total_steps = total_steps or epochs * self.steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue a saved schedule: this format, or an older checkpoint's LambdaLR/ReduceLROnPlateau
        state (its warm-up length is what matters: the step comes from the run's progress)."""
        state = state or {}
        if "lr_lambdas" in state:  # LambdaLR (lictrain <= 0.1 checkpoints): WarmupDecay's attributes
            first = (state.get("lr_lambdas") or [None])[0]
            state = {"warmup_steps": first.get("warmup_steps")} if isinstance(first, dict) else {}
        elif self.plateau is not None and "num_bad_epochs" in state:  # a bare ReduceLROnPlateau state
            state = {"plateau": state}
        if isinstance(state.get("warmup_steps"), int):
            self.warmup_steps = state["warmup_steps"]
        if self.plateau is not None and isinstance(state.get("plateau"), dict):
            self.plateau.load_state_dict(state["plateau"])  # its LR came back with the optimiser's state


def is_per_step(kind: str) -> bool:
    """True for schedules stepped after every batch rather than every epoch."""
    return kind in STEP_SCHEDULES


# -- a run's length plan: how many steps the LR schedule spans, and where a budget re-planned it --------
LengthPlan = list[list[int]]  # [[from_step, total_steps], ...]: [[0, T0]] first, steps increasing


def parse_length_plan(text: str) -> LengthPlan:
    """``--lr-plan T0,S1:T1,...`` -> ``[[0, T0], [S1, T1], ...]`` (a budgeted run's record of the
    length its LR schedule spanned: ``T0`` steps from the start, ``T1`` from step ``S1`` on, ...)."""
    plan: LengthPlan = []
    for i, part in enumerate(p.strip() for p in str(text).split(",")):
        at, sep, total = part.rpartition(":")
        try:
            entry = [int(at) if sep else 0, int(total)]
        except ValueError:
            raise ConfigError(f"--lr-plan: expected T0,S1:T1,... (whole steps), got {text!r}") from None
        if i == 0 and entry[0] != 0:
            raise ConfigError(f"--lr-plan: the first entry is the length from step 0 (T0), got {part!r}")
        plan.append(entry)
    check_length_plan(plan)
    return plan


def check_length_plan(plan: Any) -> LengthPlan:
    """Validate a length plan (also one read back from run.json); returns it as lists of ints."""
    try:
        checked = [[int(at), int(total)] for at, total in plan]
    except (TypeError, ValueError):
        raise ConfigError(f"--lr-plan: expected pairs [step, total steps], got {plan!r}") from None
    if not checked or checked[0][0] != 0:
        raise ConfigError(f"--lr-plan: the plan must start at step 0, got {plan!r}")
    if any(total < 1 for _, total in checked):
        raise ConfigError(f"--lr-plan: every length must be at least 1 step, got {plan!r}")
    if any(b[0] <= a[0] for a, b in zip(checked, checked[1:])):
        raise ConfigError(f"--lr-plan: the re-plan steps must increase, got {plan!r}")
    return checked


def format_length_plan(plan: LengthPlan) -> str:
    """Inverse of :func:`parse_length_plan`."""
    return ",".join(str(total) if at == 0 else f"{at}:{total}" for at, total in plan)


def length_at(plan: LengthPlan, step: int) -> int:
    """The LR schedule's length in force at global step ``step`` (the last entry at or before it)."""
    total = plan[0][1]
    for at, length in plan:
        if at <= step:
            total = length
    return total
