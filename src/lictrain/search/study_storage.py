"""Opening an Optuna study: its storage URL, the schema race of fresh databases, and the checks
that a study found by name matches this sweep (objective and space); sampler and pruner set."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lictrain.config import TrainConfig
from lictrain.errors import LictrainError
from lictrain.search.grid import ParamSpec

__all__ = ["OBJECTIVES", "SCHEMA_RACE_RETRIES", "StudyError", "StudySettings", "storage_url", "shown_url",
           "open_study"]

#: objective name -> (directions, what a trial returns)
OBJECTIVES = {
    "loss": (["minimize"], ("loss",)),
    "bpp-psnr": (["minimize", "maximize"], ("bpp", "psnr")),
}

#: re-opens of the storage when concurrent workers race to create its tables
SCHEMA_RACE_RETRIES = 5


class StudyError(LictrainError):
    """The study cannot be opened or does not match this sweep (storage URL, directions, space)."""


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
    """Whether ``exc`` is a worker losing the race to create Optuna's tables (open them again)."""
    text = str(exc).lower()
    return any(marker in text for marker in ("duplicate key", "already exists", "uniqueviolation"))


def _pruner(settings: StudySettings, base: TrainConfig) -> Any:
    """The median pruner for a single-objective sweep with pruning on, else none."""
    import optuna

    if not settings.prune or len(OBJECTIVES[settings.objective][0]) > 1:
        return optuna.pruners.NopPruner()
    # a budgeted trial (no --epochs) learns its length only when it calibrates: assume 10 epochs
    warmup = settings.prune_warmup if settings.prune_warmup is not None else max(1, (base.epochs or 10) // 5)
    return optuna.pruners.MedianPruner(n_startup_trials=settings.prune_startup, n_warmup_steps=warmup)
