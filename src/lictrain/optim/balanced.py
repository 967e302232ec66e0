"""Balanced rate-distortion optimisation (Zhang et al., CVPR 2025, arXiv 2502.20161).

Two methods share one optimiser, :class:`BalancedOptimizer`:

* ``method="trajectory"`` (training from scratch; FAMO-style, Liu et al., NeurIPS 2023,
  reference Cranial-XIX/FAMO ``famo.py``: ``get_weighted_loss`` / ``update``).  Task logits
  ``w`` (start at 0), weights ``z = softmax(w)``, ``D_i = L_i - m_i + 1e-8``; the network is
  trained on the surrogate ``sum_i z_i log D_i / c`` with ``c = sum_j z_j / D_j`` (detached), and
  after the network step the logits take one Adam step (learning rate ``w_lr``) on
  ``J_softmax(w)^T delta + gamma * w`` with ``delta = log D(L) - log D(L')``.
* ``method="qp"`` (fine-tuning): per step the per-task gradients ``g_i = grad log D_i`` are
  combined with the weights solving ``min 1/2 w^T Q w  s.t.  sum w = 1`` (``Q = G^T G``), in
  closed form ``w = Q^-1 1 / 1^T Q^-1 1``, and the network steps along ``sum_i w_i g_i``.

The network step is Adam (optionally *cautious*, see :mod:`lictrain.optim.cautious_adam`) after
global gradient-norm clipping.  See ``docs/balanced.md`` for equations, choices and advice.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Optimizer

from lictrain.errors import CheckpointError, ConfigError
from lictrain.optim.cautious_adam import adam_update_

__all__ = ["BalancedOptimizer", "METHODS", "UPDATE_MODES"]

METHODS = ("trajectory", "qp")
UPDATE_MODES = ("same-batch", "next-batch")
_D_EPS = 1e-8  # the 1e-8 in D_i = L_i - m_i + 1e-8 (reference value)
_STATE_VERSION = 1


def _is_real(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _finite_real(x: Any) -> bool:
    return _is_real(x) and math.isfinite(float(x))


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
        if not isinstance(n_tasks, int) or isinstance(n_tasks, bool) or n_tasks < 2:
            raise ConfigError(
                f"n_tasks must be an integer >= 2, got {n_tasks!r}: pass one task per loss term "
                "(2 for distortion + rate)"
            )
        if not _finite_real(lr) or lr <= 0:
            raise ConfigError(f"lr must be a positive number, got {lr!r}: pass e.g. lr=1e-4")
        _check_betas(betas, "betas")
        _check_betas(w_betas, "w_betas")
        if not _finite_real(eps) or eps < 0:
            raise ConfigError(f"eps must be a number >= 0, got {eps!r}: pass e.g. eps=1e-8")
        if not _finite_real(w_eps) or w_eps < 0:
            raise ConfigError(f"w_eps must be a number >= 0, got {w_eps!r}: pass e.g. w_eps=1e-8")
        if not _finite_real(weight_decay) or weight_decay < 0:
            raise ConfigError(
                f"weight_decay must be a number >= 0, got {weight_decay!r}: pass 0 to disable it"
            )
        if max_grad_norm is not None and (not _finite_real(max_grad_norm) or max_grad_norm <= 0):
            raise ConfigError(
                f"max_grad_norm must be a positive number or None, got {max_grad_norm!r}: "
                "pass None to disable clipping"
            )
        if method not in METHODS:
            raise ConfigError(
                f"unknown balanced method {method!r}: use 'trajectory' (from scratch) or 'qp' "
                "(fine-tuning)"
            )
        if balanced_update not in UPDATE_MODES:
            raise ConfigError(
                f"unknown balanced_update {balanced_update!r}: use 'same-batch' or 'next-batch'"
            )
        if not _finite_real(qp_ridge) or qp_ridge < 0:
            raise ConfigError(f"qp_ridge must be a number >= 0, got {qp_ridge!r}: pass e.g. 1e-4")
        if cautious_max_scale is not None and (
            not _finite_real(cautious_max_scale) or cautious_max_scale < 1
        ):
            raise ConfigError(
                f"cautious_max_scale must be a number >= 1 or None, got {cautious_max_scale!r}: "
                "pass None for no cap"
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

        # Task logits and their own Adam moments: k numbers, kept on the CPU in float64 (cheap
        # host arithmetic instead of a dozen tiny device launches per step), and not a param
        # group (LR schedulers must not touch w_lr).
        kw = dict(device="cpu", dtype=torch.float64)
        self._w = torch.zeros(n_tasks, **kw)
        self._w_exp_avg = torch.zeros(n_tasks, **kw)
        self._w_exp_avg_sq = torch.zeros(n_tasks, **kw)
        self._w_step = 0
        self._min_losses = self._task_vector(min_losses, "min_losses", allow_negative=True)
        self._gamma: float | list[float] | tuple[float, ...] = 0.0
        self.gamma = gamma
        self._w_lr = 0.0
        self.w_lr = w_lr
        self._qp_weights = torch.full((n_tasks,), 1.0 / n_tasks, **kw)
        self._min_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

        self._prev_losses: Tensor | None = None  # detached L from the last weighted_loss()
        self._pending = False  # a network step was applied since weighted_loss(): L' is due
        self._num_steps = 0
        self._skipped_steps = 0
        self._num_weight_updates = 0
        self._skipped_weight_updates = 0
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
        return list(self._gamma) if isinstance(self._gamma, list) else self._gamma

    @gamma.setter
    def gamma(self, value: float | Sequence[float]) -> None:
        if _is_real(value):
            if not math.isfinite(float(value)) or value < 0:
                raise ConfigError(
                    f"gamma must be a finite number >= 0, got {value!r}: pass e.g. gamma=0.003"
                )
            self._gamma = float(value)
            return
        values = self._task_values(value, "gamma", allow_negative=False)
        self._gamma = tuple(values) if isinstance(value, tuple) else values

    @property
    def w_lr(self) -> float:
        """Learning rate of the logits' Adam."""
        return self._w_lr

    @w_lr.setter
    def w_lr(self, value: float) -> None:
        if not _finite_real(value) or value <= 0:
            raise ConfigError(
                f"w_lr must be a positive number, got {value!r}: pass e.g. w_lr=0.025"
            )
        self._w_lr = float(value)

    @property
    def min_losses(self) -> Tensor:
        return self._min_losses.clone()

    @property
    def logits(self) -> Tensor:
        """The task logits ``w`` (a detached copy)."""
        return self._w.clone()

    @property
    def task_weights(self) -> Tensor:
        """``softmax(w)`` (trajectory) or the last QP weights (qp; may be negative), detached."""
        if self._method == "qp":
            return self._qp_weights.clone()
        return F.softmax(self._w, dim=0)

    @property
    def skipped_steps(self) -> int:
        """Network steps skipped because the gradient norm (or, for qp, a loss) was not finite."""
        return self._skipped_steps

    @property
    def skipped_weight_updates(self) -> int:
        """Logit updates not applied (network step skipped, or non-finite L or L')."""
        return self._skipped_weight_updates

    @property
    def num_steps(self) -> int:
        """Network steps applied."""
        return self._num_steps

    @property
    def num_weight_updates(self) -> int:
        """Logit updates applied."""
        return self._num_weight_updates

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
        z = F.softmax(self._w, dim=0).to(device=losses.device, dtype=losses.dtype)
        d = losses - self._min_on(losses) + _D_EPS
        c = (z / d).sum().detach()
        self._prev_losses = losses.detach().clone()
        return (z * d.log()).sum() / c

    @torch.no_grad()
    def update_weights(self, new_losses: Tensor | Sequence[Tensor]) -> bool:
        """One Adam step on the logits from ``L`` (last :meth:`weighted_loss`) and ``L'``.

        ``new_losses``: the k task losses after the network step (no grad needed).  Returns
        ``True`` when the logits were updated, ``False`` when the update was skipped (network
        step skipped or not yet taken, or non-finite ``delta``).
        """
        self._require("trajectory", "update_weights", "use qp_step(losses)")
        new_losses = self._check_losses(new_losses)
        if self._prev_losses is None:
            raise RuntimeError("update_weights() called before weighted_loss(): nothing to compare")
        if not self._pending:
            self._skipped_weight_updates += 1
            return False
        return self._logit_step(new_losses.detach())

    @torch.no_grad()
    def _logit_step(self, new_losses: Tensor) -> bool:
        self._pending = False
        assert self._prev_losses is not None
        w = self._w
        m = self._min_losses
        # one device-to-host copy of (L, L'); the logit arithmetic is float64 on the CPU
        pair = torch.stack([self._prev_losses.to(new_losses), new_losses]).to("cpu", w.dtype)
        delta = (pair[0] - m + _D_EPS).log() - (pair[1] - m + _D_EPS).log()
        if not bool(torch.isfinite(delta).all()):
            self._skipped_weight_updates += 1
            return False
        z = F.softmax(w, dim=0)
        # J_softmax(w) = diag(z) - z z^T is symmetric: J^T delta = z * delta - z (z . delta).
        grad = z * delta - z * torch.dot(z, delta)
        grad = grad + self._gamma_vector() * w
        self._w_step += 1
        adam_update_(
            [w], [grad], [self._w_exp_avg], [self._w_exp_avg_sq], [self._w_step],
            lr=self._w_lr, beta1=self.w_betas[0], beta2=self.w_betas[1], eps=self.w_eps,
            foreach=False,
        )
        self._num_weight_updates += 1
        return True

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
            self._skipped_steps += 1
            self._last_grad_norm = float("nan")
            return False
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        log_d = (losses - self._min_on(losses) + _D_EPS).log()
        k = self._n_tasks
        task_grads: list[tuple[Tensor | None, ...]] = []
        for i in range(k):
            task_grads.append(
                torch.autograd.grad(log_d[i], params, retain_graph=i < k - 1, allow_unused=True)
            )
        with torch.no_grad():
            q = torch.zeros(k, k, dtype=torch.float64, device=losses.device)
            for j, p in enumerate(params):
                rows = [g[j] for g in task_grads]
                if all(r is None for r in rows):
                    continue
                gp = torch.stack([(r if r is not None else torch.zeros_like(p)).reshape(-1)
                                  for r in rows])
                q += (gp @ gp.T).to(torch.float64)
            weights = self.qp_weights(q.cpu(), self.qp_ridge)
            if weights is None:
                self._skipped_steps += 1
                self._last_grad_norm = float("nan")
                return False
            self._qp_weights = weights
            wl = weights.tolist()
            for j, p in enumerate(params):
                combined = None
                for i in range(k):
                    g = task_grads[i][j]
                    if g is None:
                        continue
                    combined = g * wl[i] if combined is None else combined.add_(g, alpha=wl[i])
                p.grad = combined
        return self.step()

    @staticmethod
    def qp_weights(q: Tensor, ridge: float = 0.0) -> Tensor | None:
        """Closed-form solution of ``min 1/2 w^T Q w s.t. sum(w) = 1`` (float64, on CPU).

        ``w = Q^+ 1 / 1^T Q^+ 1`` with ``Q <- Q + ridge * trace(Q)/k * I``; the pseudo-inverse
        makes degenerate ``Q`` (identical or zero gradients) well defined.  Returns ``None`` if
        the result is not finite; uniform weights when ``Q`` is zero or ``1`` is in its null
        space (then they attain the minimum, 0).
        """
        q = q.detach().to("cpu", torch.float64)
        k = q.shape[0]
        if not bool(torch.isfinite(q).all()):
            return None
        scale = torch.trace(q) / k
        if ridge > 0:
            q = q + ridge * scale * torch.eye(k, dtype=torch.float64)
        if float(scale) <= 0:
            return torch.full((k,), 1.0 / k, dtype=torch.float64)
        # Normalise before the pseudo-inverse so its rcond is relative to Q's size.
        u = torch.linalg.pinv(q / scale, hermitian=True) @ torch.ones(k, dtype=torch.float64)
        total = float(u.sum())
        if not (math.isfinite(total) and bool(torch.isfinite(u).all())):
            return None
        if total <= 1e-12:
            # 1 lies in the null space of Q (e.g. g_2 = -g_1): the uniform weights reach the
            # minimum 0 (no direction decreases every task).
            return torch.full((k,), 1.0 / k, dtype=torch.float64)
        return u / total

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
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ConfigError("BalancedOptimizer does not support sparse gradients: "
                                      "use dense parameters")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            beta1, beta2 = group["betas"]
            adam_update_(
                params, grads, exp_avgs, exp_avg_sqs, steps,
                lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                weight_decay=group["weight_decay"], cautious=self.cautious,
                max_scale=self.cautious_max_scale, foreach=self.foreach,
            )
        self._num_steps += 1
        self._pending = self._method == "trajectory" and self._prev_losses is not None
        return True

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """torch's optimiser state (network Adam moments, param groups) plus a ``"balanced"``
        section: logits and their Adam moments, gamma, w_lr, min_losses, step counters, the
        pending ``L`` of the next logit update and the last QP weights."""
        sd = super().state_dict()
        sd["balanced"] = {
            "version": _STATE_VERSION,
            "method": self._method,
            "n_tasks": self._n_tasks,
            "balanced_update": self._balanced_update,
            "logits": self._w.detach().cpu().clone(),
            "w_exp_avg": self._w_exp_avg.cpu().clone(),
            "w_exp_avg_sq": self._w_exp_avg_sq.cpu().clone(),
            "w_step": self._w_step,
            "gamma": self.gamma,
            "w_lr": self._w_lr,
            "min_losses": self._min_losses.cpu().clone(),
            "prev_losses": None if self._prev_losses is None else self._prev_losses.cpu().clone(),
            "pending": self._pending,
            "num_steps": self._num_steps,
            "skipped_steps": self._skipped_steps,
            "num_weight_updates": self._num_weight_updates,
            "skipped_weight_updates": self._skipped_weight_updates,
            "last_grad_norm": self._last_grad_norm,
            "qp_weights": self._qp_weights.cpu().clone(),
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("balanced", None)
        if not isinstance(extra, dict):
            raise CheckpointError(
                "optimizer state has no 'balanced' section (not saved by BalancedOptimizer): "
                "resume with the optimizer it was saved with, or start the run afresh"
            )
        for key, mine in (("n_tasks", self._n_tasks), ("method", self._method)):
            if extra.get(key) != mine:
                raise CheckpointError(
                    f"checkpoint optimizer has {key}={extra.get(key)!r} but this run uses "
                    f"{key}={mine!r}: resume with the same setting"
                )
        super().load_state_dict(state_dict)
        kw = dict(device="cpu", dtype=torch.float64)
        self._w = extra["logits"].to(**kw).clone()
        self._w_exp_avg = extra["w_exp_avg"].to(**kw).clone()
        self._w_exp_avg_sq = extra["w_exp_avg_sq"].to(**kw).clone()
        self._w_step = int(extra["w_step"])
        self.gamma = extra["gamma"]
        self.w_lr = extra["w_lr"]
        self._min_losses = extra["min_losses"].to(**kw).clone()
        self._min_cache = {}
        prev = extra["prev_losses"]
        self._prev_losses = None if prev is None else prev.clone()
        self._pending = bool(extra["pending"])
        self._num_steps = int(extra["num_steps"])
        self._skipped_steps = int(extra["skipped_steps"])
        self._num_weight_updates = int(extra["num_weight_updates"])
        self._skipped_weight_updates = int(extra["skipped_weight_updates"])
        self._last_grad_norm = float(extra["last_grad_norm"])
        self._qp_weights = extra["qp_weights"].to(**kw).clone()

    # ------------------------------------------------------------------ helpers
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
            losses = losses.to(self._w.dtype)
        return losses

    def _task_vector(self, value: Any, name: str, allow_negative: bool) -> Tensor:
        """A scalar or a length-k sequence of finite numbers -> tensor (logit dtype/device)."""
        items = self._task_values(value, name, allow_negative)
        return torch.tensor(items, device=self._w.device, dtype=self._w.dtype)

    def _task_values(self, value: Any, name: str, allow_negative: bool) -> list[float]:
        """A scalar or a length-k sequence of finite numbers -> k Python floats (validated)."""
        if _is_real(value):
            items = [float(value)] * self._n_tasks
        else:
            try:
                items = [float(v) for v in (value.tolist() if isinstance(value, Tensor) else value)]
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{name} must be a number or a sequence of {self._n_tasks} numbers, got "
                    f"{value!r}"
                ) from None
            if len(items) != self._n_tasks:
                raise ConfigError(
                    f"{name} has {len(items)} values but n_tasks={self._n_tasks}: give one "
                    "value per task or a single number"
                )
        for v in items:
            if not math.isfinite(v) or (not allow_negative and v < 0):
                bound = "finite" if allow_negative else "finite and >= 0"
                raise ConfigError(f"{name} values must be {bound}, got {value!r}: fix {name}")
        return items

    def _gamma_vector(self) -> Tensor:
        if isinstance(self._gamma, float):
            return torch.full_like(self._w, self._gamma)
        return torch.tensor(list(self._gamma), device=self._w.device, dtype=self._w.dtype)

    def _min_on(self, like: Tensor) -> Tensor:
        """``min_losses`` on the device and in the dtype of ``like`` (cached)."""
        key = (like.device, like.dtype)
        m = self._min_cache.get(key)
        if m is None:
            m = self._min_cache[key] = self._min_losses.to(device=like.device, dtype=like.dtype)
        return m


def _check_betas(betas: Any, name: str) -> None:
    ok = (
        isinstance(betas, (tuple, list))
        and len(betas) == 2
        and all(_finite_real(b) and 0.0 <= b < 1.0 for b in betas)
    )
    if not ok:
        raise ConfigError(
            f"{name} must be two numbers in [0, 1), got {betas!r}: pass e.g. (0.9, 0.999)"
        )
