"""A variable-rate run as one row per trained λ, so the per-λ tables hold it beside fixed runs.

A ``train --lambdas`` run records each rate's test metrics as ``<metric>@<λ>`` (``psnr@0.0067``)
and their mean under the plain name. Comparing that mean with a fixed-rate run at one λ would be
comparing a curve with a point, so :func:`rate_rows` splits the run: one row per λ, its plain
metrics the rate's own, ``lambda`` that λ and ``variable_rate`` true (a setting that tells the
tables a variable-rate model from a fixed one at the same λ).
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["rate_rows", "rate_metrics"]

#: ``<metric>@<λ>``: a per-rate value's key (lictrain.training.variable_rate.rate_key)
_RATE_KEY = re.compile(r"^(?P<metric>[A-Za-z_][\w/.-]*)@(?P<lmbda>[0-9.eE+-]+)$")


def rate_metrics(summary: dict[str, Any]) -> dict[float, dict[str, Any]]:
    """``{λ: {metric: value}}`` from a summary's ``<metric>@<λ>`` keys (empty for a fixed run)."""
    out: dict[float, dict[str, Any]] = {}
    for key, value in summary.items():
        match = _RATE_KEY.match(str(key))
        if match is None:
            continue
        try:
            lmbda = float(match["lmbda"])
        except ValueError:
            continue
        if math.isfinite(lmbda) and lmbda > 0:
            out.setdefault(lmbda, {})[match["metric"]] = value
    return out


def rate_rows(config: dict[str, Any], summary: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    """``(config, summary, name suffix)`` per row this run contributes.

    A fixed-rate run gives one row (itself, suffix ``""``); a variable-rate run (``lambdas``
    with two or more values and per-rate metrics) gives one per trained λ that has metrics, its
    plain metrics replaced by that rate's, suffix ``@λ``. Whole-run values that are not
    per-rate (``lr``, ``epoch``, ``train/...``, ``best_*``) stay on every row.
    """
    trained = config.get("lambdas")
    per_rate = rate_metrics(summary)
    if not isinstance(trained, (list, tuple)) or len(trained) < 2 or not per_rate:
        return [(config, summary, "")]
    shared = {k: v for k, v in summary.items() if not _RATE_KEY.match(str(k))}
    rows = []
    for lmbda in sorted(per_rate):
        metrics = per_rate[lmbda]
        row_summary = {**{k: v for k, v in shared.items() if k not in metrics}, **metrics}
        rows.append(({**config, "lambda": lmbda, "variable_rate": True}, row_summary, f"@{lmbda:g}"))
    return rows
