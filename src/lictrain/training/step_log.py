"""``--log-every N``: step-level rows (train losses, LR, task weights, gamma) between epochs.

Every N training steps the means of the last N applied steps go to ``metrics.jsonl`` (a row
with ``"kind": "step"``, its global ``step`` and ``epoch``) and to W&B at that global step.
The per-epoch rows (test metrics) are unchanged; readers that want epochs only skip step
rows (:func:`lictrain.tracking.records.read_metrics` does by default).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from lictrain.training.steps import StepOutcome


class StepLog:
    """Accumulates step outcomes and emits a row every ``every`` global steps.

    Args:
        every: steps between rows.
        emit: receives ``(global_step, row)``.
        values: extra values at emit time (LR, task weights, gamma: what the step left them at).
    """

    def __init__(self, every: int, emit: Callable[[int, dict[str, Any]], None],
                 values: Callable[[], dict[str, float]]) -> None:
        self.every = every
        self.emit = emit
        self.values = values
        self._sums: dict[str, float] = defaultdict(float)
        self._applied = 0
        self._skipped = 0

    def record(self, global_step: int, epoch: int, outcome: StepOutcome) -> None:
        """Add the outcome of step number ``global_step`` (1-based: steps done so far)."""
        if outcome.applied:
            self._applied += 1
            for key, value in outcome.values().items():
                if key != "aux_loss":  # step rows log the R-D terms and the strategy's values
                    self._sums[key] += value
        else:
            self._skipped += 1
        if global_step % self.every == 0:
            self.flush(global_step, epoch)

    def flush(self, global_step: int, epoch: int) -> None:
        if not (self._applied or self._skipped):
            return
        row: dict[str, Any] = {"kind": "step", "step": global_step, "epoch": epoch}
        row.update({f"train/{k}": v / self._applied for k, v in self._sums.items()} if self._applied else {})
        row.update(self.values())
        if self._skipped:
            row["skipped_steps"] = self._skipped
        self.emit(global_step, row)
        self._sums.clear()
        self._applied = self._skipped = 0
