"""Everything an exact resume needs, captured into and restored from a checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from lictrain.checkpoint import capture_rng_state, restore_rng_state
from lictrain.checkpoint.weights import check_resumable
from lictrain.schedules.lr import LRSchedule
from lictrain.training.callbacks import Callbacks
from lictrain.training.distributed import DistInfo, gather_objects
from lictrain.training.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """The live objects of a run whose state a checkpoint holds."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    aux_optimizer: torch.optim.Optimizer | None
    lr: LRSchedule
    strategy: Any
    callbacks: Callbacks
    config: dict[str, Any]
    dist: DistInfo

    def capture(self, progress: Progress, metric_value: float | None, completed: bool, ranked: bool = False
                ) -> dict[str, Any]:
        """Keyword arguments for ``CheckpointManager.save_checkpoint`` at ``progress``.

        ``metric_value``: the epoch's ``--best-metric`` value (ranks the best checkpoints).
        ``completed``: the epoch was trained to its end (else ``progress.batch`` batches of it
        were, where a resumed run goes on). ``ranked``: an incomplete epoch that was tested (a
        budget's cut) may still rank best; an interrupted one never does.

        Collective under DDP (every rank's RNG state is gathered), so call it on all ranks.
        """
        return dict(
            epoch=progress.epoch, model_state=self.model.state_dict(), optimizer_state=self.optimizer.state_dict(),
            metric_value=metric_value, is_best=None if completed or ranked else False,
            aux_optimizer_state=self.aux_optimizer.state_dict() if self.aux_optimizer else None,
            lr_scheduler_state=self.lr.state_dict(), strategy_state=self.strategy.state_dict(),
            rng_states=gather_objects(capture_rng_state(), self.dist), best_loss=progress.best_loss,
            completed=completed, config={**self.config, "epochs": progress.epochs},
            batches_done=0 if completed else progress.batch, progress=progress.state_dict(),
            hooks=self.callbacks.state_dict(),
        )

    def restore(self, ckpt: dict[str, Any], path: Any, progress: Progress) -> Progress:
        """Load ``ckpt`` into the live objects; return the progress it continues from."""
        check_resumable(ckpt, path)
        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.aux_optimizer is not None:
            self.aux_optimizer.load_state_dict(ckpt["aux_optimizer_state"])
        self.strategy.load_state_dict(ckpt["strategy_state"])
        hooks = ckpt.get("hooks") if isinstance(ckpt.get("hooks"), dict) else {}
        if "early_stop" in ckpt and "selection" not in hooks:  # checkpoints before the callbacks
            hooks = {**hooks, "selection": ckpt["early_stop"]}
        self.callbacks.load_state_dict(hooks)
        resumed = Progress.from_checkpoint(ckpt, progress.epochs, progress.steps_per_epoch)
        self.lr.load_state_dict(ckpt.get("lr_scheduler_state"))
        self.lr.set_length(resumed.epochs, resumed.step_limit)
        self.lr.apply(resumed.global_step)  # the LR is a function of the step: set the one it continues at
        rng_states = ckpt["rng_states"]
        if len(rng_states) != self.dist.world_size:
            log.warning("%s was written by %d process(es), this run has %d: training continues, but not "
                        "bit-identically to an uninterrupted run", path, len(rng_states), self.dist.world_size)
        restore_rng_state(rng_states[self.dist.rank % len(rng_states)])
        return resumed
