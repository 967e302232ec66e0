"""Run records readable without W&B: ``run.json`` and ``metrics.jsonl``.

``run.json`` holds the config, the status, the final summary and the package versions; it is
rewritten atomically. Statuses: ``running``, ``finished``, ``failed``, ``interrupted``,
``stopped`` (written by the run), and ``crashed``: never written, it is how
:func:`effective_status` reads a ``running`` whose process is gone (``kill -9``, out of memory,
a disk too full to rewrite ``run.json``), told by the run directory's lock.
``metrics.jsonl`` gets one JSON object per epoch, appended and flushed as the epoch ends, and
with ``--log-every`` step rows between them (``"kind": "step"``, never folded into the summary).
"""

from __future__ import annotations

import json
import math
import platform
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lictrain.checkpoint.io import atomic_write
from lictrain.checkpoint.lock import lock_held
from lictrain.command import train_command
from lictrain.config import TrainConfig

RUN_FILE = "run.json"
#: what a run's end recorded (``finish`` summary keys), dropped when it resumes
ENDING_KEYS = ("signal", "error", "reason", "early_stopped", "budget_cut")
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
    atomic_write(path, lambda handle: handle.write(text), fsync=True)


def command_record(config: dict[str, Any]) -> dict[str, str]:
    """``command``: the ``lictrain train`` line that started the run as typed, or, for a run that
    something else started (a sweep's trial, the Python API), one rendered from its settings,
    with that process's own command line as ``launched_by``."""
    typed = " ".join(sys.argv)
    if sys.argv[1:2] == ["train"]:
        return {"command": typed}
    return {"command": train_command(TrainConfig.from_dict(config)), "launched_by": typed}


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
            **command_record(config),
            "versions": package_versions(),
            # how the previous process ended is not how this one will: its stop signal, error, reason go
            "summary": {k: v for k, v in previous.get("summary", {}).items() if k not in ENDING_KEYS},
            "wandb_run_id": previous.get("wandb_run_id"),
        }
        if resumed:
            self.data["resumed"] = previous.get("resumed", 0) + 1
            if previous.get("command"):  # the command that started the run stays; each resume is added
                self.data["command"] = previous["command"]
                self.data["resume_commands"] = [*previous.get("resume_commands", []), " ".join(sys.argv)]
            # other notes of the first run (its budget plan, world size, ...) stay on record
            self.data = {**{k: v for k, v in previous.items() if k not in ("ended", *ENDING_KEYS)}, **self.data}
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


def effective_status(run_dir: Path, record: Mapping[str, Any]) -> str:
    """``record``'s status (``record`` is ``run_dir/run.json``, parsed), except that ``running``
    becomes ``crashed`` when no live process holds the run directory's lock.

    A run takes the lock before it first writes ``run.json`` and releases it (removing the lock
    file) just before its last write, so a ``running`` without a held lock is a dead process;
    ``run.json`` is read again before saying so, in case the run has just ended. A missing or
    non-string status reads as ``running``.
    """
    status = record.get("status")
    status = status if isinstance(status, str) else "running"
    if status != "running" or lock_held(run_dir):
        return status
    try:  # the run may have released its lock and written its end since record was read
        again = json.loads((Path(run_dir) / RUN_FILE).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        again = None
    return again if isinstance(again, str) and again != "running" else "crashed"


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
