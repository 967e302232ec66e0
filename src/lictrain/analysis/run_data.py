"""The run record shared by the run readers: :class:`RunData`, its errors and flattening.

Used by :mod:`lictrain.analysis.wandb_offline`, :mod:`lictrain.analysis.wandb_synced` and
:mod:`lictrain.analysis.readers` (which re-exports the public names).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lictrain.errors import DataError

__all__ = ["RunData", "CorruptRunError", "PartialRun", "flatten", "clean_summary", "missing", "RUN_DIR_RE"]

#: a W&B run folder: ``[offline-]run-<YYYYmmdd_HHMMSS>-<run id>``
RUN_DIR_RE = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-([A-Za-z0-9]+)$")


class CorruptRunError(DataError):
    """A run file that cannot be decoded (bad header, checksum, record or JSON)."""


@dataclass
class RunData:
    """One run as read from disk: flat config and summary, state, where it came from."""

    run_id: str | None
    path: Path
    source: str  # "run.json", "wandb-offline", "wandb-synced", or "+"-joined for merged runs
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    state: str = "running"  # finished | failed | running | stopped
    status: str | None = None  # run.json's own status or W&B's exit description
    name: str | None = None
    exit_code: int | None = None
    history: list[dict[str, Any]] | None = None
    started: str | None = None  # sort key for folding resumed W&B runs

    def fill_from(self, other: RunData) -> None:
        """Take ``other``'s values where this run has none (this run's values win)."""
        for key, value in other.config.items():
            self.config.setdefault(key, value)
        for key, value in other.summary.items():
            if missing(self.summary.get(key)):
                self.summary[key] = value
        self.run_id = self.run_id or other.run_id
        self.name = self.name or other.name
        if self.exit_code is None:
            self.exit_code = other.exit_code
        if self.history is None:
            self.history = other.history
        self.source = "+".join(dict.fromkeys(self.source.split("+") + other.source.split("+")))


def missing(value: Any) -> bool:
    """``None`` or NaN: no value."""
    return value is None or (isinstance(value, float) and math.isnan(value))


class PartialRun(Exception):
    """A run read up to a corrupt record: the good part and the damage, for :func:`scan_runs`."""

    def __init__(self, run: RunData, damage: CorruptRunError) -> None:
        super().__init__(str(damage))
        self.run, self.damage = run, damage


def clean_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat metrics without W&B's own ``_step``/``_runtime``/``_wandb`` keys."""
    return {k: v for k, v in flatten(summary).items() if not k.startswith("_")}


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are kept as they are."""
    if not prefix and not any(type(v) is dict for v in values.values()):
        return values  # already flat (the common case)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
