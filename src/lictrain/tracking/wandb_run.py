"""Weights & Biases run: offline by default, so it needs no account.

In offline mode the run lives in ``<run_dir>/wandb/offline-run-*/run-<id>.wandb``;
``wandb sync`` uploads it later. A resumed lictrain run passes the same id, so the W&B run
continues rather than starting anew.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: config keys every lictrain run reports to W&B (names fixed for the analysis tools)
WANDB_CONFIG_KEYS = ("model", "lambda", "gamma", "w_lr", "lr", "epochs", "batch_size", "seed")


class WandbRun:
    """Thin wrapper over ``wandb.init``/``log``/``finish`` that tolerates ``mode='disabled'``."""

    def __init__(self, run_dir: Path, project: str, mode: str, config: dict[str, Any],
                 run_id: str | None = None, name: str | None = None) -> None:
        self.mode = mode
        self._run = None
        if mode == "disabled":
            self.id = run_id
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb  # imported lazily: ~2 s, and not needed when disabled

        self._run = wandb.init(
            project=project, dir=str(run_dir), mode=mode, config=config, id=run_id,
            resume="allow" if run_id else None, name=name, reinit="finish_previous",
        )
        self.id = self._run.id
        log.info("W&B run %s (%s) in %s", self.id, mode, run_dir / "wandb")

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self._run is not None:
            self._run.log(metrics, step=step)

    def summary(self, key: str, value: Any) -> None:
        """Set ``key`` in the run's summary (figures that are not per-epoch series)."""
        if self._run is not None:
            self._run.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        """End the W&B run; an offline one logs the exact ``wandb sync`` command that uploads it."""
        if self._run is not None:
            folder = self.offline_folder()
            self._run.finish(exit_code=exit_code)
            self._run = None
            if folder is not None:
                import shlex

                log.info("W&B run kept offline; upload it with: wandb sync %s", shlex.quote(str(folder)))

    def offline_folder(self) -> Path | None:
        """``<run_dir>/wandb/offline-run-<time>-<id>`` of an offline run (what ``wandb sync`` takes)."""
        if self._run is None or self.mode != "offline":
            return None
        files = Path(getattr(self._run, "dir", "") or "")
        return files.parent if files.name == "files" else (files or None)


def wandb_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The run config as W&B sees it: the fixed keys first (``lambda`` not ``lmbda``), then the rest."""
    out = {"model": cfg["model"], "lambda": cfg["lmbda"], "gamma": cfg["gamma"], "w_lr": cfg["w_lr"],
           "lr": cfg["lr"], "epochs": cfg["epochs"], "batch_size": cfg["batch_size"], "seed": cfg["seed"]}
    out.update({k: v for k, v in cfg.items() if k not in out and k != "lmbda"})
    return out
