"""One optimisation step: standard ``R + λD`` training.

A step is forward -> loss terms -> (skip if not finite) -> one backward of the loss plus the
aux (quantile) loss -> clip the network's gradient -> (skip if its norm is not finite) ->
network step and aux step. Folding the aux loss into the same backward pass is equivalent to
CompressAI's two backward passes (the aux loss reaches only the quantiles, the R-D loss never
does in training mode) and keeps DDP ranks in lock-step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lictrain.losses import RateDistortionLoss, RDTerms, psnr_from_mse
from lictrain.training.optimizers import aux_loss_of


@dataclass
class StepOutcome:
    """What one step did, as plain floats for logging."""

    applied: bool
    loss: float
    bpp: float
    mse: float
    distortion: float
    aux_loss: float = float("nan")
    grad_norm: float = float("nan")
    extra: dict[str, float] = field(default_factory=dict)

    def values(self) -> dict[str, float]:
        """The step's numbers as logged: loss, bpp, mse, psnr, aux_loss, then the strategy's extras."""
        return {"loss": self.loss, "bpp": self.bpp, "mse": self.mse, "psnr": psnr_from_mse(self.mse),
                "aux_loss": self.aux_loss, **self.extra}


def outcome_from_terms(terms: RDTerms, applied: bool, **kwargs: float) -> StepOutcome:
    """Detach ``terms`` into a :class:`StepOutcome`."""
    values = torch.stack([terms.loss, terms.bpp, terms.mse, terms.distortion]).detach().tolist()  # one sync
    return StepOutcome(applied, *values, **kwargs)


def all_finite(*values: torch.Tensor) -> bool:
    """True when every tensor holds only finite numbers (one device sync)."""
    return bool(torch.isfinite(torch.cat([v.detach().float().reshape(-1) for v in values])).all())


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float | None) -> float:
    """Clip to ``max_norm`` (``None``: only measure) and return the norm before clipping."""
    if max_norm is None:
        grads = [p.grad for p in params if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


class StandardStep:
    """Plain rate-distortion training step (Adam on ``λD + R``)."""

    def __init__(
        self,
        model: torch.nn.Module,
        criterion: RateDistortionLoss,
        optimizer: torch.optim.Optimizer,
        aux_optimizer: torch.optim.Optimizer | None,
        net_params: list[torch.nn.Parameter],
        clip_max_norm: float | None,
        aux_model: torch.nn.Module | None = None,
    ) -> None:
        self.model = model
        self.aux_model = aux_model if aux_model is not None else model
        self.criterion = criterion
        self.optimizer = optimizer
        self.aux_optimizer = aux_optimizer
        self.net_params = net_params
        self.clip_max_norm = clip_max_norm
        self.skipped = 0

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)

    def backward_and_step(self, objective: torch.Tensor, terms: RDTerms) -> StepOutcome:
        """Backward ``objective`` (+ aux loss), clip, and step both optimisers if finite."""
        aux = aux_loss_of(self.aux_model)
        self.zero_grad()
        (objective + aux if aux is not None else objective).backward()
        norm = clip_gradients(self.net_params, self.clip_max_norm)
        if not math.isfinite(norm):
            self.zero_grad()
            self.skipped += 1
            return outcome_from_terms(terms, False, grad_norm=norm)
        self.optimizer.step()
        if self.aux_optimizer is not None:
            self.aux_optimizer.step()
        return outcome_from_terms(terms, True, grad_norm=norm, aux_loss=float(aux.detach()) if aux is not None else float("nan"))

    def __call__(self, batch: torch.Tensor) -> StepOutcome:
        terms = self.criterion(self.model(batch), batch)
        if not all_finite(terms.loss):
            self.skipped += 1
            return outcome_from_terms(terms, False)
        return self.backward_and_step(terms.loss, terms)
