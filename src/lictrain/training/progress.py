"""Where a run stands: one small dataclass, saved in every checkpoint."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Progress:
    """The run's position and length.

    ``batch`` counts the batches of epoch ``epoch`` already trained (where an interrupted epoch
    resumes); ``epochs`` is the planned length (a budget re-plans it); ``step_limit`` is a
    budget's planned number of training steps, whose last epoch may be partial (``None``: every
    epoch whole).
    """

    epochs: int
    steps_per_epoch: int
    epoch: int = 0
    batch: int = 0
    step_limit: int | None = None
    best_loss: float = math.inf

    @property
    def global_step(self) -> int:
        """Training steps done so far (also the 0-based index of the next step)."""
        return self.epoch * self.steps_per_epoch + self.batch

    @property
    def total_steps(self) -> int:
        """Steps the run plans in all: what the LR schedule anneals over."""
        return self.step_limit or self.epochs * self.steps_per_epoch

    @property
    def epoch_done(self) -> bool:
        return self.batch >= self.steps_per_epoch

    def next_epoch(self) -> None:
        self.epoch, self.batch = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], epochs: int, steps_per_epoch: int) -> "Progress":
        """The progress a checkpoint continues from (also one of the format before this class:
        ``epoch`` + ``completed`` + ``batches_done``).

        ``epochs`` is this run's planned length: a changed ``--epochs`` drops a budget's step plan.
        """
        saved = ckpt.get("progress") if isinstance(ckpt.get("progress"), dict) else {}
        completed = bool(ckpt.get("completed", True))
        epoch = int(ckpt["epoch"]) + (1 if completed else 0)
        batch = 0 if completed else min(int(ckpt.get("batches_done", 0) or 0), steps_per_epoch)
        limit = saved.get("step_limit")
        same_length = saved.get("epochs") == epochs and saved.get("steps_per_epoch") == steps_per_epoch
        best = ckpt.get("best_loss", math.inf)
        return cls(epochs=epochs, steps_per_epoch=steps_per_epoch, epoch=epoch, batch=batch,
                   step_limit=int(limit) if isinstance(limit, int) and same_length else None,
                   best_loss=float(best) if isinstance(best, (int, float)) else math.inf)
