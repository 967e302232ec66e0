"""Task weights of the trajectory method (FAMO): the logits, their Adam, the surrogate, the update.

Task logits ``w`` (start at 0), weights ``z = softmax(w)``, ``D_i = L_i - m_i + 1e-8``; the
network is trained on the surrogate ``sum_i z_i log D_i / c`` with ``c = sum_j z_j / D_j``
(detached), and after the network step the logits take one Adam step (learning rate ``w_lr``)
on ``J_softmax(w)^T delta + gamma * w`` with ``delta = log D(L) - log D(L')`` (reference:
Cranial-XIX/FAMO ``famo.py``, ``get_weighted_loss`` / ``update``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lictrain.errors import ConfigError
from lictrain.optim.balanced_checks import finite_real, task_values
from lictrain.optim.cautious_adam import adam_update_
from lictrain.settings import is_real

__all__ = ["D_EPS", "TaskWeights"]

D_EPS = 1e-8  # the 1e-8 in D_i = L_i - m_i + 1e-8 (reference value)


class TaskWeights:
    """The k task logits with their own Adam moments, gamma, ``w_lr`` and ``min_losses``.

    The logits live on the CPU in float64 whatever the network's device (cheap host arithmetic
    instead of a dozen tiny device launches per step), and are not a param group (LR schedulers
    must not touch ``w_lr``). Each logit update copies ``(L, L')`` to the host once.

    Raises:
        ConfigError: For bad ``min_losses``, ``gamma`` or ``w_lr`` (in that order).
    """

    def __init__(
        self, n_tasks: int, gamma: float | Sequence[float], w_lr: float,
        min_losses: float | Sequence[float],
    ) -> None:
        kw: dict[str, Any] = dict(device="cpu", dtype=torch.float64)
        self.n_tasks = n_tasks
        self.logits = torch.zeros(n_tasks, **kw)
        self.exp_avg = torch.zeros(n_tasks, **kw)
        self.exp_avg_sq = torch.zeros(n_tasks, **kw)
        self.step = 0  # Adam steps taken by the logits
        self.min_losses = torch.tensor(
            task_values(min_losses, "min_losses", n_tasks, allow_negative=True), **kw
        )
        self._gamma: float | list[float] | tuple[float, ...] = 0.0
        self.gamma = gamma
        self._w_lr = 0.0
        self.w_lr = w_lr
        self._min_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self.prev_losses: Tensor | None = None  # detached L from the last surrogate()
        self.num_updates = 0
        self.skipped_updates = 0

    @property
    def gamma(self) -> float | list[float] | tuple[float, ...]:
        """Logit decay: a float, or one value per task (returned as it was set)."""
        return list(self._gamma) if isinstance(self._gamma, list) else self._gamma

    @gamma.setter
    def gamma(self, value: float | Sequence[float]) -> None:
        if is_real(value):
            if not math.isfinite(float(value)) or value < 0:
                raise ConfigError(
                    f"gamma must be a finite number >= 0, got {value!r}: pass e.g. gamma=0.003"
                )
            self._gamma = float(value)
            return
        values = task_values(value, "gamma", self.n_tasks, allow_negative=False)
        self._gamma = tuple(values) if isinstance(value, tuple) else values

    @property
    def w_lr(self) -> float:
        """Learning rate of the logits' Adam."""
        return self._w_lr

    @w_lr.setter
    def w_lr(self, value: float) -> None:
        if not finite_real(value) or value <= 0:
            raise ConfigError(
                f"w_lr must be a positive number, got {value!r}: pass e.g. w_lr=0.025"
            )
        self._w_lr = float(value)

    def set_min_losses(self, value: Tensor) -> None:
        """Replace ``min_losses`` (float64, CPU), dropping the per-device copies."""
        self.min_losses = value.to(device="cpu", dtype=torch.float64).clone()
        self._min_cache = {}

    def min_on(self, like: Tensor) -> Tensor:
        """``min_losses`` on the device and in the dtype of ``like`` (cached)."""
        key = (like.device, like.dtype)
        m = self._min_cache.get(key)
        if m is None:
            m = self._min_cache[key] = self.min_losses.to(device=like.device, dtype=like.dtype)
        return m

    def surrogate(self, losses: Tensor) -> Tensor:
        """``sum_i z_i log D_i / c``; remembers the detached ``losses`` as ``L``."""
        z = F.softmax(self.logits, dim=0).to(device=losses.device, dtype=losses.dtype)
        d = losses - self.min_on(losses) + D_EPS
        c = (z / d).sum().detach()
        self.prev_losses = losses.detach().clone()
        return (z * d.log()).sum() / c

    @torch.no_grad()
    def update(
        self, new_losses: Tensor, betas: tuple[float, float], eps: float
    ) -> bool:
        """One Adam step on the logits from ``L`` (last :meth:`surrogate`) and ``L' = new_losses``.

        Returns ``False`` (and counts a skipped update) when ``delta`` is not finite.
        """
        assert self.prev_losses is not None
        w = self.logits
        m = self.min_losses
        # one device-to-host copy of (L, L'); the logit arithmetic is float64 on the CPU
        pair = torch.stack([self.prev_losses.to(new_losses), new_losses]).to("cpu", w.dtype)
        delta = (pair[0] - m + D_EPS).log() - (pair[1] - m + D_EPS).log()
        if not bool(torch.isfinite(delta).all()):
            self.skipped_updates += 1
            return False
        z = F.softmax(w, dim=0)
        # J_softmax(w) = diag(z) - z z^T is symmetric: J^T delta = z * delta - z (z . delta).
        grad = z * delta - z * torch.dot(z, delta)
        grad = grad + self._gamma_vector() * w
        self.step += 1
        adam_update_(
            [w], [grad], [self.exp_avg], [self.exp_avg_sq], [self.step],
            lr=self._w_lr, beta1=betas[0], beta2=betas[1], eps=eps, foreach=False,
        )
        self.num_updates += 1
        return True

    def _gamma_vector(self) -> Tensor:
        if isinstance(self._gamma, float):
            return torch.full_like(self.logits, self._gamma)
        return torch.tensor(list(self._gamma), device=self.logits.device, dtype=self.logits.dtype)
