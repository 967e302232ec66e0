"""Read a synced W&B run folder (``run-<time>-<id>/files/config.yaml`` and ``wandb-summary.json``).

Re-exported by :mod:`lictrain.analysis.readers`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lictrain.analysis.run_data import RUN_DIR_RE, CorruptRunError, RunData, clean_summary, flatten

__all__ = ["read_wandb_synced"]


def read_wandb_synced(run_dir: str | os.PathLike[str]) -> RunData:
    """Read a synced W&B run folder's ``files/config.yaml`` and ``files/wandb-summary.json``.

    Without a transaction log to say how the run ended, a synced folder is taken as finished.

    Raises:
        CorruptRunError: For unreadable YAML or JSON.
    """
    run_dir = Path(run_dir)
    files = run_dir / "files"
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    config_file, summary_file = files / "config.yaml", files / "wandb-summary.json"
    if config_file.is_file():
        import yaml

        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CorruptRunError(f"{config_file}: unreadable ({exc})") from exc
        if not isinstance(loaded, dict):
            raise CorruptRunError(f"{config_file}: not a mapping")
        for key, wrapped in loaded.items():
            if key == "_wandb" or str(key).startswith("wandb_version"):
                continue
            config[str(key)] = wrapped.get("value") if isinstance(wrapped, dict) and "value" in wrapped else wrapped
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
        except (OSError, ValueError) as exc:
            raise CorruptRunError(f"{summary_file}: unreadable ({exc})") from exc
        if not isinstance(summary, dict):
            raise CorruptRunError(f"{summary_file}: not a JSON object")
    match = RUN_DIR_RE.match(run_dir.name)
    return RunData(run_id=match.group(2) if match else run_dir.name, path=run_dir, source="wandb-synced",
                   config=flatten(config), summary=clean_summary(summary), state="finished", status="synced",
                   started=match.group(1) if match else None)
