"""Optuna sweeps: TPE sampling, median pruning, resumable and shareable studies.

* **Objectives** -- ``loss`` (default): minimise the final test R-D loss at the fixed λ (λ may
  not be searched: losses at different λ do not compare); pruned by Optuna's ``MedianPruner``
  on the test loss of each epoch, reported from ``fit()``'s epoch callback, which raises
  :class:`~lictrain.errors.StopRun` to end a pruned run cleanly (status ``stopped``, Optuna
  state PRUNED). ``bpp-psnr``: two objectives, minimise bpp and maximise PSNR (a Pareto front;
  λ may be searched). Optuna cannot prune multi-objective trials, so nothing is pruned there.
* **Storage** -- any Optuna RDB URL (``--storage``); by default the SQLite file
  ``<out>/study.db``. Many workers (``lictrain sweep`` processes, on one machine with SQLite or
  on many with ``postgresql://``/``mysql://``) share a study by name (``--study``).
* **Resume** -- rerun the same command: COMPLETE and PRUNED trials stay; the study runs only
  what is missing up to ``--optuna N`` (counted over every worker). FAIL trials stay recorded
  as failed and the sweep goes on.
* **Killed workers** -- each running trial sends an Optuna heartbeat (``--heartbeat``,
  default 60 s). A trial whose heartbeat stops for twice that is failed by the next worker that
  starts a trial (``optuna.storages.fail_stale_trials``, called by ``optimize``) and re-queued
  by ``RetryHeartbeatStaleTrialCallback`` (up to ``--max-retries`` times) with the same
  parameters; the retry *resumes the dead trial's run directory from its latest checkpoint*
  (the directory is kept in the trial's user attributes). A trial stopped by Ctrl-C/SIGTERM is
  saved as a resumable ``interrupted`` run (Optuna state FAIL) and re-queued the same way the
  next time the sweep starts.

Layout: :mod:`lictrain.search.study_storage` opens the study, :mod:`lictrain.search.study_trials`
counts, re-queues and runs its trials; this module runs the sweep and re-exports their names.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable

from tqdm import tqdm

from lictrain.config import TrainConfig
from lictrain.errors import ConfigError
from lictrain.search.grid import ParamSpec, SweepSummary, apply_params, check_sweep_file
from lictrain.search.study_storage import (  # noqa: F401 (re-exported)
    OBJECTIVES, SCHEMA_RACE_RETRIES, StudyError, StudySettings, open_study, shown_url, storage_url)
from lictrain.search.study_trials import (  # noqa: F401 (re-exported)
    TrialFailed, make_objective, requeue_interrupted, spent_trials, suggest, wait_for_other_workers)

__all__ = ["OBJECTIVES", "StudySettings", "storage_url", "open_study", "spent_trials", "requeue_interrupted",
           "suggest", "run_optuna", "StudyError", "TrialFailed"]

log = logging.getLogger(__name__)

#: default Optuna search space when --optuna gets no --grid
DEFAULT_SPACE = ("gamma=0.0005:0.02:log", "w_lr=0.005:0.1:log")


def _check_space(space: dict[str, ParamSpec], objective: str) -> None:
    """A known objective, and no λ in the space of the ``loss`` objective."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective == "loss" and "lmbda" in space:
        raise ConfigError("--objective loss compares R-D losses, which needs one fixed λ: drop lambda from "
                          "--grid (set it with --lambda) or use --objective bpp-psnr")


def run_optuna(base: TrainConfig, space: dict[str, ParamSpec], settings: StudySettings) -> SweepSummary:
    """Run (or resume) an Optuna study of ``settings.n_trials`` trials in ``settings.out``.

    Raises:
        ConfigError: For an invalid space, objective or parameter combination.
        StudyError: For an unusable storage or a study that does not match.
        DataError: From the first trial, when the data set cannot be used.
    """
    import optuna

    _check_space(space, settings.objective)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial replaces Optuna's
    try:
        return _run_optuna(base, space, settings)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _run_optuna(base: TrainConfig, space: dict[str, ParamSpec], settings: StudySettings) -> SweepSummary:
    """:func:`run_optuna` with Optuna's own logging quietened."""
    _check_values(base, space)
    out = settings.out
    check_sweep_file(out, "optuna", base, {"space": [s.describe() for s in space.values()],
                                           "objective": settings.objective, "study": settings.study_name,
                                           "storage": shown_url(storage_url(settings.storage, out))})
    study = _open_and_recover(settings, space, base)
    _, returns = OBJECTIVES[settings.objective]
    spent = spent_trials(study)
    remaining = max(0, settings.n_trials - spent)
    summary = SweepSummary(total=settings.n_trials, skipped=spent)
    log.info("optuna sweep: study %r in %s, %d of %d trial(s) done or running, %d to go (objective %s%s)",
             settings.study_name, shown_url(storage_url(settings.storage, out)), spent, settings.n_trials, remaining,
             settings.objective, ", median pruning" if len(returns) == 1 and settings.prune else "")
    if remaining == 0:
        return summary
    _optimize(study, make_objective(base, space, settings), settings, summary, spent, remaining)
    summary.best = _best_line(study, settings.objective)
    return summary


def _check_values(base: TrainConfig, space: dict[str, ParamSpec]) -> None:
    """Every range end and list value must make a valid config before any training."""
    for spec in space.values():
        for value in (spec.values if spec.values is not None else (spec.low, spec.high)):
            apply_params(base, {spec.name: int(value) if spec.kind == "int" else value})


def _open_and_recover(settings: StudySettings, space: dict[str, ParamSpec], base: TrainConfig) -> Any:
    """Open the study; fail a dead worker's trial and re-queue it and the interrupted ones, before counting."""
    import optuna

    study = open_study(settings, space, base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL + re-queued, before counting
    requeued = requeue_interrupted(study, settings.max_retries)
    if requeued:
        log.info("re-queued interrupted trial(s) %s: they resume from their checkpoints", requeued)
    return study


def _optimize(study: Any, objective: Callable[[Any], Any], settings: StudySettings, summary: SweepSummary,
              spent: int, remaining: int) -> None:
    """Run trials until the study holds ``settings.n_trials`` (counting other workers'), tallying them
    in ``summary``; Ctrl-C ends the sweep resumably."""
    bar = tqdm(total=settings.n_trials, initial=spent, desc="sweep", unit="trial", dynamic_ncols=True,
               disable=None if settings.show_bar is None else not settings.show_bar)
    try:
        while remaining > 0:
            study.optimize(objective, n_trials=remaining, callbacks=[_after_trial(bar, summary, settings)],
                           catch=(TrialFailed,), gc_after_trial=True)
            remaining = wait_for_other_workers(study, settings)
    except KeyboardInterrupt:
        summary.interrupted = True
        log.warning("sweep interrupted: run the same command again to resume (the interrupted trial continues "
                    "from its checkpoint)")
    finally:
        bar.close()


def _after_trial(bar: Any, summary: SweepSummary, settings: StudySettings) -> Callable[[Any, Any], None]:
    """Optuna's trial callback: advance the bar, tally the trial, stop once other workers filled the study."""
    from optuna.trial import TrialState

    def after_trial(study: Any, frozen: Any) -> None:
        bar.update(1)
        if frozen.state == TrialState.COMPLETE:
            summary.finished += 1
        elif frozen.state == TrialState.PRUNED:
            summary.stopped += 1
        else:
            summary.failed += 1
        if spent_trials(study) >= settings.n_trials:
            study.stop()  # other workers filled the study

    return after_trial


def _best_line(study: Any, objective: str) -> str | None:
    """The sweep's closing line: the best trial, or the Pareto front's trials; None before any completed."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    if objective == "loss":
        best = study.best_trial
        return (f"best trial {best.number}: loss {best.value:.4g} ("
                + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
                + f"), {best.user_attrs.get('run_dir', '')}")
    front = study.best_trials
    return f"{len(front)} trial(s) on the bpp/PSNR Pareto front: " + ", ".join(str(t.number) for t in front[:10])
