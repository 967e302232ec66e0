"""The trials of an Optuna study: counting and re-queuing them, waiting for other workers, drawing
parameters, and the objective that runs one trial as a lictrain run directory."""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from lictrain.config import TrainConfig
from lictrain.errors import StopRun
# the trial helpers are looked up on their module at call time, so tests can replace one of them
from lictrain.search import trial as trial_runs
from lictrain.search.grid import ParamSpec, apply_params
from lictrain.search.study_storage import OBJECTIVES, StudySettings
from lictrain.tracking.records import run_completed

__all__ = ["TrialFailed", "spent_trials", "wait_for_other_workers", "requeue_interrupted", "suggest",
           "pruning_callback", "make_objective"]

log = logging.getLogger(__name__)


class TrialFailed(Exception):
    """Raised in the objective for a trial whose training failed: Optuna records FAIL, the sweep goes on."""


def _superseded(trials: list[Any]) -> set[int]:
    """Numbers of the trials that were re-queued (their retries replace them)."""
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
    return out


def spent_trials(study: Any) -> int:
    """Trials that count towards ``--optuna N``: complete, pruned, running, and failed ones not
    re-queued (a re-queued trial is replaced by its retry, which counts when it runs)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    superseded = _superseded(trials)
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(1 for t in trials if t.state in counted or (t.state == TrialState.FAIL and t.number not in superseded))


def wait_for_other_workers(study: Any, settings: StudySettings) -> int:
    """Before a worker leaves: wait while other workers' trials run; return trials left to run.

    A worker killed mid-trial leaves a RUNNING trial that only its stale heartbeat reveals (after
    the grace period). Were every surviving worker to leave as soon as the count is reached, that
    trial would stay failed and the study one trial short. So a worker stays until no trial is
    running; when a dead worker's trial goes stale it is failed and re-queued here, and this
    worker runs the retry.
    """
    import optuna
    from optuna.trial import TrialState

    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        remaining = settings.n_trials - spent_trials(study)
        if remaining > 0:
            return remaining
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return 0
        time.sleep(min(settings.heartbeat, 5))


def requeue_interrupted(study: Any, max_retries: int | None) -> list[int]:
    """Re-queue trials stopped by Ctrl-C/SIGTERM (FAIL with status ``interrupted``) so that they
    resume; return their numbers."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    superseded = _superseded(study.get_trials(deepcopy=False))
    requeued = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retries, inherit_intermediate_values=True)
        for trial in trials:
            if trial.user_attrs.get("status") == "interrupted" and trial.number not in superseded:
                callback(study, trial)
                requeued.append(trial.number)
    return requeued


def suggest(trial: Any, space: dict[str, ParamSpec]) -> dict[str, Any]:
    """Draw each parameter of ``space`` from ``trial`` (field-name keys)."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.values is not None:
            params[name] = trial.suggest_categorical(spec.label, list(spec.values))
        elif spec.kind == "int":
            params[name] = trial.suggest_int(spec.label, int(spec.low), int(spec.high), log=spec.log)
        else:
            params[name] = trial.suggest_float(spec.label, float(spec.low), float(spec.high), log=spec.log)
    return params


def pruning_callback(trial: Any, epochs: int | None) -> Callable[[int, dict[str, Any]], None]:
    """An epoch callback that reports the test loss to ``trial`` and stops the run when Optuna prunes it."""
    def report(epoch: int, metrics: dict[str, Any]) -> None:
        value = metrics.get("loss")
        value = float(value) if isinstance(value, (int, float)) else math.nan
        trial.report(value, epoch)
        last = epochs is not None and epoch >= epochs - 1
        if not last and trial.should_prune():  # the last epoch finishes the run anyway
            raise StopRun(f"pruned by the median rule after epoch {epoch} (test loss {value:.4g})")
    return report


def make_objective(base: TrainConfig, space: dict[str, ParamSpec], settings: StudySettings) -> Callable[[Any], Any]:
    """Optuna's objective: one trial = one training run in ``settings.out`` (or the resumed run
    of the dead trial it retries); returns the objective's value(s).

    Raises (inside Optuna): ``TrialPruned`` for a pruned run, :class:`TrialFailed` for a failed
    one, ``KeyboardInterrupt`` for an interrupted one (re-queued on the next start).
    """
    _, returns = OBJECTIVES[settings.objective]
    prune = len(returns) == 1 and settings.prune

    def objective(trial: Any) -> Any:
        params = suggest(trial, space)
        cfg = apply_params(base, params)
        run_dir, resume = _trial_run_dir(trial, cfg, settings.out)
        trial.set_user_attr("run_dir", str(run_dir))
        callback = pruning_callback(trial, cfg.epochs) if prune else None
        trial.set_user_attr("status", "running")
        try:
            outcome = trial_runs.run_trial(cfg, run_dir, resume=resume, epoch_callback=callback)
        except KeyboardInterrupt:  # Ctrl-C before training took over: re-queued on the next start
            trial.set_user_attr("status", "interrupted")
            raise
        outcome.name = f"trial {trial.number}" + (f" ({run_dir.name})" if resume else "")
        _record_outcome(trial, outcome)
        log.info(trial_runs.format_outcome(outcome, params))
        return _trial_value(outcome, returns)

    return objective


def _trial_run_dir(trial: Any, cfg: TrainConfig, out: Path) -> tuple[Path, bool]:
    """``(run directory, resume)``: a retried trial resumes the dead trial's run from its checkpoint
    when it has one; otherwise a new ``trial-NNNN`` (the old run marked failed)."""
    prior = trial.user_attrs.get("run_dir")
    if prior and trial_runs.trial_status(Path(prior)) != "finished" and trial_runs.has_checkpoint(Path(prior)):
        return Path(prior), True
    if prior:
        trial_runs.mark_failed(Path(prior), cfg, f"worker stopped; retried from scratch as trial {trial.number}")
    return out / f"trial-{trial.number:04d}", False


def _record_outcome(trial: Any, outcome: trial_runs.TrialOutcome) -> None:
    """The run's status, final metrics and error as the trial's user attributes."""
    trial.set_user_attr("status", outcome.status)
    for key in ("psnr", "bpp", "loss", "ms_ssim"):
        if not math.isnan(outcome.metric(key)):
            trial.set_user_attr(key, outcome.metric(key))
    if outcome.error:
        trial.set_user_attr("error", outcome.error[:500])


def _trial_value(outcome: trial_runs.TrialOutcome, returns: tuple[str, ...]) -> Any:
    """The objective's value(s) of a completed run; raise for any other outcome (see :func:`make_objective`)."""
    import optuna

    if outcome.status == "interrupted":
        raise KeyboardInterrupt
    completed = run_completed(outcome.status, outcome.summary)  # an early stop completes the trial
    if outcome.status == "stopped" and not completed:
        raise optuna.TrialPruned(outcome.summary.get("reason", "pruned"))
    if not completed:
        raise TrialFailed(outcome.error or outcome.status)
    values = [outcome.metric(k) for k in returns]
    if not all(math.isfinite(v) for v in values):
        raise TrialFailed(f"non-finite {', '.join(returns)} at the end of training")
    return values[0] if len(returns) == 1 else values
