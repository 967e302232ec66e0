"""``fit(cfg)``: one training run from config to finished run directory.

Reads top to bottom like the run itself: setup -> resume -> per epoch train (steps, and the
callbacks between them), test, checkpoint -> finish. Everything else — stop signals, the budget,
best-checkpoint selection and early stopping, step logging, unfreezing — is a callback
(:mod:`lictrain.training.callbacks`) called at named points. A stop signal only sets a flag
that is read between steps (:mod:`lictrain.training.stopping`): the run saves one checkpoint
of that step and returns ``interrupted``. Under ``torchrun`` the same code runs DDP; only rank
0 writes (see :mod:`lictrain.training.distributed`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from lictrain.checkpoint.writer import storage_cause
from lictrain.command import reproduce_command
from lictrain.config import TrainConfig
from lictrain.errors import StopRun, StorageError
from lictrain.training.run import Run, RunResult
from lictrain.training.rundir import auto_resume_action
from lictrain.training.stopping import StoppedInSetup, StopSignals

log = logging.getLogger(__name__)

__all__ = ["RunResult", "fit"]


def fit(cfg: TrainConfig, show_progress: bool | None = None,
        epoch_callback: Callable[[int, dict[str, Any]], None] | None = None) -> RunResult:
    """Train ``cfg.model`` per ``cfg``; returns when finished, interrupted or stopped.

    ``epoch_callback(epoch, metrics)`` runs after each epoch is recorded and checkpointed;
    raising :class:`lictrain.errors.StopRun` from it ends the run with status ``stopped``
    (how a sweep prunes a trial).

    Raises:
        LictrainError: bad configuration, data or checkpoint, or a failed write (nothing saved is lost).
    """
    started = time.perf_counter()
    cfg.validate()
    done = finished_already(cfg)
    if done is not None:
        return done
    with StopSignals(cfg.stop_signals) as signals:
        try:
            run = Run.setup(cfg, signals, started, show_progress)
        except StoppedInSetup as stop:  # nothing trained yet: nothing to save
            log.warning("%s during setup: stopped before training (run the same command again)", stop.signal_name)
            return RunResult(Path(cfg.save_path or "."), "interrupted", config=cfg, exit_code=stop.exit_code)
        try:
            signals.defer()  # from here a signal stops the run between two steps
            run.resume_if_any()
            while run.progress.epoch < run.progress.epochs and not run.stop.check():
                train = run.train_epoch()  # ends early only between two steps
                if run.stop.reason:
                    break
                metrics = run.test_epoch(train)  # records the epoch; the callbacks' on_epoch_end
                run.save(tested=True)
                if not run.progress.epoch_done:  # the budget ended this epoch: the run ends here
                    break
                if epoch_callback is not None:
                    epoch_callback(run.progress.epoch, metrics)
                run.progress.next_epoch()
                if run.selection.stop_now and run.progress.epoch < run.progress.epochs:
                    return early_stop(run)
            if run.stop.reason:
                return stopped(run)
            return finished(run)
        except StopRun as stop:
            log.info("stopped after epoch %d: %s", run.progress.epoch, stop.reason)
            return run.finish("stopped", reason=stop.reason)
        except KeyboardInterrupt:  # SIGINT left out of --stop-signals: it lands mid-step, nothing to save
            log.warning("interrupted (SIGINT is not in --stop-signals, so no checkpoint of this step); the newest "
                        "checkpoint is where --resume %s continues", run.outputs.run_dir)
            return run.finish("interrupted", exit_code=130, signal="SIGINT")
        except BaseException as exc:
            run.outputs.finish("failed", exit_code=1, error=f"{type(exc).__name__}: {exc}")
            cause = storage_cause(exc)
            if cause:  # a record file could not be written: one line, not a traceback
                raise StorageError(f"writing the run's files in {run.outputs.run_dir} failed: {cause}; free space "
                                   "or fix the folder, then run the same command with --auto-resume") from exc
            raise
        finally:
            run.train_loader.close()  # its workers ignore stop signals: end them before the interpreter exits


def finished_already(cfg: TrainConfig) -> RunResult | None:
    """``--auto-resume`` on a run that already finished: nothing to train (``None`` otherwise)."""
    if not cfg.auto_resume or cfg.resume:
        return None
    action = auto_resume_action(cfg.save_path, cfg.epochs)
    if action.action != "done":
        return None
    log.info("%s holds a run that already %s: nothing to do (pass a larger --epochs to train on)",
             action.run_dir, "finished" if action.status == "finished" else "stopped early")
    return RunResult(action.run_dir, action.status, config=cfg, already_done=True)


def stopped(run: Run) -> RunResult:
    """After a stop signal or a failed background save, between two steps."""
    stop = run.stop
    if stop.reason == "save_failed":  # recorded as failed by fit(); the CLI prints its one line (exit 74)
        raise stop.error or StorageError("rank 0 could not save a checkpoint (see its message); the run stopped")
    if run.saved_step != run.progress.global_step:
        run.save(tested=False)  # the step just done: exactly where the next start continues
    p = run.progress
    log.warning("%s: stopped after step %d (epoch %d, batch %d of %d); checkpoint saved. Continue with: lictrain "
                "train --resume %s (or the same command with --auto-resume)", stop.signal_name, p.global_step,
                p.epoch, p.batch, p.steps_per_epoch, run.outputs.run_dir)
    return run.finish("interrupted", exit_code=stop.exit_code(), signal=stop.signal_name)


def early_stop(run: Run) -> RunResult:
    reason = run.selection.stopper.reason()
    log.info("stopped after epoch %d/%d: %s; the best checkpoint is kept (to go on: --resume %s --early-stop N)",
             run.progress.epoch, run.progress.epochs, reason, run.outputs.run_dir)
    return run.finish("stopped", reason=reason, early_stopped=True)


def finished(run: Run) -> RunResult:
    budget = run.budget
    extra: dict[str, Any] = {}
    if budget is not None and budget.cut_reason:
        extra["budget_cut"] = budget.cut_reason
        log.info("%s: a partial last epoch (resume with --resume %s --epochs N to go on)", budget.cut_reason,
                 run.outputs.run_dir)
    if budget is not None:  # the clock chose the length: --steps and --lr-plan repeat it step for step
        again = reproduce_command(run.cfg, run.progress.global_step, budget.history, f"{run.outputs.run_dir}-again")
        run.outputs.note("reproduce", again)
        log.info("the budget bought %d steps; to train exactly these again (the same losses on this device): %s",
                 run.progress.global_step, again)
    if budget is not None and run.plan is not None and run.plan.closing_seconds and budget.clock.pace:
        # the calibration's estimate, at the pace the machine keeps now (load comes and goes)
        run.outputs.note("closing_estimate_seconds", run.plan.closing_seconds * budget.clock.pace / run.plan.step_seconds)
    result = run.finish("finished", **extra)
    result.stop_signal = run.stop.signals.received  # it came during the last epoch's test or save
    stopper = run.selection.stopper
    log.info("finished: %s (best test %s %.4g in epoch %d)", run.outputs.run_dir, run.selection.best.name,
             stopper.top, stopper.top_epoch)
    return result
