"""The ``"balanced"`` section of :class:`~lictrain.optim.balanced.BalancedOptimizer`'s state_dict.

Its keys and their meaning are a checkpoint format: they must keep loading from checkpoints
of every earlier lictrain version (``STATE_VERSION`` 1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lictrain.errors import CheckpointError
from lictrain.optim.task_weights import TaskWeights

__all__ = ["STATE_VERSION", "check_section", "cpu64", "load_task_state", "save_section"]

STATE_VERSION = 1

_CPU64: dict[str, Any] = dict(device="cpu", dtype=torch.float64)


def cpu64(t: Tensor) -> Tensor:
    """A float64 CPU copy of ``t`` (how every logit-side tensor is kept)."""
    return t.to(**_CPU64).clone()


def save_section(
    task: TaskWeights,
    *,
    method: str,
    n_tasks: int,
    balanced_update: str,
    pending: bool,
    num_steps: int,
    skipped_steps: int,
    last_grad_norm: float,
    qp_weights: Tensor,
) -> dict[str, Any]:
    """The section: logits and their Adam moments, gamma, w_lr, min_losses, step counters, the
    pending ``L`` of the next logit update and the last QP weights (tensors copied to CPU)."""
    prev = task.prev_losses
    return {
        "version": STATE_VERSION,
        "method": method,
        "n_tasks": n_tasks,
        "balanced_update": balanced_update,
        "logits": task.logits.detach().cpu().clone(),
        "w_exp_avg": task.exp_avg.cpu().clone(),
        "w_exp_avg_sq": task.exp_avg_sq.cpu().clone(),
        "w_step": task.step,
        "gamma": task.gamma,
        "w_lr": task.w_lr,
        "min_losses": task.min_losses.cpu().clone(),
        "prev_losses": None if prev is None else prev.cpu().clone(),
        "pending": pending,
        "num_steps": num_steps,
        "skipped_steps": skipped_steps,
        "num_weight_updates": task.num_updates,
        "skipped_weight_updates": task.skipped_updates,
        "last_grad_norm": last_grad_norm,
        "qp_weights": qp_weights.cpu().clone(),
    }


def check_section(extra: Any, n_tasks: int, method: str) -> dict[str, Any]:
    """``extra`` if it is a section this optimiser (``n_tasks``, ``method``) can resume from.

    Raises:
        CheckpointError: No section (another optimiser saved the state), or a different
            number of tasks or method.
    """
    if not isinstance(extra, dict):
        raise CheckpointError(
            "optimizer state has no 'balanced' section (not saved by BalancedOptimizer): "
            "resume with the optimizer it was saved with, or start the run afresh"
        )
    for key, mine in (("n_tasks", n_tasks), ("method", method)):
        if extra.get(key) != mine:
            raise CheckpointError(
                f"checkpoint optimizer has {key}={extra.get(key)!r} but this run uses "
                f"{key}={mine!r}: resume with the same setting"
            )
    return extra


def load_task_state(task: TaskWeights, extra: dict[str, Any]) -> None:
    """Restore ``task`` (logits, their Adam, gamma, w_lr, min_losses, ``L``) from the section."""
    task.logits = cpu64(extra["logits"])
    task.exp_avg = cpu64(extra["w_exp_avg"])
    task.exp_avg_sq = cpu64(extra["w_exp_avg_sq"])
    task.step = int(extra["w_step"])
    task.gamma = extra["gamma"]
    task.w_lr = extra["w_lr"]
    task.set_min_losses(extra["min_losses"])
    prev = extra["prev_losses"]
    task.prev_losses = None if prev is None else prev.clone()
    task.num_updates = int(extra["num_weight_updates"])
    task.skipped_updates = int(extra["skipped_weight_updates"])

