"""The runs DataFrame: one row per run, and which of its runs are usable for a metric.

:func:`runs_frame` builds it from :class:`~lictrain.analysis.run_data.RunData`;
:func:`usable_runs` picks the finished runs with a finite metric (naming the others in
``notes``). The column names, the settings that vary and a configuration's label live here too:
everything the tables (:mod:`lictrain.analysis.tables`), the importance
(:mod:`lictrain.analysis.importance`) and the report read from the frame.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from lictrain.analysis.aliases import canonical_config, canonical_metrics
from lictrain.analysis.rate_rows import rate_rows
from lictrain.analysis.run_data import RunData
from lictrain.errors import DataError

__all__ = [
    "runs_frame", "usable_runs", "lambda_mask", "lambdas", "varying_params", "config_labels", "binned",
    "format_value", "MAXIMIZE", "HYPERPARAMS", "BALANCED_ONLY", "SCHEDULE_ONLY", "META", "MAX_LEVELS",
]

#: metrics where higher is better (the others -- loss, bpp, mse -- are minimised)
MAXIMIZE = {"psnr": True, "ms_ssim": True, "loss": False, "bpp": False, "mse": False}

#: config columns that describe a training configuration (seed and bookkeeping excluded)
HYPERPARAMS = ("lambda", "variable_rate", "gamma", "w_lr", "lr", "aux_lr", "model", "quality", "metric",
               "use_balanced", "balanced_method", "balanced_update", "balanced_tasks", "cautious", "adaptive_gamma",
               "gamma_strategy", "gamma_final", "gamma_decay", "batch_size", "patch_size", "epochs",
               "budget_minutes", "epoch_size", "clip_max_norm", "lr_schedule", "pretrained")

#: settings that mean nothing for a standard (non-balanced) run
BALANCED_ONLY = ("gamma", "w_lr", "balanced_method", "balanced_update", "balanced_tasks", "cautious",
                 "adaptive_gamma", "gamma_strategy", "gamma_final", "gamma_decay")

#: settings that mean nothing unless a gamma schedule runs (--adaptive_gamma)
SCHEDULE_ONLY = ("gamma_strategy", "gamma_final", "gamma_decay", "step_epochs", "adaptive_window",
                 "adaptive_threshold", "gamma_scales")

#: leading columns of the runs DataFrame
META = ("name", "state", "status", "run_id", "source", "path")


# -- the runs frame ------------------------------------------------------------------------------
def runs_frame(runs: Iterable[RunData]) -> pd.DataFrame:
    """One row per run (a variable-rate run: one per trained λ, named ``<run>@<λ>``, see
    :mod:`lictrain.analysis.rate_rows`): meta columns, config columns, then final metrics.

    Names logged by other scripts (``lmbda``, ``test/psnr``, ``test/bpp_loss``, ...) become
    lictrain's (:mod:`lictrain.analysis.aliases`).

    A summary key that is also a config key (``gamma``, ``w_lr`` and ``lr`` are both settings and
    per-epoch values) becomes ``summary/<key>``; the config column keeps the setting. Lists in the
    config become tuples (hashable, for grouping).
    """
    rows = []
    config_keys: dict[str, None] = {}
    summary_keys: dict[str, None] = {}
    variable = False
    for run in runs:
        for config, summary, suffix in rate_rows(canonical_config(run.config), canonical_metrics(run.summary)):
            config, summary = _row_values(config, summary)
            variable |= bool(suffix)
            config_keys.update(dict.fromkeys(config))
            summary_keys.update(dict.fromkeys(summary))
            rows.append({"name": (run.name or run.path.name) + suffix, "state": run.state, "status": run.status,
                         "run_id": run.run_id, "source": run.source, "path": str(run.path), **config, **summary})
    if variable:  # a fixed-rate run beside variable-rate ones: say which is which
        for row in rows:
            row.setdefault("variable_rate", False)
        config_keys.setdefault("variable_rate", None)
    front = ["lambda", "gamma", "w_lr"]
    columns = list(META) + [k for k in front if k in config_keys] + \
        [k for k in config_keys if k not in front] + [k for k in summary_keys if k not in config_keys]
    df = pd.DataFrame.from_records(rows, columns=list(dict.fromkeys(columns)))
    for column in df.columns[len(META):]:
        if df[column].dtype == object:
            converted = pd.to_numeric(df[column], errors="coerce")
            # keep numbers numeric (None -> NaN) unless real non-numeric values would be lost
            if converted.notna().sum() == df[column].notna().sum() and df[column].notna().any():
                if not df[column].dropna().map(lambda v: isinstance(v, bool)).any():
                    df[column] = converted
    return _blank_inapplicable(df).sort_values(["path"], kind="stable").reset_index(drop=True)


def _row_values(config: dict[str, Any], summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A row's config (lists as tuples, a budget's epochs as ``planned_epochs``) and numeric
    summary (``summary/<key>`` where a key is also a setting)."""
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    if config.get("budget_minutes") is not None and "epochs" in config:
        # a budget plans its epochs from the clock: the choice was the budget, not the epoch count
        config["planned_epochs"], config["epochs"] = config["epochs"], None
    numbers = {}
    for key, value in summary.items():
        if isinstance(value, (dict, list)):
            continue  # media, tables, histograms: not a number
        numbers[f"summary/{key}" if key in config or key in META else key] = value
    return config, numbers


def _blank_inapplicable(df: pd.DataFrame) -> pd.DataFrame:
    """Settings a run did not use become missing (NaN): a standard run's default ``gamma`` and
    ``w_lr``, a schedule's settings where no schedule ran. Averaging or ranking them as if they
    were real settings would credit them with what ``use_balanced`` did."""
    for switch, dependent in (("use_balanced", BALANCED_ONLY), ("adaptive_gamma", SCHEDULE_ONLY)):
        if switch not in df.columns:
            continue
        off = df[switch].map(lambda v: v is False or v == 0 or (isinstance(v, str) and v.lower() == "false"))
        off &= df[switch].notna()
        if switch == "adaptive_gamma" and "use_balanced" in df.columns:
            off |= df["use_balanced"].map(lambda v: v is False)  # no balanced optimiser, no gamma schedule
        for column in dependent:
            if column in df.columns and column != switch and off.any():
                df[column] = df[column].astype(object).where(~off, None)
                converted = pd.to_numeric(df[column], errors="coerce")
                if converted.notna().sum() == df[column].notna().sum():
                    df[column] = converted
    return df


def _names(df: pd.DataFrame, limit: int = 5) -> str:
    """The first ``limit`` run names of ``df`` (and how many more), for notes."""
    names = [str(n) for n in df["name"].tolist()]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def lambda_mask(df: pd.DataFrame, lambda_value: float) -> pd.Series:
    """Rows of ``df`` at ``lambda_value`` (relative tolerance 1e-6).

    Raises:
        DataError: If no run records λ, or none has ``lambda_value`` (naming the λ there are).
    """
    if "lambda" not in df.columns:
        raise DataError("no run records lambda (config key 'lambda'); drop the lambda filter")
    values = pd.to_numeric(df["lambda"], errors="coerce")
    mask = pd.Series(np.isclose(values.to_numpy(dtype=float), float(lambda_value), rtol=1e-6, atol=0.0),
                     index=df.index)
    if not mask.any():
        have = ", ".join(f"{v:g}" for v in sorted(values.dropna().unique()))
        raise DataError(f"no run has lambda {lambda_value:g}; runs have: {have or 'none'}")
    return mask


def usable_runs(df: pd.DataFrame, metric: str, lambda_value: float | None = None,
                params: Iterable[str] = (), notes: list[str] | None = None) -> pd.DataFrame:
    """Finished runs with a finite ``metric`` (and every ``params`` column set), at ``lambda_value``.

    Runs left out for a missing or NaN metric or parameter are named in ``notes``.

    Raises:
        DataError: If no run has the metric or a parameter at all, or none has ``lambda_value``.
    """
    notes = notes if notes is not None else []
    params = [p for p in params if p]
    for column, kind in [(metric, "metric")] + [(p, "parameter") for p in params]:
        if column not in df.columns:
            have = [c for c in df.columns if c not in META]
            raise DataError(f"no run has the {kind} {column!r}; available: {', '.join(map(str, have)) or 'none'}")
    sub = df[df["state"] == "finished"]
    if lambda_value is not None:
        sub = sub[lambda_mask(df, lambda_value)[sub.index]]
    values = pd.to_numeric(sub[metric], errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=float))
    if bad.any():
        notes.append(f"{int(bad.sum())} finished run(s) without a finite {metric!r} left out: {_names(sub[bad])}")
    sub = sub[~bad]
    for param in params:
        missing = sub[param].isna()
        if missing.any():
            notes.append(f"{int(missing.sum())} run(s) without the parameter {param!r} left out: {_names(sub[missing])}")
            sub = sub[~missing]
    return sub


def lambdas(df: pd.DataFrame) -> list[float | None]:
    """The distinct λ of ``df``, sorted; ``[None]`` when no run records one."""
    if "lambda" not in df.columns or df["lambda"].isna().all():
        return [None]
    return sorted(pd.to_numeric(df["lambda"], errors="coerce").dropna().unique().tolist())


#: a numeric setting with more distinct values than this (an Optuna range) is binned for tables
MAX_LEVELS = 8


def binned(values: pd.Series, bins: int = 6) -> pd.Series:
    """``values`` as at most ``bins`` levels when it has more than :data:`MAX_LEVELS` distinct
    numbers (continuous Optuna samples): each value becomes its bin's midpoint (geometric when
    the values are positive and span a decade). Other series come back unchanged."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any() or numeric.nunique() <= MAX_LEVELS:
        return values
    low, high = float(numeric.min()), float(numeric.max())
    log = low > 0 and high / low >= 10
    edges = np.geomspace(low, high, bins + 1) if log else np.linspace(low, high, bins + 1)
    mids = np.sqrt(edges[:-1] * edges[1:]) if log else (edges[:-1] + edges[1:]) / 2
    index = np.clip(np.searchsorted(edges, numeric.to_numpy(float), side="right") - 1, 0, bins - 1)
    return pd.Series([float(f"{m:.3g}") for m in mids[index]], index=values.index, name=values.name)


def varying_params(df: pd.DataFrame, exclude: Iterable[str] = ()) -> list[str]:
    """The :data:`HYPERPARAMS` columns that take more than one value in ``df``."""
    skip = set(exclude)
    out = []
    for p in HYPERPARAMS:
        if p in df.columns and p not in skip and df[p].dropna().map(repr).nunique() > 1:
            out.append(p)
    return out


def format_value(value: Any) -> str:
    """A setting as a label: floats in ``%g``, anything else as ``str``."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_labels(df: pd.DataFrame) -> pd.Series:
    """A label per run for its configuration: everything that varies except λ (and the seed).

    Standard (non-balanced) runs are ``standard`` (plus any non-balanced setting that varies);
    balanced runs list their varying balanced settings, e.g. ``balanced gamma=0.003 w_lr=0.025``.
    """
    params = varying_params(df, exclude=("lambda", "use_balanced"))
    balanced = df["use_balanced"] if "use_balanced" in df.columns else pd.Series(True, index=df.index)
    labels = []
    for idx, row in df.iterrows():
        is_balanced = bool(balanced.loc[idx]) if pd.notna(balanced.loc[idx]) else True
        keys = [p for p in params if is_balanced or p not in BALANCED_ONLY]
        parts = [f"{p}={format_value(row[p])}" for p in keys if pd.notna(row[p])]
        head = "balanced" if is_balanced and "use_balanced" in df.columns else ("" if is_balanced else "standard")
        labels.append(" ".join([head] + parts).strip() or "all runs")
    return pd.Series(labels, index=df.index, name="config")

