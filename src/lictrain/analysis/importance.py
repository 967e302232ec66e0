"""Parameter importance: how much each varying setting explains a metric (Optuna's PED-ANOVA)."""

from __future__ import annotations

import warnings as _warnings
from typing import Any

import numpy as np
import pandas as pd

from lictrain.analysis.frame import BALANCED_ONLY, format_value, usable_runs, varying_params

__all__ = ["importance_table", "MIN_IMPORTANCE_RUNS"]

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
            distributions[p] = CategoricalDistribution(sorted({format_value(v) for v in values}))
    study = optuna.create_study(direction="maximize" if maximize else "minimize")
    for _, row in sub.iterrows():
        trial_params = {}
        for p, dist in distributions.items():
            v = row[p]
            trial_params[p] = format_value(v) if isinstance(dist, CategoricalDistribution) else (
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
