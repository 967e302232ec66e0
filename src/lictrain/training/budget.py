"""``--budget-minutes``: turn a wall-clock budget into a number of epochs, from measured times.

Before training, a throwaway copy of the run's model and strategy takes a few real steps on
real batches and one pass over the test split; the epoch count is the budget left after that
calibration divided by the measured time of one epoch (its steps, its test pass and its
checkpoint) times :data:`PLAN_MARGIN`. The run then *is* an ``--epochs N`` run — the LR
and gamma schedules see the planned length from the first step, and a resumed run keeps
it — until, after each epoch, ``fit`` re-plans from the pace it actually keeps (see
:class:`BudgetClock`).
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterable, Iterator

import torch

log = logging.getLogger(__name__)

#: steps run untimed first (allocator and kernel warm-up), then timed
WARMUP_STEPS = 2
TIMED_STEPS = 5
#: epochs are planned this much longer than measured: a long run on a shared machine averages
#: slower than a few calibration steps (about 5-10% on the 2-core machine here)
PLAN_MARGIN = 1.08


@dataclass(frozen=True)
class BudgetPlan:
    """The measured times and the epoch count they buy."""

    budget_seconds: float
    calibration_seconds: float
    step_seconds: float
    test_seconds: float
    checkpoint_seconds: float
    steps_per_epoch: int
    epochs: int

    @property
    def epoch_seconds(self) -> float:
        return self.steps_per_epoch * self.step_seconds + self.test_seconds + self.checkpoint_seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "epoch_seconds": self.epoch_seconds}

    def describe(self) -> str:
        return (f"budget {self.budget_seconds / 60:.1f} min: {self.step_seconds:.3f} s/step x {self.steps_per_epoch} "
                f"steps + test {self.test_seconds:.1f} s + checkpoint {self.checkpoint_seconds:.2f} s = "
                f"{self.epoch_seconds:.1f} s/epoch (+{PLAN_MARGIN - 1:.0%} margin) -> {self.epochs} epochs "
                f"({self.epochs * self.steps_per_epoch} steps)")


def plan_epochs(available_seconds: float, epoch_seconds: float, max_epochs: int | None = None) -> int:
    """Whole epochs that fit ``available_seconds`` (at least 1, at most ``max_epochs``)."""
    fit = max(1, math.floor(available_seconds / epoch_seconds)) if epoch_seconds > 0 else 1
    return min(fit, max_epochs) if max_epochs is not None else fit


def measure_step_seconds(step: Callable[[torch.Tensor], Any], batches: Iterable[torch.Tensor],
                         device: torch.device) -> float:
    """Mean seconds of ``step`` over :data:`TIMED_STEPS` batches, after :data:`WARMUP_STEPS`."""
    batches = itertools.islice(_cycle(batches), WARMUP_STEPS + TIMED_STEPS)
    from lictrain.training.loop import to_device

    times = [measure_seconds(lambda: step(to_device(batch, device)), device) for batch in batches]
    return statistics.fmean(times[WARMUP_STEPS:])


def _cycle(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """``batches`` over and over (an epoch may hold fewer batches than the calibration needs)."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("the training loader gave no batch to time a step")


def measure_seconds(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of one call of ``fn`` (device work included)."""
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


def serialise_seconds(*states: dict[str, Any]) -> float:
    """Seconds to serialise ``states`` in memory: a checkpoint's cost, less the disk write."""
    started = time.perf_counter()
    torch.save(states, io.BytesIO())
    return time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (no-op on the CPU), so wall clocks measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BudgetClock:
    """Re-plans a budgeted run's length from the pace it actually keeps.

    The calibration measures a handful of steps; a shared machine can then run faster or
    slower for minutes. After every epoch the run asks :meth:`replan` how many epochs fit
    before the deadline at the mean pace so far, and lengthens or shortens itself (its LR
    schedule follows; a gamma schedule, fixed to its planned length, only lets it shorten).
    """

    def __init__(self, budget_seconds: float, started: float, max_epochs: int | None = None,
                 can_grow: bool = True) -> None:
        self.deadline = started + budget_seconds
        self.max_epochs = max_epochs
        self.can_grow = can_grow
        self.epoch_times: list[float] = []

    def record_epoch(self, seconds: float) -> None:
        self.epoch_times.append(seconds)

    def replan(self, done: int, planned: int, now: float | None = None) -> int:
        """Total epochs for the run, given ``done`` finished ones and ``planned`` so far."""
        if not self.epoch_times:
            return planned
        now = time.perf_counter() if now is None else now
        fits = max(0, math.floor((self.deadline - now) / statistics.fmean(self.epoch_times)))
        total = done + fits
        if self.max_epochs is not None:
            total = min(total, self.max_epochs)
        if not self.can_grow:
            total = min(total, planned)
        return max(total, done)


def plan_budget(cfg: Any, device: torch.device, dist: Any, alignment: int, train_loader: Any, test_loader: Any,
                started: float) -> BudgetPlan:
    """Calibrate a throwaway copy of the run and plan ``cfg.budget_minutes`` into epochs.

    ``started`` is when the run began (``time.perf_counter()``): setup and calibration count
    against the budget. Under DDP every rank calibrates and all take the smallest plan.
    """
    from lictrain.training.build import build_parts
    from lictrain.training.distributed import DistInfo, gather_objects
    from lictrain.training.loop import test_epoch

    probe = build_parts(replace(cfg, epochs=1), device, DistInfo(), alignment)
    train_loader.set_epoch(0)
    step_seconds = measure_step_seconds(probe.strategy.step, train_loader, device)
    test_seconds = measure_seconds(lambda: test_epoch(probe.model, probe.criterion, test_loader, device), device)
    checkpoint_seconds = serialise_seconds(probe.model.state_dict(), probe.strategy.optimizer.state_dict())

    budget = cfg.budget_minutes * 60.0
    measured = BudgetPlan(budget, time.perf_counter() - started, step_seconds, test_seconds, checkpoint_seconds,
                          len(train_loader), epochs=0)
    fits = plan_epochs(budget - measured.calibration_seconds, measured.epoch_seconds * PLAN_MARGIN, cfg.epochs)
    plan = replace(measured, epochs=int(min(gather_objects(fits, dist))))
    log.info("%s", plan.describe())
    available = budget - measured.calibration_seconds
    if measured.epoch_seconds * PLAN_MARGIN > available:
        # an epoch is one pass over the data: on a large set, longer than the whole budget
        steps = max(1, int(available / PLAN_MARGIN / max(measured.step_seconds, 1e-9)))
        fitting = steps * cfg.batch_size * dist.world_size
        log.warning("one epoch (%d steps, ~%.0f s) is longer than the %.1f-minute budget: the run will overrun it; "
                    "pass --epoch-size %d (crops per epoch) for epochs that fit", len(train_loader),
                    measured.epoch_seconds, cfg.budget_minutes, max(cfg.batch_size, fitting // 10))
    return plan
