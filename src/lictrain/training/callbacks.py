"""What the loop calls at named points: ``on_epoch_start``, ``on_step``, ``on_epoch_end``.

Everything that is not "train a step, test an epoch" lives here, as Lightning's callbacks:
the budget's deadline and re-plan, best-checkpoint selection and early stopping, step-level
logging, progressive unfreezing. Each owns its state (``state_dict``/``load_state_dict``),
saved in every checkpoint under ``hooks``. ``on_step`` returns True to end the epoch after
the step just done (a stop only ever lands between steps); the stop signals' callback is
:class:`lictrain.training.stopping.StopCallback`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Protocol

from lictrain.evaluation.metrics import ms_ssim_db
from lictrain.schedules.lr import LengthPlan, LRSchedule, format_length_plan, length_at
from lictrain.training.budget import BudgetClock, BudgetPlan
from lictrain.training.distributed import DistInfo, gather_objects
from lictrain.training.outputs import RunOutputs
from lictrain.training.param_groups import Unfreezer
from lictrain.training.progress import Progress
from lictrain.training.selection import BestMetric, EarlyStopping, JpegReference
from lictrain.training.step_log import StepLog
from lictrain.training.steps import StepOutcome


class RunView(Protocol):
    """What a callback reads and changes of the run (:class:`lictrain.training.run.Run` has it; a
    protocol, so that this module needs nothing of the module that calls it)."""

    progress: Progress
    lr: LRSchedule
    outputs: RunOutputs
    dist: DistInfo
    train_loader: Any

log = logging.getLogger(__name__)


class Callback:
    """A no-op at every hook; subclasses override what they need."""

    name = "callback"

    def on_epoch_start(self, run: RunView) -> None:
        pass

    def on_step(self, run: RunView, outcome: StepOutcome) -> bool:
        return False

    def on_epoch_end(self, run: RunView, metrics: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Callbacks:
    """The run's callbacks, called in order; ``on_step`` asks every one (none is skipped)."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.items = callbacks

    def on_epoch_start(self, run: RunView) -> None:
        for c in self.items:
            c.on_epoch_start(run)

    def on_step(self, run: RunView, outcome: StepOutcome) -> bool:
        return any([c.on_step(run, outcome) for c in self.items])  # a list: every callback sees the step

    def on_epoch_end(self, run: RunView, metrics: dict[str, Any]) -> None:
        for c in self.items:
            c.on_epoch_end(run, metrics)

    def state_dict(self) -> dict[str, Any]:
        return {c.name: c.state_dict() for c in self.items}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for c in self.items:
            c.load_state_dict(state.get(c.name) or {})


class Selection(Callback):
    """``--best-metric`` / ``--early-stop``: the epoch's value (ranks the best checkpoints) and
    whether to stop; ``rd`` measures JPEG's curve on the test crops once."""

    name = "selection"

    def __init__(self, best: BestMetric, stopper: EarlyStopping, reference: JpegReference | None, metric: str) -> None:
        self.best, self.stopper, self.reference, self.metric = best, stopper, reference, metric
        self.value = math.nan
        self.stop_now = False

    def on_epoch_end(self, run: RunView, metrics: dict[str, Any]) -> None:
        if self.reference is not None:
            # a variable-rate model: the gain at each trained λ, and their mean (the curve's dB over JPEG)
            rates = [key.partition("@")[2] for key in metrics if key.startswith("bpp@")] or [""]
            for rate in rates:
                at = f"@{rate}" if rate else ""
                quality = ms_ssim_db(metrics["ms_ssim" + at]) if self.metric == "ms-ssim" else metrics["psnr" + at]
                metrics["rd_gain" + at] = self.reference.gain(metrics["bpp" + at], quality)
            if rate:
                metrics["rd_gain"] = sum(metrics[f"rd_gain@{r}"] for r in rates) / len(rates)
        self.value = self.best.value(metrics)
        self.stop_now = self.stopper.update(run.progress.epoch, self.value)

    def summary(self) -> dict[str, Any]:
        """The run's best epoch by ``--best-metric``, for run.json's summary."""
        return {"best_metric": self.best.name, "best_value": self.stopper.top, "best_epoch": self.stopper.top_epoch}

    def state_dict(self) -> dict[str, Any]:
        return self.stopper.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stopper.load_state_dict(state)


class Budget(Callback):
    """``--budget-minutes``: end an epoch by steps at the deadline (or after the planned steps),
    re-plan the length after each epoch from the pace kept so far."""

    name = "budget"

    #: steps this many times slower than the calibration's get named (once per run)
    SLOW_RATIO = 3.0

    def __init__(self, plan: BudgetPlan, clock: BudgetClock, budget_minutes: float) -> None:
        self.plan, self.clock, self.budget_minutes = plan, clock, budget_minutes
        self.cut_reason = ""
        self.history: LengthPlan = [[0, plan.total_steps]]  # where the LR's length changed: --lr-plan replays it
        self.warned_slow = False

    def _record(self, run: RunView, step: int, total: int) -> None:
        self.history.append([step, total])
        run.outputs.note("lr_plan", format_length_plan(self.history))

    def on_step(self, run: RunView, outcome: StepOutcome) -> bool:
        p = run.progress
        late = self.clock.step_done(run.dist)
        if not late and p.step_limit is not None and p.global_step >= p.step_limit:
            late = not self._grow(run)
        if late and not p.epoch_done:
            why = "reached" if self.clock.cut else "planned to end"
            self.cut_reason = (f"budget of {self.budget_minutes:g} min {why} after batch {p.batch} of "
                               f"{p.steps_per_epoch} in epoch {p.epoch}")
        return late

    def _grow(self, run: RunView) -> bool:
        """The planned steps are done early (the calibration ran in a burst of load): go on to the end
        of this epoch as far as the deadline allows, the LR schedule stretched with it."""
        p = run.progress
        if not self.clock.can_grow or run.dist.enabled or p.epoch_done:
            return False
        more = min(self.clock.steps_left(), p.steps_per_epoch - p.batch)
        if more <= 0:
            return False
        p.step_limit = p.global_step + more
        run.lr.set_length(p.epochs, p.step_limit)
        self._record(run, p.global_step, p.step_limit)
        return True

    def on_epoch_end(self, run: RunView, metrics: dict[str, Any]) -> None:
        p = run.progress
        if not p.epoch_done:
            return  # a cut epoch ends the run
        self.clock.record_epoch(metrics["epoch_seconds"] + self.plan.checkpoint_seconds)
        self._name_slow_steps(run)
        planned = p.total_steps
        done = (p.epoch + 1) * p.steps_per_epoch
        replanned = min(gather_objects(self.clock.replan_steps(done, planned, p.steps_per_epoch), run.dist))
        if replanned == planned:
            return
        p.epochs, p.step_limit = math.ceil(replanned / p.steps_per_epoch), replanned
        run.lr.set_length(p.epochs, replanned)
        self._record(run, done, replanned)
        # a few steps' jitter every epoch is noise in the log; a change of an epoch or more is news
        log.log(logging.INFO if abs(replanned - planned) >= p.steps_per_epoch else logging.DEBUG,
                "re-planned to %d steps (%d epochs): %.1f s per epoch so far, %.1f min of the budget left",
                replanned, p.epochs, metrics["epoch_seconds"], (self.clock.deadline - time.perf_counter()) / 60)
        run.outputs.note("budget_epochs", p.epochs)
        run.outputs.note("budget_steps", replanned)


    def _name_slow_steps(self, run: RunView) -> None:
        """Say so once when the steps run far slower than the calibration measured: the plan was
        made for another machine state (other jobs, a loader stealing the training threads)."""
        pace, calibrated = self.clock.pace, self.plan.step_seconds
        if self.warned_slow or not pace or not calibrated or pace < self.SLOW_RATIO * calibrated:
            return
        self.warned_slow = True
        run.outputs.note("slow_steps", {"step_seconds": pace, "calibrated_step_seconds": calibrated})
        log.warning("steps now take %.2f s, %.1fx the %.2f s the calibration measured: other work competes for the "
                    "cores (or the data loader's %s does); the budget buys fewer steps than planned (see "
                    "docs/training.md: --num-workers, OMP_NUM_THREADS)", pace, pace / calibrated, calibrated,
                    run.train_loader.describe())


class StepLimit(Callback):
    """``--steps N``: end the run after N training steps (mid-epoch too); ``--lr-plan``: set the LR
    schedule's length at the steps where a budgeted run re-planned it (its exact replay)."""

    name = "steps"

    def __init__(self, steps: int, plan: LengthPlan | None) -> None:
        self.steps, self.plan = steps, plan

    def _follow_plan(self, run: RunView) -> None:
        p = run.progress
        if self.plan is None:
            return
        total = length_at(self.plan, p.global_step)
        if total != p.total_steps:
            p.epochs, p.step_limit = max(1, math.ceil(total / p.steps_per_epoch)), total
            run.lr.set_length(p.epochs, total)

    def on_epoch_start(self, run: RunView) -> None:
        self._follow_plan(run)  # also where a resumed run picks the length of the step it continues from

    def on_step(self, run: RunView, outcome: StepOutcome) -> bool:
        self._follow_plan(run)
        p = run.progress
        if p.global_step < self.steps:
            return False
        p.epochs = p.epoch + 1  # the loop ends after this epoch's test (at once when this cut the epoch)
        return True


class StepRows(Callback):
    """``--log-every N``: step rows in metrics.jsonl and W&B."""

    name = "step_log"

    def __init__(self, log_every: StepLog) -> None:
        self.log = log_every

    def on_step(self, run: RunView, outcome: StepOutcome) -> bool:
        self.log.record(run.progress.global_step, run.progress.epoch, outcome)
        return False

    def on_epoch_end(self, run: RunView, metrics: dict[str, Any]) -> None:
        self.log.flush(run.progress.global_step, run.progress.epoch)


class Unfreeze(Callback):
    """``--unfreeze``: which module groups train, a function of the epoch alone."""

    name = "unfreeze"

    def __init__(self, unfreezer: Unfreezer) -> None:
        self.unfreezer = unfreezer

    def on_epoch_start(self, run: RunView) -> None:
        self.unfreezer.apply(run.progress.epoch)
