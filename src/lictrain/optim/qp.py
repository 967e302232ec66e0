"""Task weighting of the QP method (fine-tuning): per-task gradients and closed-form weights.

Per step the per-task gradients ``g_i = grad log D_i`` are combined with the weights solving
``min 1/2 w^T Q w  s.t.  sum w = 1`` (``Q = G^T G``), in closed form
``w = Q^-1 1 / 1^T Q^-1 1``, and the network steps along ``sum_i w_i g_i``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["combine_gradients", "gram_matrix", "qp_weights", "task_gradients"]

TaskGrads = list[tuple[Tensor | None, ...]]


def task_gradients(log_d: Tensor, params: Sequence[Tensor]) -> TaskGrads:
    """``grad log D_i`` for every task ``i``: one backward pass each (``None``: unused)."""
    k = log_d.numel()
    return [
        torch.autograd.grad(log_d[i], params, retain_graph=i < k - 1, allow_unused=True)
        for i in range(k)
    ]


@torch.no_grad()
def gram_matrix(task_grads: TaskGrads, params: Sequence[Tensor], device: torch.device) -> Tensor:
    """``Q = G^T G`` (k x k, float64 on ``device``), accumulated parameter by parameter."""
    k = len(task_grads)
    q = torch.zeros(k, k, dtype=torch.float64, device=device)
    for j, p in enumerate(params):
        rows = [g[j] for g in task_grads]
        if all(r is None for r in rows):
            continue
        gp = torch.stack([(r if r is not None else torch.zeros_like(p)).reshape(-1) for r in rows])
        q += (gp @ gp.T).to(torch.float64)
    return q


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


@torch.no_grad()
def combine_gradients(params: Sequence[Tensor], task_grads: TaskGrads, weights: Tensor) -> None:
    """Overwrite every parameter's ``.grad`` with ``sum_i w_i g_i`` (``None`` if no task uses it)."""
    wl = weights.tolist()
    for j, p in enumerate(params):
        combined = None
        for i, grads in enumerate(task_grads):
            g = grads[j]
            if g is None:
                continue
            combined = g * wl[i] if combined is None else combined.add_(g, alpha=wl[i])
        p.grad = combined
