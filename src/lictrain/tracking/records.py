"""Run records readable without W&B: ``run.json`` and ``metrics.jsonl``.

``run.json`` holds the config, the status (``running``, ``finished``, ``failed``,
``interrupted``), the final summary and the package versions; it is rewritten atomically.
``metrics.jsonl`` gets one JSON object per epoch, appended and flushed as the epoch ends, and
with ``--log-every`` step rows between them (``"kind": "step"``, never folded into the summary).
"""

from __future__ import annotations

import json
import math
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lictrain.checkpoint.io import _atomic_write

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


def package_versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide a run's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("lictrain", "torch", "torchvision", "compressai", "numpy", "wandb"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by None (JSON has no NaN) and paths by strings, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically and durably (temporary file, fsync, rename)."""
    text = (json.dumps(json_safe(data), indent=2) + "\n").encode()
    _atomic_write(path, lambda handle: handle.write(text), fsync=True)


class RunRecord:
    """Writes ``run.json`` and ``metrics.jsonl`` in a run directory."""

    def __init__(self, run_dir: Path, config: dict[str, Any], *, resumed: bool = False) -> None:
        self.run_dir = run_dir
        self.run_path = run_dir / RUN_FILE
        self.metrics_path = run_dir / METRICS_FILE
        previous = self._read_existing() if resumed else {}
        self.data: dict[str, Any] = {
            "config": config,
            "status": "running",
            "started": previous.get("started", _now()),
            "command": " ".join(sys.argv),
            "versions": package_versions(),
            "summary": previous.get("summary", {}),
            "wandb_run_id": previous.get("wandb_run_id"),
        }
        if resumed:
            self.data["resumed"] = previous.get("resumed", 0) + 1
            # other notes of the first run (its budget plan, world size, ...) stay on record
            self.data = {**{k: v for k, v in previous.items() if k != "ended"}, **self.data}
        self.flush()

    def _read_existing(self) -> dict[str, Any]:
        try:
            return json.loads(self.run_path.read_text())
        except (OSError, ValueError):
            return {}

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.flush()

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        """Append one epoch's metrics and fold them into the summary."""
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(json_safe(metrics)) + "\n")
            handle.flush()
        self.data["summary"] = {**self.data["summary"], **metrics}
        self.flush()

    def log_step(self, row: dict[str, Any]) -> None:
        """Append one step row (not part of the summary)."""
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(json_safe(row)) + "\n")
            handle.flush()

    def truncate_metrics_after(self, epoch: int, step: int | None = None) -> None:
        """Drop epoch rows of epochs >= ``epoch`` and step rows past global ``step`` (a resumed run
        rewrites those; without ``step``, step rows of epochs >= ``epoch`` go too)."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if is_step_row(row) and step is not None:
                keep = row.get("step", 0) <= step
            else:
                keep = row.get("epoch", -1) < epoch
            if keep:
                kept.append(line)
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def finish(self, status: str, **summary: Any) -> None:
        self.data["status"] = status
        self.data["ended"] = _now()
        self.data["summary"] = {**self.data["summary"], **summary}
        self.flush()

    def flush(self) -> None:
        write_json_atomic(self.run_path, self.data)


def run_completed(status: Any, summary: Any) -> bool:
    """Whether a run with this run.json ``status`` and ``summary`` is done: ``finished``, or ``stopped``
    by ``--early-stop`` (complete, unlike a run pruned by a sweep or interrupted)."""
    return status == "finished" or (status == "stopped" and isinstance(summary, dict)
                                    and summary.get("early_stopped") is True)


def is_step_row(row: Any) -> bool:
    """Whether a ``metrics.jsonl`` row is a ``--log-every`` step row (not an epoch's)."""
    return isinstance(row, dict) and row.get("kind") == "step"


def read_metrics(run_dir: Path, steps: bool = False) -> list[dict[str, Any]]:
    """The epoch rows of ``run_dir/metrics.jsonl`` (empty if absent); ``steps=True``: the step rows."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if is_step_row(row) == steps]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
