"""Balanced R-D training strategy: :class:`BalancedOptimizer` plus an optional gamma schedule.

Per batch (trajectory method, Zhang et al., CVPR 2025):

1. forward, task losses ``L`` (``[D, R]``, or ``[D, R_z, R_s1, ...]`` with hierarchical tasks)
2. surrogate ``opt.weighted_loss(L)`` (+ aux loss) -> one backward -> ``opt.step()``
3. logit update: ``same-batch`` re-evaluates ``L'`` with a no-grad forward on the same batch
   (the reference); ``next-batch`` uses the next batch's pre-step losses (no extra forward),
   which the optimiser applies inside ``weighted_loss``.

The QP method (fine-tuning) replaces 2-3 by ``opt.qp_step(L)``.
"""

from __future__ import annotations

from typing import Any

import torch

from lictrain.config import TrainConfig
from lictrain.errors import ConfigError
from lictrain.losses import RateDistortionLoss, RDTerms
from lictrain.optim.balanced import BalancedOptimizer
from lictrain.schedules.gamma import gamma_scheduler_from_args
from lictrain.schedules.multiscale import MultiScaleGammaScheduler
from lictrain.training.distributed import DistInfo, all_reduce_mean, globally_valued
from lictrain.training.optimizers import aux_loss_of
from lictrain.training.param_groups import parameter_groups
from lictrain.training.steps import StepOutcome, all_finite, outcome_from_terms


def task_names(model: torch.nn.Module, criterion: RateDistortionLoss, tasks: str, alignment: int,
               device: torch.device) -> list[str]:
    """Names of the balanced tasks: ``distortion`` then ``rate`` or one ``rate/<scale>`` each.

    The scales come from one no-grad eval-mode forward on a small blank image (no RNG used).
    """
    if tasks == "rd":
        return ["distortion", "rate"]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x = torch.zeros(1, 3, max(64, alignment), max(64, alignment), device=device)
        rates = criterion(model(x), x).rates
    model.train(was_training)
    return ["distortion", *(f"rate/{name}" for name in rates)]


def build_gamma_schedule(optimizer: BalancedOptimizer, cfg: TrainConfig, names: list[str]) -> Any:
    """One schedule for all tasks, or with ``--gamma-scale`` one per task (the guide's multi-scale gamma).

    Per scale, every task follows ``--gamma_strategy`` from one shared config; a scale named in
    ``--gamma-scale`` starts from its own gamma. Groups are named after the tasks: ``distortion``
    and the rate scales (``z``, ``s1``, ``s2``, ``s3`` for HPCM).
    """
    if not cfg.gamma_scales:
        return gamma_scheduler_from_args(optimizer, cfg)
    groups = [name.removeprefix("rate/") for name in names]
    default = {"strategy": cfg.gamma_strategy, "initial_gamma": cfg.gamma, "final_gamma": cfg.gamma_final,
               "total_epochs": cfg.epochs, "step_epochs": cfg.step_epochs, "gamma_decay": cfg.gamma_decay,
               "window_size": cfg.adaptive_window, "threshold": cfg.adaptive_threshold}
    overrides = {name: {"initial_gamma": gamma} for name, gamma in cfg.gamma_scales.items()}
    unknown = sorted(set(overrides) - set(groups))
    if unknown:
        raise ConfigError(f"--gamma-scale names {', '.join(unknown)}, but this model's tasks are {', '.join(groups)}")
    schedule = MultiScaleGammaScheduler(optimizer, overrides, groups, default=default)
    optimizer.gamma = [overrides.get(g, {}).get("initial_gamma", cfg.gamma) for g in groups]
    return schedule


class BalancedStrategy:
    """Balanced optimisation of the task losses, with the gamma schedule when asked for."""

    def __init__(self, cfg: TrainConfig, trained: torch.nn.Module, model: torch.nn.Module,
                 criterion: RateDistortionLoss, net_params: list[torch.nn.Parameter],
                 aux_optimizer: torch.optim.Optimizer | None, alignment: int, device: torch.device,
                 dist: DistInfo) -> None:
        if dist.enabled and cfg.balanced_method == "qp":
            raise ConfigError("--balanced-method qp computes per-task gradients outside DDP's reduction; "
                              "run it in one process (without torchrun)")
        self.trained = trained
        self.model = model
        self.dist = dist
        self.criterion = criterion
        self.aux_optimizer = aux_optimizer
        self.tasks = cfg.balanced_tasks
        self.method = cfg.balanced_method
        self.same_batch = cfg.balanced_update == "same-batch"
        self.task_names = task_names(model, criterion, cfg.balanced_tasks, alignment, device)
        self.optimizer = BalancedOptimizer(
            parameter_groups(model, net_params, cfg.peak_lr, cfg.lr_groups), lr=cfg.peak_lr, n_tasks=len(self.task_names), gamma=cfg.gamma, w_lr=cfg.w_lr,
            cautious=cfg.cautious, max_grad_norm=cfg.clip_max_norm, method=cfg.balanced_method,
            balanced_update=cfg.balanced_update, cautious_max_scale=cfg.cautious_max_scale,
        )
        self.gamma_scheduler = build_gamma_schedule(self.optimizer, cfg, self.task_names) if cfg.adaptive_gamma else None
        self._epoch_gamma: Any = self.optimizer.gamma

    # -- per batch ------------------------------------------------------------------------
    def step(self, batch: torch.Tensor) -> StepOutcome:
        terms = self.criterion(self.trained(batch), batch)
        # under DDP: the global mean's value (same logits on every rank), the local gradient
        losses = globally_valued(terms.task_losses(self.tasks), self.dist)
        if self.method == "qp":
            return self._qp_step(terms, losses)
        surrogate = self.optimizer.weighted_loss(losses)
        aux = aux_loss_of(self.model)
        self._zero_grad()
        (surrogate + aux if aux is not None else surrogate).backward()
        applied = bool(self.optimizer.step())
        if applied and self.aux_optimizer is not None:
            self.aux_optimizer.step()
        if applied and self.same_batch:
            with torch.no_grad():
                after = self.criterion(self.model(batch), batch).task_losses(self.tasks)
                self.optimizer.update_weights(all_reduce_mean(after, self.dist))
        return self._outcome(terms, losses, applied, aux, surrogate=float(surrogate.detach()))

    def _qp_step(self, terms: RDTerms, losses: torch.Tensor) -> StepOutcome:
        self._zero_grad()
        if not all_finite(losses):
            self.optimizer.qp_step(losses)  # counts the skip, touches nothing
            return self._outcome(terms, losses, False, None)
        aux = aux_loss_of(self.model)
        if aux is not None:
            # qp_step overwrites the network's .grad; the quantiles' grad from aux stays.
            aux.backward()
        applied = bool(self.optimizer.qp_step(losses))
        if applied and self.aux_optimizer is not None:
            self.aux_optimizer.step()
        return self._outcome(terms, losses, applied, aux)

    def _zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)

    def _outcome(self, terms: RDTerms, losses: torch.Tensor, applied: bool, aux: torch.Tensor | None,
                 **extra: float) -> StepOutcome:
        values = dict(zip((f"task/{n}" for n in self.task_names), losses.detach().tolist()))
        return outcome_from_terms(terms, applied, grad_norm=self.optimizer.last_grad_norm,
                                  aux_loss=float(aux.detach()) if aux is not None else float("nan"),
                                  extra={**values, **extra})

    # -- per epoch ------------------------------------------------------------------------
    def sync_tensor(self) -> torch.Tensor:
        """The logits: checked identical across DDP ranks each epoch."""
        return self.optimizer.logits

    def begin_epoch(self, epoch: int) -> None:
        self._epoch_gamma = self.optimizer.gamma

    def epoch_values(self) -> dict[str, float]:
        """gamma used this epoch, w_lr and the task weights now (logged per epoch)."""
        gamma = self._epoch_gamma
        values: dict[str, float] = {"w_lr": self.optimizer.w_lr}
        if isinstance(gamma, (list, tuple)):
            values.update({f"gamma/{n}": float(g) for n, g in zip(self.task_names, gamma)})
        else:
            values["gamma"] = float(gamma)
        values.update({f"weight/{n}": float(w) for n, w in zip(self.task_names, self.optimizer.task_weights)})
        return values

    def end_epoch(self, epoch: int, test_loss: float) -> None:
        """Set the gamma of the next epoch from the schedule (it sees this epoch's test loss)."""
        if self.gamma_scheduler is not None:
            self.gamma_scheduler.step(epoch + 1, test_loss)

    def state_dict(self) -> dict[str, Any]:
        return {"task_names": self.task_names,
                "gamma_scheduler": self.gamma_scheduler.state_dict() if self.gamma_scheduler else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.gamma_scheduler is not None and state.get("gamma_scheduler") is not None:
            self.gamma_scheduler.load_state_dict(state["gamma_scheduler"])
