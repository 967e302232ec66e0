"""A training run's live objects and its named steps (torchtune's recipe: setup, train, save).

:func:`lictrain.training.fit.fit` reads top to bottom by calling these: :meth:`Run.setup`,
:meth:`Run.resume_if_any`, then per epoch :meth:`Run.train_epoch` (steps, with the callbacks'
``on_step`` between them), :meth:`Run.test_epoch`, the callbacks' ``on_epoch_end`` and
:meth:`Run.save`, and finally :meth:`Run.finish`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lictrain.checkpoint import load_latest_valid
from lictrain.config import TrainConfig
from lictrain.data import load_test_crops
from lictrain.errors import ConfigError
from lictrain.models import get_spec
from lictrain.models.gains import rate_gains
from lictrain.schedules.lr import LRSchedule
from lictrain.training.batch_size import auto_batch_size
from lictrain.training.budget import BudgetClock, BudgetPlan, plan_budget
from lictrain.training.build import build_loaders, build_parts, check_alignment, resolve_device, seed_everything
from lictrain.training.callbacks import Budget, Callback, Callbacks, Selection, StepLimit, StepRows, Unfreeze
from lictrain.training.distributed import DistInfo, check_in_sync, init_distributed
from lictrain.training.loop import EpochStats, EpochTally, format_summary, test_epoch, train_one_epoch
from lictrain.training.outputs import RunOutputs
from lictrain.training.param_groups import Unfreezer
from lictrain.training.progress import Progress
from lictrain.training.rundir import check_new_run_dir, prepare_run_dir
from lictrain.training.selection import BestMetric, EarlyStopping, JpegReference
from lictrain.training.state import TrainState
from lictrain.training.step_log import StepLog
from lictrain.training.steps import StepOutcome
from lictrain.training.stopping import StopCallback, StopSignals
from lictrain.training.variable_rate import test_at_rates

log = logging.getLogger(__name__)

#: share of an epoch spent waiting for batches above which the run says the loader is the bottleneck
DATA_WAIT_HINT = 0.3


@dataclass
class RunResult:
    """How a run ended."""

    run_dir: Path
    status: str  # finished | interrupted | stopped | failed
    summary: dict[str, Any] = field(default_factory=dict)
    config: TrainConfig | None = None  # as trained: a planned length, a measured --batch-size auto
    exit_code: int = 0  # what the CLI exits with (lictrain.training.stopping)
    already_done: bool = False  # --auto-resume found the run finished: nothing was trained
    stop_signal: str | None = None  # a stop signal arrived as the run finished: skip the closing evaluation


class Run:
    """The objects one run trains with, and what it has done so far (:attr:`progress`)."""

    def __init__(self, cfg: TrainConfig, dist: DistInfo, device: torch.device, parts: Any, loaders: tuple[Any, Any],
                 progress: Progress, plan: BudgetPlan | None, show_progress: bool | None) -> None:
        self.cfg, self.dist, self.device, self.parts = cfg, dist, device, parts
        self.train_loader, self.test_loader = loaders
        self.progress, self.plan, self.show_progress = progress, plan, show_progress
        self.model, self.strategy = parts.model, parts.strategy
        self.lr = LRSchedule(parts.strategy.optimizer, cfg.lr_schedule, progress.epochs, progress.steps_per_epoch,
                             cfg.warmup_steps, progress.step_limit)
        self.resume_file: Path | None = None
        self.resume_ckpt: dict[str, Any] | None = None
        self.saved_step = -1  # the global step of the last checkpoint saved (nothing to save again there)
        self.hinted = False
        self.tally = EpochTally()  # the current epoch's train sums (saved with a mid-epoch checkpoint)
        self.auto_batch: Any = None
        # set by setup(): they need the run directory
        self.outputs: RunOutputs
        self.callbacks: Callbacks
        self.selection: Selection
        self.stop: StopCallback
        self.state: TrainState
        self.budget: Budget | None = None

    # -- setup ----------------------------------------------------------------------------
    @classmethod
    def setup(cls, cfg: TrainConfig, signals: StopSignals, started: float, show_progress: bool | None) -> "Run":
        """Device, data, (budget plan), model, strategy, outputs and callbacks."""
        check_new_run_dir(cfg)
        dist, device = init_distributed(resolve_device(cfg.device))
        alignment = get_spec(cfg.model).alignment
        check_alignment(cfg, alignment)
        seed_everything(cfg.seed)  # same initial weights on every rank
        auto_batch = None
        if cfg.batch_size == "auto":
            auto_batch = auto_batch_size(cfg, device, dist, alignment)
            cfg = dataclasses.replace(cfg, batch_size=auto_batch.batch_size)
            seed_everything(cfg.seed)  # the measurement used the RNG: start as a run with that batch would
        train_loader, test_loader, _ = build_loaders(cfg, device, dist)
        plan, requested_epochs = None, cfg.epochs
        if cfg.budget_minutes is not None and not cfg.resume:
            plan = plan_budget(cfg, device, dist, alignment, train_loader, test_loader, started)
            cfg = dataclasses.replace(cfg, epochs=plan.epochs)
            seed_everything(cfg.seed)  # the calibration used the RNG: start exactly as an --epochs run would
        cfg, step_limit = settle_length(cfg, plan, len(train_loader))
        parts = build_parts(cfg, device, dist, alignment)
        progress = Progress(cfg.epochs, len(train_loader), step_limit=step_limit)
        run = cls(cfg, dist, device, parts, (train_loader, test_loader), progress, plan, show_progress)
        if cfg.resume:  # the newest checkpoint that passes its integrity check
            run.resume_file, run.resume_ckpt = load_latest_valid(cfg.resume, map_location=device)
        run_dir = run.resume_file.parent if run.resume_file else prepare_run_dir(cfg, create=dist.is_main)
        run.outputs = RunOutputs(run_dir, cfg, writer=dist.is_main)
        run.callbacks, run.selection, run.stop = run._callbacks(signals, started, requested_epochs)
        run.state = TrainState(run.model, parts.strategy.optimizer, parts.aux_optimizer, run.lr, parts.strategy,
                               run.callbacks, cfg.to_dict(), dist)
        run.auto_batch = auto_batch
        return run

    def _callbacks(self, signals: StopSignals, started: float, requested_epochs: int | None
                   ) -> tuple[Callbacks, Selection, StopCallback]:
        cfg = self.cfg
        best = BestMetric.from_config(cfg.best_metric, cfg.best_mode)
        reference = None
        if best.name == "rd":
            reference = JpegReference.measure(load_test_crops(cfg.dataset, cfg.test_patch_size), cfg.metric)
        selection = Selection(best, EarlyStopping(best, cfg.early_stop, cfg.early_stop_min_delta), reference,
                              cfg.metric)
        items: list[Callback] = [selection]
        if cfg.unfreeze:
            if self.dist.enabled:
                raise ConfigError("--unfreeze changes which parameters get gradients between epochs, which DDP does "
                                  "not allow; fine-tune in one process (without torchrun), or use --lr-groups")
            items.append(Unfreeze(Unfreezer(self.model, cfg.unfreeze, cfg.unfreeze_every)))
        if cfg.log_every is not None:
            values = lambda: {"lr": self.strategy.optimizer.param_groups[0]["lr"], **self.strategy.epoch_values()}  # noqa: E731
            items.append(StepRows(StepLog(cfg.log_every, self.outputs.log_step, values)))
        if cfg.steps is not None:
            items.append(StepLimit(cfg.steps, cfg.lr_plan))
        if self.plan is not None:  # a gamma schedule is fixed to the planned length: the run may only shorten
            clock = BudgetClock(self.plan.budget_seconds, started, max_epochs=requested_epochs,
                                can_grow=not (cfg.use_balanced and cfg.adaptive_gamma),
                                reserve_seconds=self.plan.test_seconds + self.plan.checkpoint_seconds,
                                step_seconds=self.plan.step_seconds)
            self.budget = Budget(self.plan, clock, cfg.budget_minutes or 0.0)
            items.append(self.budget)
        stop = StopCallback(signals, self.outputs.save_error, self.dist, self.device)
        items.append(stop)  # last: every other callback has seen the step it stops after
        return Callbacks(items), selection, stop

    def resume_if_any(self) -> None:
        """Continue from ``--resume``'s checkpoint (model, optimisers, RNG, progress, callbacks); open
        the run records (a resumed run drops rows past the point it continues from)."""
        if self.resume_file is not None and self.resume_ckpt is not None:
            self.progress = self.state.restore(self.resume_ckpt, self.resume_file, self.progress)
            if self.progress.batch:
                self.tally = EpochTally.from_state(self.resume_ckpt.get("epoch_tally"))
            self.saved_step = self.progress.global_step
            self.resume_ckpt = None  # free its memory before training
            log.info("resumed from %s at epoch %d%s", self.resume_file, self.progress.epoch,
                     f", batch {self.progress.batch}" if self.progress.batch else "")
        self.outputs.open_records(self.cfg, resumed=self.resume_file is not None, start_epoch=self.progress.epoch,
                                  world_size=self.dist.world_size, start_step=self.progress.global_step)
        if self.plan is not None:
            self.outputs.note("budget", self.plan.to_dict())
        if self.auto_batch is not None:
            self.outputs.note("batch_size_auto", self.auto_batch.to_dict())
        log.info("run directory: %s", self.outputs.run_dir)

    # -- one epoch --------------------------------------------------------------------------
    def step(self, batch: torch.Tensor) -> StepOutcome:
        """One whole step at the LR of its global step: forward, backward, both optimisers."""
        self.lr.apply(self.progress.global_step)
        outcome = self.strategy.step(batch)
        self.progress.batch += 1
        return outcome

    def after_step(self, outcome: StepOutcome) -> bool:
        return self.callbacks.on_step(self, outcome)

    def train_epoch(self) -> EpochStats:
        """Train from ``progress.batch`` to the epoch's end, or until a callback ends it."""
        p = self.progress
        self.epoch_started = time.perf_counter()
        self.strategy.begin_epoch(p.epoch)
        self.callbacks.on_epoch_start(self)  # may set the LR's length (a replayed plan, after a resume)
        self.epoch_lr = self.lr.lr(p.epoch * p.steps_per_epoch)  # the epoch's LR: its first batch's
        self.train_loader.set_epoch(p.epoch, p.batch)
        if p.batch == 0:
            self.tally = EpochTally()
        if p.epoch_done:  # stopped after the epoch's last step, before its test: only the test is left
            self.train_seconds = 0.0
            return self.tally.stats(0.0, 0)
        show = self.show_progress if self.dist.is_main else False
        stats = train_one_epoch(self.step, self.parts.trained, self.train_loader, self.device, p.epoch,
                                p.steps_per_epoch - p.batch, show, after_step=self.after_step, tally=self.tally)
        self.train_seconds = time.perf_counter() - self.epoch_started
        return stats

    def test_epoch(self, train: EpochStats) -> dict[str, Any]:
        """Test the model; the epoch's row (also recorded and printed)."""
        p, cfg = self.progress, self.cfg
        check_in_sync(self.model, self.dist, self.strategy.sync_tensor())
        gains = rate_gains(self.model)  # a variable-rate model is tested at every trained λ
        test = (test_epoch(self.model, self.parts.criterion, self.test_loader, self.device) if gains is None
                else test_at_rates(self.model, self.parts.criterion, self.test_loader, self.device, gains))
        loss = test.values["loss"]
        self.lr.end_epoch(loss)
        schedule_values = self.strategy.epoch_values()
        self.strategy.end_epoch(p.epoch, loss)
        p.best_loss = min(p.best_loss, loss) if loss == loss and abs(loss) != float("inf") else p.best_loss
        seconds = time.perf_counter() - self.epoch_started
        metrics = {"epoch": p.epoch, **test.values, "lr": self.epoch_lr, **schedule_values,
                   **{f"train/{k}": v for k, v in train.values.items()},
                   "skipped_steps": train.skipped, "epoch_seconds": seconds,
                   "train_images_per_second": train.batches * cfg.batch_size * self.dist.world_size
                   / max(self.train_seconds, 1e-9)}
        if not p.epoch_done:
            metrics["epoch_fraction"] = p.batch / p.steps_per_epoch
        self._data_wait_hint(metrics, train)
        self.callbacks.on_epoch_end(self, metrics)
        self.outputs.log_epoch(p.epoch, metrics, global_step=p.global_step)
        extra = {**schedule_values, **({"rd_gain": metrics["rd_gain"]} if "rd_gain" in metrics else {})}
        log.info(format_summary(p.epoch, p.epochs, train, test, self.epoch_lr, seconds, extra))
        return metrics

    def _data_wait_hint(self, metrics: dict[str, Any], train: EpochStats) -> None:
        wait = train.data_wait / self.train_seconds if self.train_seconds > 0 else 0.0
        metrics["data_wait_fraction"] = wait
        if wait > DATA_WAIT_HINT and not self.hinted:
            self.hinted = True
            log.warning("the training steps waited for data %.0f%% of epoch %d: the loader (%s) is the bottleneck; "
                        "raise --num-workers or --crops-per-image (docs/data.md)", 100 * wait, self.progress.epoch,
                        self.train_loader.describe())

    # -- checkpoints and the end ---------------------------------------------------------------
    def save(self, tested: bool) -> None:
        """One checkpoint of the current progress (all ranks: the RNG states are gathered)."""
        p = self.progress
        value = self.selection.value if tested else None
        completed = p.epoch_done and tested  # a stop after the last step: the epoch's test is still to come
        state = self.state.capture(p, value, completed=completed, ranked=tested)
        if not completed:
            state["epoch_tally"] = self.tally.state_dict()
        self.outputs.save_checkpoint(**state)
        self.saved_step = p.global_step

    def finish(self, status: str, exit_code: int = 0, **summary: Any) -> RunResult:
        """Flush the checkpoints and mark the run ``status`` in run.json and W&B."""
        if status in ("finished", "stopped"):
            summary = {**self.selection.summary(), **summary}
        summary.setdefault("trained_steps", self.progress.global_step)
        if summary.get("signal"):  # also at the top of run.json, beside the status it explains
            self.outputs.note("signal", summary["signal"])
        error = self.outputs.finish(status, exit_code=exit_code, best_loss=self.progress.best_loss, **summary)
        if error is not None:  # the last checkpoint's save failed: recorded as failed
            raise error
        return RunResult(self.outputs.run_dir, status, self.outputs.summary, self.cfg, exit_code)


def settle_length(cfg: TrainConfig, plan: BudgetPlan | None, steps_per_epoch: int) -> tuple[TrainConfig, int | None]:
    """The run's planned epochs (what its schedules span) and step limit (``None``: whole epochs).

    A budget's plan sets both; ``--steps N`` without ``--epochs`` spans ``--lr-plan``'s first
    length (else N) and fixes the LR it resolved (a resumed run reads ``epochs`` from its saved
    config: the short-run default LR must not turn into the long-run one).
    """
    if plan is not None:
        return cfg, plan.total_steps
    if cfg.steps is not None and cfg.epochs is None:
        length = cfg.lr_plan[0][1] if cfg.lr_plan else cfg.steps
        cfg = dataclasses.replace(cfg, lr=cfg.peak_lr, epochs=max(1, math.ceil(length / steps_per_epoch)))
        return cfg, length
    assert cfg.epochs is not None  # settled by validate()
    return cfg, None
