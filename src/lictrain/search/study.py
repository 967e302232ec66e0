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
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lictrain.config import TrainConfig
from lictrain.errors import ConfigError, LictrainError, StopRun
from lictrain.search.grid import ParamSpec, SweepSummary, apply_params, check_sweep_file
from lictrain.tracking.records import run_completed

__all__ = ["OBJECTIVES", "StudySettings", "storage_url", "open_study", "spent_trials", "requeue_interrupted",
           "suggest", "run_optuna", "StudyError", "TrialFailed"]

log = logging.getLogger(__name__)

#: objective name -> (directions, what a trial returns)
OBJECTIVES = {
    "loss": (["minimize"], ("loss",)),
    "bpp-psnr": (["minimize", "maximize"], ("bpp", "psnr")),
}

#: re-opens of the storage when concurrent workers race to create its tables
SCHEMA_RACE_RETRIES = 5

#: default Optuna search space when --optuna gets no --grid
DEFAULT_SPACE = ("gamma=0.0005:0.02:log", "w_lr=0.005:0.1:log")


class StudyError(LictrainError):
    """The study cannot be opened or does not match this sweep (storage URL, directions, space)."""


class TrialFailed(Exception):
    """Raised in the objective for a trial whose training failed: Optuna records FAIL, the sweep goes on."""


@dataclass
class StudySettings:
    """How an Optuna sweep runs."""

    n_trials: int
    out: Path
    storage: str | None = None  # None: sqlite:///<out>/study.db
    study_name: str = "sweep"
    objective: str = "loss"
    prune: bool = True
    prune_warmup: int | None = None  # epochs before pruning may start (default: epochs // 5)
    prune_startup: int = 3  # trials that complete before any pruning
    heartbeat: int = 60
    max_retries: int = 3
    seed: int | None = 0
    show_bar: bool | None = None


def storage_url(storage: str | None, out: Path) -> str:
    """An RDB URL: ``storage`` if it is one, ``sqlite:///<abs path>`` for a plain file path,
    ``sqlite:///<out>/study.db`` by default."""
    if storage is None:
        return f"sqlite:///{(out / 'study.db').resolve()}"
    if "://" in storage:
        return storage
    return f"sqlite:///{Path(storage).expanduser().resolve()}"


def shown_url(url: str) -> str:
    """``url`` with any password masked (for logs)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_study(settings: StudySettings, space: dict[str, ParamSpec], base: TrainConfig) -> Any:
    """Create or load the study named ``settings.study_name`` in its storage, with heartbeats.

    Raises:
        StudyError: For an unusable storage URL, or a study made with another objective or space.
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    directions, _ = OBJECTIVES[settings.objective]
    url = storage_url(settings.storage, settings.out)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(SCHEMA_RACE_RETRIES + 1):
            try:
                storage = RDBStorage(
                    url, heartbeat_interval=settings.heartbeat, grace_period=2 * settings.heartbeat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                        max_retry=settings.max_retries, inherit_intermediate_values=True),
                    engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                )
                break
            except Exception as exc:  # sqlalchemy raises many types for a bad URL or an unreachable server
                # Workers started together on a fresh database race to create Optuna's tables; the
                # loser sees a duplicate-key/already-exists error and only has to open them again.
                if attempt < SCHEMA_RACE_RETRIES and _is_schema_race(exc):
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise StudyError(f"cannot open the Optuna storage {shown_url(url)}: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0]}") from exc
    pruner = _pruner(settings, base)
    try:
        study = optuna.create_study(storage=storage, study_name=settings.study_name, directions=directions,
                                    pruner=pruner, load_if_exists=True)
    except Exception as exc:
        raise StudyError(f"cannot create or load study {settings.study_name!r} in {shown_url(url)}: "
                         f"{type(exc).__name__}: {exc}") from exc
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise StudyError(f"study {settings.study_name!r} optimises {have}, not {directions} "
                         f"(--objective {settings.objective}); use that objective or a new --study name")
    space_json = {s.label: s.to_json() for s in space.values()}
    attrs = study.user_attrs
    if "lictrain_space" in attrs and attrs["lictrain_space"] != space_json:
        raise StudyError(f"study {settings.study_name!r} searches {sorted(attrs['lictrain_space'])} with other "
                         f"ranges; pass the same --grid to resume it, or use a new --study name")
    if "lictrain_space" not in attrs:
        study.set_user_attr("lictrain_space", space_json)
        study.set_user_attr("lictrain_objective", settings.objective)
        study.set_user_attr("lictrain_base_config", base.to_dict())
    spent = len(study.trials)
    study.sampler = optuna.samplers.TPESampler(
        seed=None if settings.seed is None else settings.seed + spent,  # a resumed sweep draws new points
        n_startup_trials=max(2, min(10, settings.n_trials // 3)))
    return study


def _is_schema_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in ("duplicate key", "already exists", "uniqueviolation"))


def _pruner(settings: StudySettings, base: TrainConfig) -> Any:
    import optuna

    if not settings.prune or len(OBJECTIVES[settings.objective][0]) > 1:
        return optuna.pruners.NopPruner()
    # a budgeted trial (no --epochs) learns its length only when it calibrates: assume 10 epochs
    warmup = settings.prune_warmup if settings.prune_warmup is not None else max(1, (base.epochs or 10) // 5)
    return optuna.pruners.MedianPruner(n_startup_trials=settings.prune_startup, n_warmup_steps=warmup)


def _superseded(trials: list[Any]) -> set[int]:
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


def _wait_for_other_workers(study: Any, settings: StudySettings) -> int:
    """Before a worker leaves: wait while other workers' trials run; return trials left to run.

    A worker killed mid-trial leaves a RUNNING trial that only its stale heartbeat reveals (after
    the grace period). Were every surviving worker to leave as soon as the count is reached, that
    trial would stay failed and the study one trial short. So a worker stays until no trial is
    running; when a dead worker's trial goes stale it is failed and re-queued here, and this
    worker runs the retry.
    """
    import warnings

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
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    superseded = _superseded(study.get_trials(deepcopy=False))
    requeued = []
    import warnings

    import optuna

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


def _check_space(space: dict[str, ParamSpec], objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective == "loss" and "lmbda" in space:
        raise ConfigError("--objective loss compares R-D losses, which needs one fixed λ: drop lambda from "
                          "--grid (set it with --lambda) or use --objective bpp-psnr")


def _pruning_callback(trial: Any, epochs: int | None) -> Callable[[int, dict[str, Any]], None]:
    def report(epoch: int, metrics: dict[str, Any]) -> None:
        value = metrics.get("loss")
        value = float(value) if isinstance(value, (int, float)) else math.nan
        trial.report(value, epoch)
        last = epochs is not None and epoch >= epochs - 1
        if not last and trial.should_prune():  # the last epoch finishes the run anyway
            raise StopRun(f"pruned by the median rule after epoch {epoch} (test loss {value:.4g})")
    return report


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
    import optuna
    from optuna.trial import TrialState
    from tqdm import tqdm

    from lictrain.search.trial import format_outcome, has_checkpoint, mark_failed, run_trial, trial_status

    # every range end and list value must make a valid config before any training
    for spec in space.values():
        for value in (spec.values if spec.values is not None else (spec.low, spec.high)):
            apply_params(base, {spec.name: int(value) if spec.kind == "int" else value})
    out = settings.out
    check_sweep_file(out, "optuna", base, {"space": [s.describe() for s in space.values()],
                                           "objective": settings.objective, "study": settings.study_name,
                                           "storage": shown_url(storage_url(settings.storage, out))})
    study = open_study(settings, space, base)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL + re-queued, before counting
    requeued = requeue_interrupted(study, settings.max_retries)
    if requeued:
        log.info("re-queued interrupted trial(s) %s: they resume from their checkpoints", requeued)
    _, returns = OBJECTIVES[settings.objective]
    single = len(returns) == 1
    spent = spent_trials(study)
    remaining = max(0, settings.n_trials - spent)
    summary = SweepSummary(total=settings.n_trials, skipped=spent)
    log.info("optuna sweep: study %r in %s, %d of %d trial(s) done or running, %d to go (objective %s%s)",
             settings.study_name, shown_url(storage_url(settings.storage, out)), spent, settings.n_trials, remaining,
             settings.objective, ", median pruning" if single and settings.prune else "")
    if remaining == 0:
        return summary

    def objective(trial: Any) -> Any:
        params = suggest(trial, space)
        cfg = apply_params(base, params)
        prior = trial.user_attrs.get("run_dir")
        resume = False
        if prior and trial_status(Path(prior)) != "finished" and has_checkpoint(Path(prior)):
            run_dir, resume = Path(prior), True
        else:
            run_dir = out / f"trial-{trial.number:04d}"
            if prior:
                mark_failed(Path(prior), cfg, f"worker stopped; retried from scratch as trial {trial.number}")
        trial.set_user_attr("run_dir", str(run_dir))
        callback = _pruning_callback(trial, cfg.epochs) if single and settings.prune else None
        trial.set_user_attr("status", "running")
        try:
            outcome = run_trial(cfg, run_dir, resume=resume, epoch_callback=callback)
        except KeyboardInterrupt:  # Ctrl-C before training took over: re-queued on the next start
            trial.set_user_attr("status", "interrupted")
            raise
        outcome.name = f"trial {trial.number}" + (f" ({run_dir.name})" if resume else "")
        trial.set_user_attr("status", outcome.status)
        for key in ("psnr", "bpp", "loss", "ms_ssim"):
            if not math.isnan(outcome.metric(key)):
                trial.set_user_attr(key, outcome.metric(key))
        if outcome.error:
            trial.set_user_attr("error", outcome.error[:500])
        log.info(format_outcome(outcome, params))
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
        return values[0] if single else values

    bar = tqdm(total=settings.n_trials, initial=spent, desc="sweep", unit="trial", dynamic_ncols=True,
               disable=None if settings.show_bar is None else not settings.show_bar)

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

    try:
        while remaining > 0:
            study.optimize(objective, n_trials=remaining, callbacks=[after_trial], catch=(TrialFailed,),
                           gc_after_trial=True)
            remaining = _wait_for_other_workers(study, settings)
    except KeyboardInterrupt:
        summary.interrupted = True
        log.warning("sweep interrupted: run the same command again to resume (the interrupted trial continues "
                    "from its checkpoint)")
    finally:
        bar.close()
    summary.best = _best_line(study, settings.objective)
    return summary


def _best_line(study: Any, objective: str) -> str | None:
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
