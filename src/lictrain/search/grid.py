"""Search spaces from ``key=values`` specs, grid combinations, and the grid sweep.

Spec syntax (one spec per parameter, keys are ``lictrain train`` flag names, ``lambda`` for λ,
dashes or underscores)::

    lambda=0.0018,0.0035,0.0067     a list: every value in a grid, a categorical choice for Optuna
    gamma=0.001:0.01:log            a range (Optuna only): log-uniform; ``lo:hi`` is uniform
    quality=1:3                     an integer range (Optuna only)
    use_balanced=true,false         booleans and strings are lists too

A grid runs every combination, in the order given (the last key varies fastest). Each trial's
directory is named after its parameters (``lambda0.0035-gamma0.003-w_lr0.025``), so an
interrupted grid sweep resumes by name: trials whose ``run.json`` says ``finished`` are skipped,
an ``interrupted`` (or crashed, still ``running``) trial continues from its latest checkpoint,
and a ``failed`` one is rerun from scratch (its old folder moved to ``<out>/.superseded/``).
Several workers may share one ``--out``: a trial whose directory another live run holds is
left to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from lictrain.config import BALANCED_SETTINGS, LOCAL_SETTINGS, NOT_SEARCHABLE, TrainConfig
from lictrain.errors import ConfigError
from lictrain.settings import parse_bool
from lictrain.tracking.records import run_completed

__all__ = ["ParamSpec", "parse_grid", "grid_combinations", "trial_name", "apply_params", "balanced_keys",
           "run_grid", "SweepSummary", "check_sweep_file", "NOT_SEARCHABLE"]

log = logging.getLogger(__name__)

#: settings that only the balanced optimiser reads: searching one implies --use_balanced
BALANCED_KEYS = BALANCED_SETTINGS
#: config keys that may differ between the workers or sessions of one sweep
RESUME_FREE = LOCAL_SETTINGS

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: a list of ``values``, or a ``low``..``high`` range (Optuna only)."""

    name: str  # TrainConfig field (``lmbda`` for λ)
    kind: str  # float | int | bool | str
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def label(self) -> str:
        return "lambda" if self.name == "lmbda" else self.name

    @property
    def is_range(self) -> bool:
        return self.values is None

    def describe(self) -> str:
        if self.values is not None:
            return f"{self.label}=" + ",".join(_fmt(v) for v in self.values)
        return f"{self.label}={_fmt(self.low)}:{_fmt(self.high)}" + (":log" if self.log else "")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "values": list(self.values) if self.values is not None else None,
                "low": self.low, "high": self.high, "log": self.log}


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _kind(name: str) -> str:
    annotation = str(_FIELDS[name].type)
    if "list" in annotation:
        return "list"
    for kind in ("bool", "int", "float"):
        if re.search(rf"\b{kind}\b", annotation):
            return kind
    return "str"


def _field_name(key: str) -> str:
    name = key.strip().lstrip("-").replace("-", "_")
    if name in ("lambda", "lmbda"):
        return "lmbda"
    if name not in _FIELDS:
        known = ", ".join(["lambda"] + sorted(n for n in _FIELDS if n not in NOT_SEARCHABLE and n != "lmbda"))
        raise ConfigError(f"--grid: unknown parameter {key!r}; searchable: {known}")
    if name in NOT_SEARCHABLE:
        raise ConfigError(f"--grid: {key} cannot be searched (the sweep sets it per trial, or it is a list)")
    return name


def _value(kind: str, text: str, key: str) -> Any:
    text = text.strip()
    try:
        if kind == "bool":
            return parse_bool(text)
        if kind == "int":
            return int(text)
        if kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"--grid {key}: {text!r} is not a valid {kind}") from exc
    if not text:
        raise ConfigError(f"--grid {key}: empty value")
    return text


def parse_grid(specs: Iterable[str]) -> dict[str, ParamSpec]:
    """``["lambda=0.0018,0.0035", "gamma=0.001:0.01:log"]`` -> {field name: :class:`ParamSpec`}, in order.

    Raises:
        ConfigError: For a malformed spec, an unknown or repeated key, or a bad value.
    """
    space: dict[str, ParamSpec] = {}
    for spec in specs:
        key, sep, rest = spec.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise ConfigError(f"--grid expects key=v1,v2,... or key=low:high[:log], got {spec!r}")
        name = _field_name(key)
        if name in space:
            raise ConfigError(f"--grid: {space[name].label} given twice")
        kind = _kind(name)
        label = "lambda" if name == "lmbda" else name
        parts = rest.split(":")
        if kind in ("int", "float") and len(parts) in (2, 3) and "," not in rest:
            scale = parts[2].strip().lower() if len(parts) == 3 else "linear"
            if scale not in ("log", "linear"):
                raise ConfigError(f"--grid {label}: range scale must be log or linear, got {parts[2]!r}")
            low, high = _value(kind, parts[0], label), _value(kind, parts[1], label)
            if not low < high:
                raise ConfigError(f"--grid {label}: a range needs low < high, got {low}:{high}")
            if scale == "log" and low <= 0:
                raise ConfigError(f"--grid {label}: a log range needs low > 0, got {low}")
            space[name] = ParamSpec(name, kind, low=low, high=high, log=scale == "log")
            continue
        values = tuple(dict.fromkeys(_value(kind, v, label) for v in rest.split(",")))
        space[name] = ParamSpec(name, kind, values=values)
    return space


def balanced_keys(space: dict[str, ParamSpec]) -> list[str]:
    """The searched settings that only the balanced optimiser reads."""
    return [s.label for s in space.values() if s.name in BALANCED_KEYS]


def grid_combinations(space: dict[str, ParamSpec], baseline: bool = False) -> list[dict[str, Any]]:
    """Every combination of a list-only space (field-name keys), last key fastest.

    Standard (``use_balanced=false``) combinations drop the balanced-only settings, and repeats
    are removed. ``baseline`` adds one standard run per λ (and seed) for BD-rate against the balanced runs.

    Raises:
        ConfigError: If a parameter is a range (ranges need ``--optuna``).
    """
    ranges = [s.describe() for s in space.values() if s.is_range]
    if ranges:
        raise ConfigError(f"--grid {ranges[0]} is a range: a grid needs lists (key=v1,v2) or add --optuna N")
    names = list(space)
    combos: list[dict[str, Any]] = []
    for values in itertools.product(*(space[n].values or () for n in names)):
        combo = dict(zip(names, values))
        if combo.get("use_balanced") is False:
            combo = {k: v for k, v in combo.items() if k not in BALANCED_KEYS}
        combos.append(combo)
    if baseline:  # one standard run per λ (and per seed, when the grid repeats seeds)
        lambdas = space["lmbda"].values if "lmbda" in space else (None,)
        seeds = space["seed"].values if "seed" in space else (None,)
        for lam in lambdas:
            for seed in seeds:
                combo = {"use_balanced": False} if lam is None else {"lmbda": lam, "use_balanced": False}
                combos.append(combo if seed is None else {**combo, "seed": seed})
    unique: dict[str, dict[str, Any]] = {}
    for combo in combos:
        unique.setdefault(json.dumps(combo, sort_keys=True, default=str), combo)
    return list(unique.values())


def trial_name(params: dict[str, Any]) -> str:
    """A directory name from the parameters: ``lambda0.0035-gamma0.003-w_lr0.025``; a standard
    (non-balanced) run is ``standard-lambda0.0035``."""
    items = [(k, v) for k, v in params.items() if not (k == "use_balanced" and v is False)]
    head = ["standard"] if params.get("use_balanced") is False else []
    parts = head + [f"{'lambda' if k == 'lmbda' else k}{_fmt(v)}" for k, v in items]
    name = "-".join(parts) or "default"
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", name)


def apply_params(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """``base`` with ``params`` set and validated (a standard run also turns adaptive gamma off).

    Raises:
        ConfigError: Naming the parameters when the combination is invalid.
    """
    values = dict(params)
    if values.get("use_balanced") is False:
        values.setdefault("adaptive_gamma", False)
    cfg = dataclasses.replace(base, **values)
    try:
        from lictrain.training.build import check_runnable

        cfg.validate()
        check_runnable(cfg)  # a bad model/quality/crop fails the sweep up front, not one trial mid-way
        return cfg
    except ConfigError as exc:
        from lictrain.search.trial import format_params

        raise ConfigError(f"{exc} (in the sweep's trial {format_params(params)})") from exc


# -- the sweep file: what a sweep folder was made with ------------------------------------------------
SWEEP_FILE = "sweep.json"


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RESUME_FREE}


def check_sweep_file(out: Path, mode: str, base: TrainConfig, extra: dict[str, Any]) -> None:
    """Write ``out/sweep.json`` on the first run; on later runs refuse different training flags.

    Raises:
        ConfigError: When ``out`` holds a sweep made with other fixed training flags (results
            would not be comparable): naming the first differences.
    """
    from lictrain.tracking.records import write_json_atomic

    path = out / SWEEP_FILE
    record = {"mode": mode, "base_config": base.to_dict(), **extra, "command": " ".join(sys.argv)}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        before, now = _comparable(old.get("base_config", {})), _comparable(base.to_dict())
        diffs = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
        if diffs:
            shown = ", ".join(f"{'lambda' if k == 'lmbda' else k} {before.get(k)!r} -> {now.get(k)!r}" for k in diffs[:4])
            raise ConfigError(f"{out} holds a sweep trained with other settings ({shown}); pass the same "
                              f"training flags to resume it, or choose a new --out")
        if old.get("base_config", {}).get("dataset") != base.dataset:
            log.warning("note: --dataset differs from the first session's (%s); fine if it is the same data "
                        "on another path", old.get("base_config", {}).get("dataset"))
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


# -- the grid sweep -------------------------------------------------------------------------------
@dataclass
class SweepSummary:
    """Counts of a sweep session (``skipped``: finished before; ``busy``: another worker's)."""

    total: int = 0
    finished: int = 0
    failed: int = 0
    stopped: int = 0
    skipped: int = 0
    busy: int = 0
    interrupted: bool = False
    best: str | None = None

    def line(self) -> str:
        parts = [f"{self.finished} finished", f"{self.failed} failed"]
        if self.stopped:
            parts.append(f"{self.stopped} pruned")
        if self.skipped:
            parts.append(f"{self.skipped} done earlier")
        if self.busy:
            parts.append(f"{self.busy} left to other workers")
        return f"{self.total} trial(s): " + ", ".join(parts)


def run_grid(base: TrainConfig, space: dict[str, ParamSpec], out: Path, baseline: bool = False,
             show_bar: bool | None = None) -> SweepSummary:
    """Run (or resume) every combination of ``space`` as a trial under ``out``.

    Raises:
        ConfigError: For a range in the space or an invalid combination (before any training).
        DataError: From the first trial, when the data set cannot be used.
    """
    from tqdm import tqdm

    from lictrain.search.trial import (dir_busy, format_outcome, has_checkpoint, run_trial, set_aside,
                                       trial_status)

    combos = grid_combinations(space, baseline)
    configs = [apply_params(base, c) for c in combos]  # every combination valid before any training
    check_sweep_file(out, "grid", base, {"grid": [s.describe() for s in space.values()], "baseline": baseline})
    names = [trial_name(c) for c in combos]
    summary = SweepSummary(total=len(combos))
    done = [n for n in names if trial_status(out / n) == "finished"]
    summary.skipped = len(done)
    log.info("grid sweep: %d trial(s) in %s, %d finished earlier", len(combos), out, len(done))
    bar = tqdm(total=len(combos), initial=len(done), desc="sweep", unit="trial", disable=None if show_bar is None else not show_bar, dynamic_ncols=True)
    try:
        for index, (params, cfg, name) in enumerate(zip(combos, configs, names), start=1):
            run_dir = out / name
            status = trial_status(run_dir)
            if status == "finished":
                continue
            if dir_busy(run_dir):
                summary.busy += 1
                log.info("[%d/%d] %s: another worker is running it; skipped", index, len(combos), name)
                continue
            resume = False
            if status in ("interrupted", "running") and has_checkpoint(run_dir):
                resume = True
            elif run_dir.exists() and any(run_dir.iterdir()):
                set_aside(run_dir, f"status {status or 'unknown'}, rerun from scratch")
            outcome = run_trial(cfg, run_dir, resume=resume)
            log.info(format_outcome(outcome, params, prefix=f"[{index}/{len(combos)}] "))
            if outcome.status == "busy":
                summary.busy += 1
                continue
            bar.update(1)
            if outcome.status == "interrupted":
                summary.interrupted = True
                log.warning("sweep interrupted: run the same command again to resume (%s continues from its "
                            "checkpoint)", name)
                break
            if run_completed(outcome.status, outcome.summary):
                summary.finished += 1
            else:
                summary.failed += 1
    finally:
        bar.close()
    return summary
