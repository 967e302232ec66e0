"""Balanced rate-distortion optimisation (Zhang et al., CVPR 2025, arXiv 2502.20161).

Two methods share one optimiser, :class:`BalancedOptimizer`:

* ``method="trajectory"`` (training from scratch; FAMO-style, Liu et al., NeurIPS 2023): the
  network is trained on a surrogate weighted by task logits that take their own Adam step
  after each network step (:mod:`lictrain.optim.task_weights`).
* ``method="qp"`` (fine-tuning): per step the per-task gradients are combined with the
  closed-form weights of a small quadratic programme (:mod:`lictrain.optim.qp`).

The network step is Adam (optionally *cautious*, see :mod:`lictrain.optim.cautious_adam`) after
global gradient-norm clipping; argument checks live in :mod:`lictrain.optim.balanced_checks`
and the saved state's format in :mod:`lictrain.optim.balanced_state`. This module wires them
into one ``torch.optim.Optimizer``.
See ``docs/balanced.md`` for equations, choices and advice.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

from lictrain.errors import ConfigError
from lictrain.optim import qp
from lictrain.optim.balanced_checks import METHODS, UPDATE_MODES, check_arguments
from lictrain.optim.balanced_state import check_section, cpu64, load_task_state, save_section
from lictrain.optim.cautious_adam import adam_group_step_
from lictrain.optim.task_weights import D_EPS, TaskWeights

__all__ = ["BalancedOptimizer", "METHODS", "UPDATE_MODES"]


class BalancedOptimizer(Optimizer):
    """Adam / cautious Adam with balanced rate-distortion task weighting.

    Trajectory method, same-batch update (the reference algorithm)::

        opt = BalancedOptimizer(model.parameters(), lr=1e-4, n_tasks=2)
        loss = opt.weighted_loss(torch.stack([distortion, bpp]))  # L, with grad
        opt.zero_grad(); loss.backward(); opt.step()
        with torch.no_grad():
            opt.update_weights(task_losses(model(x)))             # L' on the same batch

    With ``balanced_update="next-batch"`` the trainer never calls :meth:`update_weights`:
    :meth:`weighted_loss` first applies the pending logit update with the *new* batch's
    pre-step losses as ``L'`` (no extra forward pass), then builds the surrogate.

    QP method (fine-tuning): ``opt.zero_grad(); opt.qp_step(losses)`` does the k backward passes
    and the step itself.

    Non-finite values never raise.  A non-finite surrogate gives non-finite gradients, and
    :meth:`step` skips any step whose gradient norm is not finite: parameters and Adam moments
    stay untouched, :attr:`skipped_steps` grows by one and ``step()`` returns ``False`` (``True``
    when the step was applied).  :meth:`update_weights` returns ``False`` and leaves the logits
    untouched when the preceding network step was skipped or when ``log D(L) - log D(L')`` is not
    finite (counted in :attr:`skipped_weight_updates`).  So the training loop needs no special
    case; it may log ``step()``'s result or the counters.  :meth:`qp_step` skips (and counts)
    non-finite losses before any backward pass.

    The task logits (k numbers) live on the CPU in float64 whatever the parameters' device:
    :attr:`task_weights` and :attr:`logits` are CPU tensors.  Each logit update copies
    ``(L, L')`` to the host once.

    Bad arguments raise :class:`lictrain.errors.ConfigError` (a ``ValueError``) with a one-line
    message naming the problem and the fix.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimiser.  Only the
            network's parameters: the task logits are internal.
        lr: network learning rate (``param_groups[i]["lr"]``, so LR schedulers work).
        n_tasks: number of task losses k >= 2 (distortion + rate, or + per-scale rates).
        gamma: logit decay; a float, or one value per task (``opt.gamma = [...]``).
        w_lr: learning rate of the logits' Adam.
        min_losses: ``m`` in ``D_i = L_i - m_i + 1e-8``; a float or one value per task.  The
            default -1 makes ``log D = log(1 + L)``.
        cautious: mask the Adam update where ``sign(m_t) != sign(g_t)`` (C-Optim form).
        max_grad_norm: clip the global gradient L2 norm to this value before the step, like
            ``torch.nn.utils.clip_grad_norm_``; ``None`` disables clipping.
        betas, eps, weight_decay: Adam hyper-parameters (``weight_decay`` is torch.optim.Adam's
            coupled L2 term).
        method: ``"trajectory"`` or ``"qp"``.
        balanced_update: ``"same-batch"`` (reference; call :meth:`update_weights` with ``L'``
            from a no-grad forward on the same batch after the step) or ``"next-batch"``
            (``L'`` = the next batch's pre-step losses; zero extra forward passes).
        w_betas, w_eps: betas and eps of the logits' Adam.
        qp_ridge: ridge added to ``Q`` as ``qp_ridge * trace(Q) / k * I`` (relative, so it is
            scale free); 0 disables.
        cautious_max_scale: optional cap on the cautious rescale ``1 / mean(mask)`` (the
            Balanced-RD script caps it at 10); ``None`` (default) follows C-Optim.
        foreach: multi-tensor kernels for the Adam step; ``None`` = when all parameters are on
            CUDA (as torch.optim.Adam).  Same maths either way.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        n_tasks: int = 2,
        gamma: float | Sequence[float] = 0.003,
        w_lr: float = 0.025,
        min_losses: float | Sequence[float] = -1.0,
        cautious: bool = True,
        max_grad_norm: float | None = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        method: str = "trajectory",
        balanced_update: str = "same-batch",
        w_betas: tuple[float, float] = (0.9, 0.999),
        w_eps: float = 1e-8,
        qp_ridge: float = 1e-4,
        cautious_max_scale: float | None = None,
        foreach: bool | None = None,
    ) -> None:
        check_arguments(
            n_tasks=n_tasks, lr=lr, betas=betas, w_betas=w_betas, eps=eps, w_eps=w_eps,
            weight_decay=weight_decay, max_grad_norm=max_grad_norm, method=method,
            balanced_update=balanced_update, qp_ridge=qp_ridge,
            cautious_max_scale=cautious_max_scale,
        )
        defaults = dict(lr=float(lr), betas=tuple(betas), eps=float(eps),
                        weight_decay=float(weight_decay))
        super().__init__(params, defaults)

        self._n_tasks = n_tasks
        self._method = method
        self._balanced_update = balanced_update
        self.cautious = bool(cautious)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.w_betas = (float(w_betas[0]), float(w_betas[1]))
        self.w_eps = float(w_eps)
        self.qp_ridge = float(qp_ridge)
        self.cautious_max_scale = None if cautious_max_scale is None else float(cautious_max_scale)
        self.foreach = foreach

        self._task = TaskWeights(n_tasks, gamma=gamma, w_lr=w_lr, min_losses=min_losses)
        self._qp_weights = torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64)
        self._pending = False  # a network step was applied since weighted_loss(): L' is due
        self._num_steps = 0
        self._skipped_steps = 0
        self._last_grad_norm = float("nan")

    # ------------------------------------------------------------------ properties
    @property
    def n_tasks(self) -> int:
        return self._n_tasks

    @property
    def method(self) -> str:
        return self._method

    @property
    def balanced_update(self) -> str:
        return self._balanced_update

    @property
    def gamma(self) -> float | list[float] | tuple[float, ...]:
        """Logit decay: a float, or one value per task (returned as it was set)."""
        return self._task.gamma

    @gamma.setter
    def gamma(self, value: float | Sequence[float]) -> None:
        self._task.gamma = value

    @property
    def w_lr(self) -> float:
        """Learning rate of the logits' Adam."""
        return self._task.w_lr

    @w_lr.setter
    def w_lr(self, value: float) -> None:
        self._task.w_lr = value

    @property
    def min_losses(self) -> Tensor:
        return self._task.min_losses.clone()

    @property
    def logits(self) -> Tensor:
        """The task logits ``w`` (a detached copy)."""
        return self._task.logits.clone()

    @property
    def _w(self) -> Tensor:
        # The logits tensor itself, under the name it had before the task-weight split
        # (tests set arbitrary logits through it).
        return self._task.logits

    @_w.setter
    def _w(self, value: Tensor) -> None:
        self._task.logits = value

    @property
    def task_weights(self) -> Tensor:
        """``softmax(w)`` (trajectory) or the last QP weights (qp; may be negative), detached."""
        if self._method == "qp":
            return self._qp_weights.clone()
        return torch.softmax(self._task.logits, dim=0)

    @property
    def skipped_steps(self) -> int:
        """Network steps skipped because the gradient norm (or, for qp, a loss) was not finite."""
        return self._skipped_steps

    @property
    def skipped_weight_updates(self) -> int:
        """Logit updates not applied (network step skipped, or non-finite L or L')."""
        return self._task.skipped_updates

    @property
    def num_steps(self) -> int:
        """Network steps applied."""
        return self._num_steps

    @property
    def num_weight_updates(self) -> int:
        """Logit updates applied."""
        return self._task.num_updates

    @property
    def last_grad_norm(self) -> float:
        """Global gradient L2 norm before clipping at the last step (nan before any step)."""
        return self._last_grad_norm

    # ------------------------------------------------------------------ trajectory method
    def weighted_loss(self, losses: Tensor | Sequence[Tensor]) -> Tensor:
        """Return the surrogate ``sum_i z_i log D_i / c`` to back-propagate.

        ``losses``: the k task losses (a 1-D tensor, or a sequence of scalar tensors), with
        grad.  Remembers the detached losses as ``L`` for the next logit update.  In
        ``next-batch`` mode it first applies the pending logit update with these losses as L'.
        """
        self._require("trajectory", "weighted_loss", "use qp_step(losses)")
        losses = self._check_losses(losses)
        if self._balanced_update == "next-batch" and self._pending:
            self._logit_step(losses.detach())
        self._pending = False
        return self._task.surrogate(losses)

    @torch.no_grad()
    def update_weights(self, new_losses: Tensor | Sequence[Tensor]) -> bool:
        """One Adam step on the logits from ``L`` (last :meth:`weighted_loss`) and ``L'``.

        ``new_losses``: the k task losses after the network step (no grad needed).  Returns
        ``True`` when the logits were updated, ``False`` when the update was skipped (network
        step skipped or not yet taken, or non-finite ``delta``).
        """
        self._require("trajectory", "update_weights", "use qp_step(losses)")
        new_losses = self._check_losses(new_losses)
        if self._task.prev_losses is None:
            raise RuntimeError("update_weights() called before weighted_loss(): nothing to compare")
        if not self._pending:
            self._task.skipped_updates += 1
            return False
        return self._logit_step(new_losses.detach())

    def _logit_step(self, new_losses: Tensor) -> bool:
        self._pending = False
        return self._task.update(new_losses, self.w_betas, self.w_eps)

    # ------------------------------------------------------------------ qp method
    def qp_step(self, losses: Tensor | Sequence[Tensor]) -> bool:
        """QP method: k backward passes, closed-form weights, then :meth:`step`.

        ``losses``: the k task losses with their graph.  The per-task gradients are those of
        ``log D_i = log(L_i - m_i + 1e-8)``; ``Q = G^T G + qp_ridge * trace(Q)/k * I``; weights
        ``w = Q^+ 1 / 1^T Q^+ 1``; every parameter's ``.grad`` is *overwritten* with
        ``sum_i w_i g_i`` before the (clipped, cautious) Adam step.  Returns ``step()``'s result;
        non-finite losses skip the step (counted) without any backward pass.
        """
        self._require("qp", "qp_step", "use weighted_loss/step/update_weights")
        losses = self._check_losses(losses)
        if not losses.requires_grad:
            raise ConfigError(
                "qp_step needs task losses that carry a graph: compute them with grad enabled"
            )
        if not bool(torch.isfinite(losses.detach()).all()):
            return self._skip_step()
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        log_d = (losses - self._task.min_on(losses) + D_EPS).log()
        task_grads = qp.task_gradients(log_d, params)
        weights = qp.qp_weights(qp.gram_matrix(task_grads, params, losses.device).cpu(), self.qp_ridge)
        if weights is None:
            return self._skip_step()
        self._qp_weights = weights
        qp.combine_gradients(params, task_grads, weights)
        return self.step()

    @staticmethod
    def qp_weights(q: Tensor, ridge: float = 0.0) -> Tensor | None:
        """Closed-form QP weights: see :func:`lictrain.optim.qp.qp_weights`."""
        return qp.qp_weights(q, ridge)

    # ------------------------------------------------------------------ network step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> bool:  # type: ignore[override]
        """Clip, then one (cautious) Adam step.  Returns ``False`` (and skips) when the gradient
        norm is not finite, ``True`` when the step was applied.  A ``closure`` is evaluated
        first with grad enabled (its return value is ignored)."""
        if closure is not None:
            with torch.enable_grad():
                closure()
        with_grad = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if with_grad:
            total = torch.nn.utils.get_total_norm([p.grad for p in with_grad], 2.0)
            norm = float(total)
        else:
            total, norm = None, 0.0
        self._last_grad_norm = norm
        if not math.isfinite(norm):
            self._skipped_steps += 1
            self._pending = False
            return False
        if self.max_grad_norm is not None and total is not None:
            # clip_grad_norm_ multiplies by min(max_norm / (norm + 1e-6), 1): skipping the
            # multiply by exactly 1 changes nothing.
            if self.max_grad_norm / (norm + 1e-6) < 1.0:
                torch.nn.utils.clip_grads_with_norm_(with_grad, self.max_grad_norm, total)
        for group in self.param_groups:
            adam_group_step_(group, self.state, cautious=self.cautious,
                             max_scale=self.cautious_max_scale, foreach=self.foreach)
        self._num_steps += 1
        self._pending = self._method == "trajectory" and self._task.prev_losses is not None
        return True

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """torch's optimiser state (network Adam moments, param groups) plus a ``"balanced"``
        section: logits and their Adam moments, gamma, w_lr, min_losses, step counters, the
        pending ``L`` of the next logit update and the last QP weights."""
        sd = super().state_dict()
        sd["balanced"] = save_section(
            self._task, method=self._method, n_tasks=self._n_tasks,
            balanced_update=self._balanced_update, pending=self._pending,
            num_steps=self._num_steps, skipped_steps=self._skipped_steps,
            last_grad_norm=self._last_grad_norm, qp_weights=self._qp_weights,
        )
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = check_section(state_dict.pop("balanced", None), self._n_tasks, self._method)
        super().load_state_dict(state_dict)
        load_task_state(self._task, extra)
        self._pending = bool(extra["pending"])
        self._num_steps = int(extra["num_steps"])
        self._skipped_steps = int(extra["skipped_steps"])
        self._last_grad_norm = float(extra["last_grad_norm"])
        self._qp_weights = cpu64(extra["qp_weights"])

    # ------------------------------------------------------------------ helpers
    def _skip_step(self) -> bool:
        """Count a network step skipped before any gradient (qp: non-finite losses or weights)."""
        self._skipped_steps += 1
        self._last_grad_norm = float("nan")
        return False

    def _require(self, method: str, name: str, instead: str) -> None:
        if self._method != method:
            raise ConfigError(f"{name}() is for method={method!r} but this optimizer uses "
                              f"method={self._method!r}: {instead}")

    def _check_losses(self, losses: Tensor | Sequence[Tensor]) -> Tensor:
        if not isinstance(losses, Tensor):
            try:
                losses = torch.stack([torch.as_tensor(x).reshape(()) for x in losses])
            except (TypeError, RuntimeError) as exc:
                raise ConfigError(
                    f"task losses must be a 1-D tensor of {self._n_tasks} values ({exc}): "
                    "pass torch.stack([distortion, rate, ...])"
                ) from None
        if losses.dim() != 1 or losses.numel() != self._n_tasks:
            raise ConfigError(
                f"expected {self._n_tasks} task losses in a 1-D tensor, got shape "
                f"{tuple(losses.shape)}: pass one loss per task or set n_tasks to match"
            )
        if not losses.is_floating_point():
            losses = losses.to(self._task.logits.dtype)
        return losses
