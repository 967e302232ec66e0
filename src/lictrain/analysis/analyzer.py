"""``HyperparameterAnalyzer``: runs on disk -> one DataFrame -> tables -> figures and a report.

The data is computed apart from the drawing: the module-level functions here take the runs
DataFrame and return DataFrames (:func:`usable_runs`, :func:`recommend`, :func:`heatmap_tables`,
:func:`comparison_table`, :func:`rd_table`, :func:`bd_rate_table`, :func:`pareto_table`,
:func:`importance_table`); :mod:`lictrain.analysis.plots` draws them and
:mod:`lictrain.analysis.report` writes them out. :class:`HyperparameterAnalyzer` ties the
three together behind the guide's interface.

A run is *usable* for a metric when its state is ``finished`` and the metric is a finite
number: failed, stopped (pruned or interrupted) and running runs, and runs whose metric is
missing or NaN, are never recommended, drawn or fitted.
"""

from __future__ import annotations

import logging
import math
import warnings as _warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from lictrain.analysis.aliases import canonical_config, canonical_metrics
from lictrain.analysis.readers import RunData, scan_runs
from lictrain.errors import DataError
from lictrain.evaluation.metrics import ms_ssim_db
from lictrain.evaluation.rd import bd_delta

__all__ = [
    "HyperparameterAnalyzer", "runs_frame", "usable_runs", "recommend", "heatmap_tables",
    "comparison_table", "config_labels", "rd_table", "bd_rate_table", "pareto_table",
    "importance_table", "varying_params", "binned", "MAXIMIZE", "HYPERPARAMS", "BALANCED_ONLY",
]

log = logging.getLogger(__name__)

#: metrics where higher is better (the others -- loss, bpp, mse -- are minimised)
MAXIMIZE = {"psnr": True, "ms_ssim": True, "loss": False, "bpp": False, "mse": False}

#: config columns that describe a training configuration (seed and bookkeeping excluded)
HYPERPARAMS = ("lambda", "gamma", "w_lr", "lr", "aux_lr", "model", "quality", "metric", "use_balanced",
               "balanced_method", "balanced_update", "balanced_tasks", "cautious", "adaptive_gamma",
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
    """One row per run: meta columns, config columns, then final metrics.

    Names logged by other scripts (``lmbda``, ``test/psnr``, ``test/bpp_loss``, ...) become
    lictrain's (:mod:`lictrain.analysis.aliases`).

    A summary key that is also a config key (``gamma``, ``w_lr`` and ``lr`` are both settings and
    per-epoch values) becomes ``summary/<key>``; the config column keeps the setting. Lists in the
    config become tuples (hashable, for grouping).
    """
    rows = []
    config_keys: dict[str, None] = {}
    summary_keys: dict[str, None] = {}
    for run in runs:
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in canonical_config(run.config).items()}
        if config.get("budget_minutes") is not None and "epochs" in config:
            # a budget plans its epochs from the clock: the choice was the budget, not the epoch count
            config["planned_epochs"], config["epochs"] = config["epochs"], None
        summary = {}
        for key, value in canonical_metrics(run.summary).items():
            if isinstance(value, (dict, list)):
                continue  # media, tables, histograms: not a number
            summary[f"summary/{key}" if key in config or key in META else key] = value
        config_keys.update(dict.fromkeys(config))
        summary_keys.update(dict.fromkeys(summary))
        rows.append({"name": run.name or run.path.name, "state": run.state, "status": run.status,
                     "run_id": run.run_id, "source": run.source, "path": str(run.path), **config, **summary})
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
    names = [str(n) for n in df["name"].tolist()]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _lambda_mask(df: pd.DataFrame, lambda_value: float) -> pd.Series:
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
        sub = sub[_lambda_mask(df, lambda_value)[sub.index]]
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


def recommend(df: pd.DataFrame, top_k: int = 5, lambda_value: float | None = None, metric: str = "psnr",
              maximize: bool = True, notes: list[str] | None = None) -> pd.DataFrame:
    """The ``top_k`` configurations by their mean ``metric`` over seeds.

    Columns: ``gamma``, ``w_lr``, the metric (the mean over the configuration's runs), ``lambda``,
    ``name`` (its best run), ``runs`` and ``ci95`` (half-width of the 95% t-interval of the mean;
    NaN for one run). Runs that differ only in their seed are one configuration. Only balanced
    runs are ranked when there are any (a standard run's gamma and w_lr were never used);
    ``lambda_value=None`` ranks every λ together. ``notes`` gets a line when the ranking cannot
    be trusted: one seed per configuration, or a first place within the second's interval.
    """
    if top_k < 1:
        raise DataError(f"top_k must be >= 1, got {top_k}")
    sub = usable_runs(df, metric, lambda_value, notes=notes)
    if "use_balanced" in sub.columns:
        balanced = sub[sub["use_balanced"] == True]  # noqa: E712 - a column of bools/NaN
        if len(balanced):
            sub = balanced
    sub = sub.assign(**{metric: pd.to_numeric(sub[metric])}, config=config_labels(sub))
    if "lambda" not in sub.columns:
        sub = sub.assign(**{"lambda": np.nan})
    rows = []
    for _, group in sub.groupby(["config", "lambda"], dropna=False, sort=False):
        group = group.sort_values(metric, ascending=not maximize, kind="stable")
        values = group[metric].to_numpy(float)
        first = group.iloc[0]
        rows.append({"gamma": first.get("gamma", np.nan), "w_lr": first.get("w_lr", np.nan), metric: values.mean(),
                     "lambda": first["lambda"], "name": first["name"], "runs": len(values), "ci95": _ci95(values)})
    columns = ["gamma", "w_lr", metric, "lambda", "name", "runs", "ci95"]
    ranked = pd.DataFrame(rows, columns=list(dict.fromkeys(columns)))
    ranked = ranked.sort_values(metric, ascending=not maximize, kind="stable").reset_index(drop=True)
    if notes is not None and len(ranked) > 1:
        _note_uncertainty(ranked, metric, notes)
    return ranked.head(top_k)


def _ci95(values: np.ndarray) -> float:
    """Half-width of the 95% t-interval of the mean (NaN for fewer than two values)."""
    if len(values) < 2:
        return math.nan
    from scipy import stats

    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def _note_uncertainty(ranked: pd.DataFrame, metric: str, notes: list[str]) -> None:
    """Say when the first place is not supported by the data."""
    if (ranked["runs"] < 2).all():
        notes.append(f"each configuration ran with one seed: the {metric} ranking has no uncertainty estimate and "
                     "may not survive a re-run; repeat it (lictrain sweep --seeds 3) before trusting a recommendation")
        return
    a, b = ranked.iloc[0], ranked.iloc[1]
    spread = np.nan_to_num([a["ci95"], b["ci95"]], nan=np.inf)
    if abs(a[metric] - b[metric]) <= spread[0] + spread[1]:
        notes.append(f"the best configuration ({a[metric]:.4g} ± {a['ci95']:.2g}) is within the 95% interval of the "
                     f"second ({b[metric]:.4g} ± {b['ci95']:.2g}): the data do not rank them; add seeds")


def _lambdas(df: pd.DataFrame) -> list[float | None]:
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


def heatmap_tables(df: pd.DataFrame, param1: str, param2: str, metric: str, lambda_value: float | None = None,
                   notes: list[str] | None = None) -> dict[float | None, pd.DataFrame]:
    """λ -> pivot table (rows ``param1``, columns ``param2``, mean ``metric``); one λ or every λ.

    Continuous settings (more than :data:`MAX_LEVELS` values) are binned, see :func:`binned`."""
    sub = usable_runs(df, metric, lambda_value, params=[param1, param2], notes=notes)
    if sub.empty:
        raise DataError(f"no finished run with {metric!r}, {param1!r} and {param2!r} to draw")
    sub = sub.assign(**{param1: binned(sub[param1]), param2: binned(sub[param2])})
    tables: dict[float | None, pd.DataFrame] = {}
    for lam in ([lambda_value] if lambda_value is not None else _lambdas(sub)):
        part = sub if lam is None else sub[_lambda_mask(sub, lam)]
        part = part.assign(**{metric: pd.to_numeric(part[metric])})
        tables[lam] = part.pivot_table(values=metric, index=param1, columns=param2, aggfunc="mean")
    return tables


def comparison_table(df: pd.DataFrame, param: str, metrics: tuple[str, ...] = ("psnr", "bpp"),
                     notes: list[str] | None = None) -> pd.DataFrame:
    """Per λ and ``param`` value (binned when continuous): mean, std and count of each metric."""
    sub = usable_runs(df, metrics[0], params=[param], notes=notes)
    for metric in metrics[1:]:
        sub = usable_runs(sub, metric, notes=notes)
    if sub.empty:
        raise DataError(f"no finished run with {param!r} and {', '.join(metrics)} to compare")
    sub = sub.assign(**{m: pd.to_numeric(sub[m]) for m in metrics}, **{param: binned(sub[param])})
    if "lambda" not in sub.columns:
        sub = sub.assign(**{"lambda": np.nan})
    grouped = sub.groupby(["lambda", param], dropna=False)
    out = grouped[list(metrics)].agg(["mean", "std", "count"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    return out.reset_index()


def varying_params(df: pd.DataFrame, exclude: Iterable[str] = ()) -> list[str]:
    """The :data:`HYPERPARAMS` columns that take more than one value in ``df``."""
    skip = set(exclude)
    out = []
    for p in HYPERPARAMS:
        if p in df.columns and p not in skip and df[p].dropna().map(repr).nunique() > 1:
            out.append(p)
    return out


def _fmt(value: Any) -> str:
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
        parts = [f"{p}={_fmt(row[p])}" for p in keys if pd.notna(row[p])]
        head = "balanced" if is_balanced and "use_balanced" in df.columns else ("" if is_balanced else "standard")
        labels.append(" ".join([head] + parts).strip() or "all runs")
    return pd.Series(labels, index=df.index, name="config")


def rd_table(df: pd.DataFrame, rate: str = "bpp", distortion: str = "psnr",
             notes: list[str] | None = None) -> pd.DataFrame:
    """RD points per configuration: ``config``, ``standard``, ``lambda``, mean ``bpp`` and ``psnr``, ``runs``."""
    sub = usable_runs(df, distortion, params=["lambda"] if "lambda" in df.columns else [], notes=notes)
    sub = usable_runs(sub, rate, notes=notes)
    if sub.empty:
        return pd.DataFrame(columns=["config", "standard", "lambda", rate, distortion, "runs"])
    sub = sub.assign(config=config_labels(sub), **{rate: pd.to_numeric(sub[rate]), distortion: pd.to_numeric(sub[distortion])})
    if "lambda" not in sub.columns:
        sub = sub.assign(**{"lambda": np.nan})
    standard = (sub["use_balanced"] == False) if "use_balanced" in sub.columns else pd.Series(False, index=sub.index)  # noqa: E712
    sub = sub.assign(standard=standard.astype(bool))
    out = sub.groupby(["config", "standard", "lambda"], dropna=False).agg(
        **{rate: (rate, "mean"), distortion: (distortion, "mean"), "runs": (rate, "size")}).reset_index()
    return out.sort_values(["standard", "config", "lambda"], ascending=[False, True, True], kind="stable").reset_index(drop=True)


def _anchor_for(config: str, anchors: list[str]) -> str | None:
    """The standard configuration sharing ``config``'s non-balanced settings (or the only one)."""
    if len(anchors) == 1:
        return anchors[0]
    mine = {part for part in config.split()[1:] if part.split("=")[0] not in BALANCED_ONLY}
    for anchor in anchors:
        if set(anchor.split()[1:]) == mine:
            return anchor
    return None


def bd_rate_table(rd: pd.DataFrame, rate: str = "bpp", distortion: str = "psnr") -> pd.DataFrame:
    """BD-rate (%) of every balanced configuration against the standard one (``bjontegaard``, pchip).

    Negative means fewer bits for the same PSNR. Needs at least two λ per curve, with PSNR and
    bpp both rising with λ, and the curves must share enough quality range
    (:func:`lictrain.evaluation.rd.bd_delta`: 0.5 dB, 2 points of each); otherwise the row says
    why there is no number. ``shared_db``/``shared_bpp``: the range both curves cover.
    """
    columns = ["config", "anchor", "points", "bd_rate_pct", "shared_db", "shared_bpp", "note"]
    rows = []
    anchors = sorted(rd.loc[rd["standard"], "config"].unique()) if len(rd) else []
    for config in [c for c in dict.fromkeys(rd["config"]) if c not in anchors]:
        anchor = _anchor_for(config, anchors)
        test = rd[rd["config"] == config].sort_values(distortion)
        row = {"config": config, "anchor": anchor or "", "points": len(test), "bd_rate_pct": math.nan,
               "shared_db": math.nan, "shared_bpp": "", "note": ""}
        if anchor is None:
            row["note"] = "no standard (non-balanced) runs to compare with" if not anchors else "no matching standard configuration"
            rows.append(row)
            continue
        ref = rd[rd["config"] == anchor].sort_values(distortion)
        problem = _curve_problem(ref, rate, distortion, "standard") or _curve_problem(test, rate, distortion, "this")
        if problem:
            row["note"] = problem
            rows.append(row)
            continue
        quality = (lambda f: [ms_ssim_db(v) for v in f[distortion]]) if distortion == "ms_ssim" else (
            lambda f: f[distortion].to_numpy())
        res = bd_delta(ref[rate].to_numpy(), quality(ref), test[rate].to_numpy(), quality(test))
        row.update(bd_rate_pct=res.bd_rate, shared_db=res.shared_db, shared_bpp="{:.3g}-{:.3g}".format(*res.shared_bpp),
                   note="; ".join(n for n in res.notes if "BD-quality" not in n))  # a BD-rate table: rate notes
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _curve_problem(points: pd.DataFrame, rate: str, distortion: str, which: str) -> str:
    if len(points) < 2:
        return f"{which} curve has {len(points)} λ point(s); BD-rate needs >= 2"
    d = points[distortion].to_numpy(dtype=float)
    r = points[rate].to_numpy(dtype=float)
    if np.any(np.diff(d) <= 0) or np.any(np.diff(r) <= 0) or np.any(r <= 0):
        return f"{which} curve is not monotonic (bpp and PSNR must both rise with λ)"
    return ""


def pareto_table(df: pd.DataFrame, rate: str = "bpp", distortion: str = "psnr",
                 notes: list[str] | None = None) -> pd.DataFrame:
    """Every usable run with its ``bpp``, ``psnr`` and ``pareto`` (True if no run has both fewer
    bits and a higher PSNR), sorted by bpp."""
    sub = usable_runs(usable_runs(df, distortion, notes=notes), rate, notes=notes)
    keep = [c for c in ("name", "lambda", "gamma", "w_lr", "use_balanced") if c in sub.columns]
    out = sub[keep].assign(**{rate: pd.to_numeric(sub[rate]), distortion: pd.to_numeric(sub[distortion])})
    out = out.sort_values([rate, distortion], ascending=[True, False], kind="stable").reset_index(drop=True)
    best = -math.inf
    front = []
    for value in out[distortion]:
        front.append(value > best)
        best = max(best, value)
    return out.assign(pareto=front)


#: fewer finished runs than this: no importance (importance from a handful of points is noise)
MIN_IMPORTANCE_RUNS = 4


def importance_table(df: pd.DataFrame, metric: str = "psnr", maximize: bool = True,
                     lambda_value: float | None = None, notes: list[str] | None = None) -> pd.DataFrame:
    """Importance of each varying hyperparameter for ``metric`` (Optuna's PED-ANOVA evaluator: numpy only, deterministic).

    The runs become trials of an in-memory Optuna study (numbers -> float/int distributions,
    log-scaled when they span a decade or more; anything else categorical). Returns ``param``
    and ``importance`` (summing to 1), empty with a note when there are too few runs.
    """
    sub = usable_runs(df, metric, lambda_value, notes=notes)
    params = varying_params(sub, exclude=("lambda",) if lambda_value is not None else ())
    params = [p for p in params if sub[p].notna().all()]
    empty = pd.DataFrame(columns=["param", "importance"])
    if len(sub) < MIN_IMPORTANCE_RUNS or not params:
        if notes is not None:
            notes.append(f"parameter importance needs >= {MIN_IMPORTANCE_RUNS} finished runs and a varying "
                         f"parameter; have {len(sub)} run(s), varying: {', '.join(params) or 'none'}")
        return empty
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions: dict[str, Any] = {}
    for p in params:
        values = sub[p].tolist()
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            distributions[p] = IntDistribution(int(min(values)), int(max(values)))
        elif all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
            low, high = float(min(values)), float(max(values))
            distributions[p] = FloatDistribution(low, high, log=low > 0 and high / low >= 10)
        else:
            distributions[p] = CategoricalDistribution(sorted({_fmt(v) for v in values}))
    study = optuna.create_study(direction="maximize" if maximize else "minimize")
    for _, row in sub.iterrows():
        trial_params = {}
        for p, dist in distributions.items():
            v = row[p]
            trial_params[p] = _fmt(v) if isinstance(dist, CategoricalDistribution) else (
                int(v) if isinstance(dist, IntDistribution) else float(v))
        study.add_trial(optuna.trial.create_trial(params=trial_params, distributions=distributions,
                                                  value=float(row[metric])))
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")  # PED-ANOVA warns on small studies; MIN_IMPORTANCE_RUNS guards those
            scores = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except Exception as exc:  # optuna refuses degenerate inputs with several exception types
        if notes is not None:
            notes.append(f"parameter importance failed: {type(exc).__name__}: {exc}")
        return empty
    table = pd.DataFrame({"param": list(scores), "importance": [float(v) for v in scores.values()]})
    return pd.concat([table, _balanced_only_importance(sub, metric, maximize, params, notes)], ignore_index=True)


def _balanced_only_importance(sub: pd.DataFrame, metric: str, maximize: bool, used: list[str],
                              notes: list[str] | None) -> pd.DataFrame:
    """Importance of the balanced-only settings among the balanced runs alone (where they apply),
    as rows ``<param> (balanced runs)``; empty when the main table already covers them."""
    if "use_balanced" not in used:
        return pd.DataFrame(columns=["param", "importance"])
    balanced = sub[sub["use_balanced"].map(lambda v: v is True or v == 1)]
    balanced = balanced.drop(columns=["use_balanced"])
    inner = importance_table(balanced, metric, maximize, notes=None) if len(balanced) else None
    if inner is None or inner.empty:
        return pd.DataFrame(columns=["param", "importance"])
    inner = inner[inner["param"].isin(BALANCED_ONLY)]
    if notes is not None and not inner.empty:
        notes.append(f"settings of the balanced optimiser ranked among the {len(balanced)} balanced runs only "
                     "(they do not apply to standard runs)")
    return inner.assign(param=inner["param"] + " (balanced runs)")


# -- the guide's interface -------------------------------------------------------------------
class HyperparameterAnalyzer:
    """Post-hoc analysis of a hyperparameter search (section 3 of the guide), offline.

    Args:
        results_dir: A folder holding runs at any depth: lictrain run directories
            (``run.json``), W&B offline runs and synced W&B run folders.
        output_dir: Where figures and reports go (default: ``results_dir``).
        workers: Processes for reading many run files (``None``: automatic).

    Example::

        analyzer = HyperparameterAnalyzer("outputs/hparam_search")
        df = analyzer.load_results()
        print(analyzer.recommend_parameters(top_k=5, lambda_value=0.0035))
        analyzer.plot_heatmap("gamma", "w_lr", "psnr", lambda_value=0.0035)
    """

    def __init__(self, results_dir: str | Path, output_dir: str | Path | None = None,
                 workers: int | None = None) -> None:
        self.results_dir = Path(results_dir).expanduser()
        self.output_dir = Path(output_dir).expanduser() if output_dir is not None else self.results_dir
        self.workers = workers
        self.df: pd.DataFrame | None = None
        #: one line per problem met (unreadable files, runs left out), in order
        self.warnings: list[str] = []

    # -- loading -------------------------------------------------------------------------------
    def load_results(self) -> pd.DataFrame:
        """Read every run below ``results_dir`` into :attr:`df` (one row per run) and return it.

        Columns: ``name``, ``state`` (``finished``/``failed``/``running``/``stopped``), ``status``,
        ``run_id``, ``source``, ``path``, then the config (``lambda``, ``gamma``, ``w_lr``, ...)
        and the final metrics (``loss``, ``bpp``, ``psnr``, ``ms_ssim``, ...).

        Raises:
            DataError: If the folder is missing or holds no run.
        """
        runs, problems = scan_runs(self.results_dir, workers=self.workers)
        for problem in problems:
            self._warn(problem)
        if not runs:
            raise DataError(f"no runs found in {self.results_dir} (looked for run.json, "
                            "wandb/offline-run-*/run-*.wandb and synced wandb/run-*/files/)")
        self.df = runs_frame(runs)
        return self.df

    def _frame(self) -> pd.DataFrame:
        if self.df is None:
            self.load_results()
        assert self.df is not None
        return self.df

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("warning: %s", message)

    def _notes(self) -> list[str]:
        return _Notes(self)

    # -- tables --------------------------------------------------------------------------------
    def recommend_parameters(self, top_k: int = 5, lambda_value: float | None = None, metric: str = "psnr",
                             maximize: bool = True) -> pd.DataFrame:
        """The ``top_k`` finished runs by ``metric``: ``gamma``, ``w_lr``, the metric, ``lambda``, ``name``.

        ``lambda_value=None`` ranks runs of all λ together; failed runs and runs whose metric is
        missing or NaN are never recommended.
        """
        return recommend(self._frame(), top_k, lambda_value, metric, maximize, notes=self._notes())

    def rd_curves(self) -> pd.DataFrame:
        """RD points (mean bpp and PSNR per λ) of every configuration; see :func:`rd_table`."""
        return rd_table(self._frame(), notes=self._notes())

    def bd_rates(self) -> pd.DataFrame:
        """BD-rate of each balanced configuration against the standard runs; see :func:`bd_rate_table`."""
        return bd_rate_table(self.rd_curves())

    def pareto_front(self) -> pd.DataFrame:
        """The runs on the bpp/PSNR Pareto front (fewest bits for their PSNR)."""
        table = pareto_table(self._frame(), notes=self._notes())
        return table[table["pareto"]].drop(columns="pareto").reset_index(drop=True)

    def parameter_importance(self, metric: str = "psnr", maximize: bool | None = None,
                             lambda_value: float | None = None) -> pd.DataFrame:
        """PED-ANOVA importance of each varying hyperparameter for ``metric``; see :func:`importance_table`."""
        maximize = MAXIMIZE.get(metric, True) if maximize is None else maximize
        return importance_table(self._frame(), metric, maximize, lambda_value, notes=self._notes())

    # -- figures -------------------------------------------------------------------------------
    def _out(self, output_dir: str | Path | None) -> Path:
        out = Path(output_dir).expanduser() if output_dir is not None else self.output_dir
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot write figures to {out} ({exc.strerror}); pass a writable output folder") from exc
        return out

    def plot_heatmap(self, param1: str, param2: str, metric: str, lambda_value: float | None = None,
                     output_dir: str | Path | None = None) -> Path:
        """Heatmap of the mean ``metric`` over ``param1`` x ``param2`` (one panel per λ when
        ``lambda_value`` is None); returns the PNG's path."""
        from lictrain.analysis.plots import plot_heatmaps

        tables = heatmap_tables(self._frame(), param1, param2, metric, lambda_value, notes=self._notes())
        tag = "all" if lambda_value is None else f"{lambda_value:g}"
        path = self._out(output_dir) / f"heatmap_{metric}_{param1}_{param2}_lambda-{tag}.png"
        return plot_heatmaps(tables, param1, param2, metric, path)

    def plot_comparison(self, param_name: str, output_dir: str | Path | None = None) -> Path:
        """PSNR and bpp (own axes) against ``param_name``, one panel per λ; returns the PNG's path."""
        from lictrain.analysis.plots import plot_comparison

        table = comparison_table(self._frame(), param_name, notes=self._notes())
        return plot_comparison(table, param_name, self._out(output_dir) / f"comparison_{param_name}.png")

    def plot_rd_curves(self, output_dir: str | Path | None = None) -> Path:
        """RD curves per configuration, BD-rates in the legend; returns the PNG's path."""
        from lictrain.analysis.plots import plot_rd_curves

        rd = self.rd_curves()
        if rd.empty:
            raise DataError("no finished run with bpp and psnr: no RD curve to draw")
        return plot_rd_curves(rd, bd_rate_table(rd), self._out(output_dir) / "rd_curves.png")

    def plot_pareto(self, output_dir: str | Path | None = None) -> Path:
        """All finished runs in the bpp/PSNR plane with their Pareto front; returns the PNG's path."""
        from lictrain.analysis.plots import plot_pareto

        table = pareto_table(self._frame(), notes=self._notes())
        if table.empty:
            raise DataError("no finished run with bpp and psnr: no Pareto front to draw")
        return plot_pareto(table, self._out(output_dir) / "pareto.png")

    def plot_importance(self, metric: str = "psnr", output_dir: str | Path | None = None) -> Path | None:
        """Bar chart of :meth:`parameter_importance`; ``None`` when there is too little data."""
        from lictrain.analysis.plots import plot_importance

        table = self.parameter_importance(metric)
        if table.empty:
            return None
        return plot_importance(table, metric, self._out(output_dir) / f"importance_{metric}.png")

    def report(self, output_dir: str | Path | None = None, fmt: str = "md", metric: str = "psnr",
               lambda_value: float | None = None, maximize: bool | None = None, top_k: int = 5) -> Path:
        """Write a Markdown (``fmt="md"``) or HTML report with every table and figure; returns its path."""
        from lictrain.analysis.report import write_report

        maximize = MAXIMIZE.get(metric, True) if maximize is None else maximize
        return write_report(self, self._out(output_dir), fmt=fmt, metric=metric, lambda_value=lambda_value,
                            maximize=maximize, top_k=top_k)


class _Notes(list):
    """A list whose appends become analyzer warnings (logged once each)."""

    def __init__(self, analyzer: HyperparameterAnalyzer) -> None:
        super().__init__()
        self._analyzer = analyzer

    def append(self, message: str) -> None:  # type: ignore[override]
        super().append(message)
        self._analyzer._warn(message)
