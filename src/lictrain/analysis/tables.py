"""Tables computed from the runs DataFrame: recommendations, heatmaps, comparisons, RD, BD-rate, Pareto.

Each function takes the frame of :func:`lictrain.analysis.frame.runs_frame` and returns a
DataFrame (or a dict of them); runs left out are named in ``notes``. Drawing them is
:mod:`lictrain.analysis.plots`' job.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lictrain.analysis.frame import BALANCED_ONLY, binned, config_labels, lambda_mask, lambdas, usable_runs
from lictrain.errors import DataError
from lictrain.evaluation.metrics import ms_ssim_db
from lictrain.evaluation.rd import bd_delta

__all__ = ["recommend", "heatmap_tables", "comparison_table", "rd_table", "bd_rate_table", "pareto_table"]


def recommend(df: pd.DataFrame, top_k: int = 5, lambda_value: float | None = None, metric: str = "psnr",
              maximize: bool = True, notes: list[str] | None = None) -> pd.DataFrame:
    """The ``top_k`` configurations by their mean ``metric`` over seeds.

    Columns: ``gamma``, ``w_lr``, ``variable_rate`` (when a variable-rate run is among them: its
    rows are the rates of :mod:`lictrain.analysis.rate_rows`), the metric (the mean over the
    configuration's runs), ``lambda``, ``name`` (its best run), ``runs`` and ``ci95`` (half-width of the 95% t-interval of the mean;
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
        kind = {"variable_rate": bool(first["variable_rate"])} if "variable_rate" in sub.columns else {}
        rows.append({"gamma": first.get("gamma", np.nan), "w_lr": first.get("w_lr", np.nan), **kind,
                     metric: values.mean(), "lambda": first["lambda"], "name": first["name"], "runs": len(values),
                     "ci95": _ci95(values)})
    columns = ["gamma", "w_lr", *(["variable_rate"] if "variable_rate" in sub.columns else []), metric, "lambda",
               "name", "runs", "ci95"]
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


def heatmap_tables(df: pd.DataFrame, param1: str, param2: str, metric: str, lambda_value: float | None = None,
                   notes: list[str] | None = None) -> dict[float | None, pd.DataFrame]:
    """λ -> pivot table (rows ``param1``, columns ``param2``, mean ``metric``); one λ or every λ.

    Continuous settings (more than :data:`MAX_LEVELS` values) are binned, see :func:`binned`."""
    sub = usable_runs(df, metric, lambda_value, params=[param1, param2], notes=notes)
    if sub.empty:
        raise DataError(f"no finished run with {metric!r}, {param1!r} and {param2!r} to draw")
    sub = sub.assign(**{param1: binned(sub[param1]), param2: binned(sub[param2])})
    tables: dict[float | None, pd.DataFrame] = {}
    for lam in ([lambda_value] if lambda_value is not None else lambdas(sub)):
        part = sub if lam is None else sub[lambda_mask(sub, lam)]
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
