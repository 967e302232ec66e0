"""Everything an exact resume needs, captured into and restored from a checkpoint."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from lictrain.checkpoint import capture_rng_state, restore_rng_state
from lictrain.training.distributed import DistInfo, gather_objects

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """The live objects of a run whose state a checkpoint holds."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    aux_optimizer: torch.optim.Optimizer | None
    lr_scheduler: Any
    strategy: Any
    config: dict[str, Any]
    dist: DistInfo

    def capture(self, epoch: int, metric_value: float | None, best_loss: float, completed: bool,
                batches_done: int = 0, ranked: bool = False, **extra: Any) -> dict[str, Any]:
        """Keyword arguments for ``CheckpointManager.save_checkpoint``.

        ``metric_value``: the epoch's ``--best-metric`` value (ranks the best checkpoints).
        ``batches_done``: of an interrupted (not ``completed``) epoch, the batches already trained,
        where a resumed run starts that epoch again. ``ranked``: an incomplete epoch that was
        tested (a budget's cut) may still rank best; an interrupted one never does.

        Collective under DDP (every rank's RNG state is gathered), so call it on all ranks.
        """
        return dict(
            epoch=epoch, model_state=self.model.state_dict(), optimizer_state=self.optimizer.state_dict(),
            metric_value=metric_value, is_best=None if completed or ranked else False,
            aux_optimizer_state=self.aux_optimizer.state_dict() if self.aux_optimizer else None,
            lr_scheduler_state=self.lr_scheduler.state_dict(), strategy_state=self.strategy.state_dict(),
            rng_states=gather_objects(capture_rng_state(), self.dist), best_loss=best_loss,
            completed=completed, config=self.config, batches_done=0 if completed else int(batches_done), **extra,
        )

    def restore(self, ckpt: dict[str, Any], path: Any) -> tuple[int, int, float]:
        """Load ``ckpt`` into the live objects; return (first epoch to run, the batch of it to start
        at, best loss so far)."""
        from lictrain.checkpoint.weights import check_resumable

        check_resumable(ckpt, path)
        from lictrain.schedules.lr import resync_lr

        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.aux_optimizer is not None:
            self.aux_optimizer.load_state_dict(ckpt["aux_optimizer_state"])
        self.lr_scheduler.load_state_dict(ckpt["lr_scheduler_state"])
        resync_lr(self.lr_scheduler)
        self.strategy.load_state_dict(ckpt["strategy_state"])
        rng_states = ckpt["rng_states"]
        if len(rng_states) != self.dist.world_size:
            log.warning("%s was written by %d process(es), this run has %d: training continues, but not "
                        "bit-identically to an uninterrupted run", path, len(rng_states), self.dist.world_size)
        restore_rng_state(rng_states[self.dist.rank % len(rng_states)])
        completed = ckpt.get("completed", True)
        start = int(ckpt["epoch"]) + (1 if completed else 0)
        batch = 0 if completed else int(ckpt.get("batches_done", 0) or 0)
        return start, batch, float(ckpt.get("best_loss", math.inf))
