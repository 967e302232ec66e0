"""Adam and cautious-Adam parameter updates (functional, in place).

The maths is torch.optim.Adam's (bias-corrected, coupled L2 ``weight_decay`` added to the
gradient, ``denom = sqrt(v_t) / sqrt(1 - beta2^t) + eps``, ``step = lr / (1 - beta1^t)``), so
with ``cautious=False`` the update equals ``torch.optim.Adam`` to round-off.

Cautious variant (Liang et al., "Cautious Optimizers: Improving Training with One Line of
Code", arXiv 2411.16085).  Reference: kyleliang919/C-Optim ``c_adamw.py`` (``AdamW.step``):
``mask = (exp_avg * grad > 0)``; ``mask /= mask.mean().clamp(min=1e-3)``;
``p -= step_size * (exp_avg * mask) / denom``.  The mask compares the *updated* first moment
m_t with the current gradient g_t, is computed per parameter tensor, and the kept coordinates
are rescaled by ``1 / max(mean(mask), 1e-3)`` so the update keeps its overall size.  The
Balanced-RD training script (``Balanced._balanced_update``; a copy lives in
yutendo0714/LIC-HPCM-Balanced ``balanced-rd/train_balanced.py``) uses the same mask and also
caps that scale at 10; ``max_scale`` reproduces that cap, the default (``None``) follows C-Optim.
C-Optim adds ``eps`` to ``sqrt(v_t)`` before the bias correction; we keep torch.optim.Adam's
placement (a difference of order ``eps``).  This module is our own code; nothing is copied
from either repository.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any, Sequence

import torch
from torch import Tensor

from lictrain.errors import ConfigError

__all__ = ["adam_group_step_", "adam_update_", "cautious_mask"]

MASK_MEAN_FLOOR = 1e-3


def cautious_mask(exp_avg: Tensor, grad: Tensor, max_scale: float | None = None) -> Tensor:
    """Return ``1[m_t * g_t > 0] / max(mean(1[m_t * g_t > 0]), 1e-3)`` (capped at ``max_scale``)."""
    mask = (exp_avg * grad > 0).to(grad.dtype)
    scale = mask.mean().clamp(min=MASK_MEAN_FLOOR).reciprocal()
    if max_scale is not None:
        scale = scale.clamp(max=max_scale)
    return mask.mul_(scale)


@torch.no_grad()
def adam_update_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    steps: Sequence[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    cautious: bool = False,
    max_scale: float | None = None,
    foreach: bool | None = None,
) -> None:
    """Apply one (cautious) Adam update to every tensor in ``params``, in place.

    ``steps[i]`` is the step count of ``params[i]`` *including* this step (1 on the first
    update).  ``exp_avgs`` and ``exp_avg_sqs`` are updated in place; ``grads`` are read only.
    ``foreach``: use the multi-tensor ``torch._foreach_*`` kernels (fewer launches; default:
    when every tensor is on CUDA, as torch.optim.Adam does) instead of a per-tensor loop.  Both
    paths compute the same maths (equal to round-off).
    """
    if not params:
        return
    if foreach is None:
        foreach = all(p.is_cuda for p in params)
    if foreach:
        groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault((p.device, p.dtype), []).append(i)
        for idx in groups.values():
            _foreach_group(
                [params[i] for i in idx], [grads[i] for i in idx], [exp_avgs[i] for i in idx],
                [exp_avg_sqs[i] for i in idx], [steps[i] for i in idx], lr=lr, beta1=beta1,
                beta2=beta2, eps=eps, weight_decay=weight_decay, cautious=cautious,
                max_scale=max_scale,
            )
        return
    for param, grad, exp_avg, exp_avg_sq, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        if weight_decay != 0.0:
            grad = grad.add(param, alpha=weight_decay)  # coupled L2, as torch.optim.Adam
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
        step_size = lr / bias_correction1
        if not cautious:
            param.addcdiv_(exp_avg, denom, value=-step_size)
        elif param.device.type == "cpu":
            # Same maths in fewer passes: keep m_t where it agrees with g_t, fold the rescale
            # 1/max(mean, 1e-3) into the step size (a host number, so no device sync).
            keep = exp_avg * grad > 0
            scale = 1.0 / max(int(keep.sum()) / keep.numel(), MASK_MEAN_FLOOR)
            if max_scale is not None:
                scale = min(scale, max_scale)
            numer = torch.where(keep, exp_avg, 0.0)
            param.addcdiv_(numer, denom, value=-step_size * scale)
        else:
            param.addcdiv_(exp_avg * cautious_mask(exp_avg, grad, max_scale), denom,
                           value=-step_size)


def _foreach_group(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    cautious: bool,
    max_scale: float | None,
) -> None:
    """:func:`adam_update_` for tensors sharing one device and dtype, with foreach kernels."""
    if weight_decay != 0.0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, [math.sqrt(1.0 - beta2**s) for s in steps])
    torch._foreach_add_(denom, eps)
    neg_step_sizes = [-lr / (1.0 - beta1**s) for s in steps]
    if not cautious:
        torch._foreach_addcdiv_(params, exp_avgs, denom, neg_step_sizes)
        return
    # mask_i = 1[m_t * g_t > 0], as sign(m_t * g_t) clamped at 0 (exactly 0 or 1)
    masks = torch._foreach_mul(exp_avgs, grads)
    torch._foreach_sign_(masks)
    torch._foreach_clamp_min_(masks, 0.0)
    counts = torch.stack(torch._foreach_norm(masks, 1))  # L1 norm of a 0/1 tensor = its sum
    numels, lengths = _numels(masks, counts.dtype, counts.device)
    # 1 / max(mean, 1e-3) = numel / max(count, 1e-3 * numel), one value per tensor
    scales = numels / torch.maximum(counts, numels * MASK_MEAN_FLOOR)
    if max_scale is not None:
        scales = scales.clamp(max=max_scale)
    # Spread the per-tensor scales over every element in one kernel, then multiply through
    # same-shape views (keeps the multi-tensor kernels on their fast path: no per-tensor launch).
    total = sum(m.numel() for m in masks)
    flat = torch.repeat_interleave(scales.to(masks[0].dtype), lengths, output_size=total)
    views = [v.view(m.shape) for v, m in zip(flat.split([m.numel() for m in masks]), masks)]
    torch._foreach_mul_(masks, views)
    torch._foreach_mul_(masks, exp_avgs)
    torch._foreach_addcdiv_(params, masks, denom, neg_step_sizes)


_NUMEL_CACHE: dict[tuple, tuple[Tensor, Tensor]] = {}


def _numels(
    tensors: list[Tensor], dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Per-tensor element counts on ``device`` (as ``dtype`` and as int64), cached by shapes."""
    sizes = tuple(t.numel() for t in tensors)
    key = (sizes, dtype, device)
    hit = _NUMEL_CACHE.get(key)
    if hit is None:
        if len(_NUMEL_CACHE) > 64:
            _NUMEL_CACHE.clear()
        lengths = torch.tensor(sizes, dtype=torch.int64, device=device)
        hit = (lengths.to(dtype), lengths)
        _NUMEL_CACHE[key] = hit
    return hit


@torch.no_grad()
def adam_group_step_(
    group: dict[str, Any],
    state: MutableMapping[Tensor, dict[str, Any]],
    *,
    cautious: bool,
    max_scale: float | None,
    foreach: bool | None,
) -> None:
    """One (cautious) Adam step of a torch param ``group`` whose parameters have a gradient.

    ``state`` is the optimiser's per-parameter state: ``step``, ``exp_avg`` and ``exp_avg_sq``
    are created on a parameter's first step (as torch.optim.Adam names them) and updated here.

    Raises:
        ConfigError: For a sparse gradient.
    """
    params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise ConfigError("BalancedOptimizer does not support sparse gradients: "
                              "use dense parameters")
        s = state[p]
        if len(s) == 0:
            s["step"] = 0
            s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        s["step"] += 1
        params.append(p)
        grads.append(p.grad)
        exp_avgs.append(s["exp_avg"])
        exp_avg_sqs.append(s["exp_avg_sq"])
        steps.append(s["step"])
    beta1, beta2 = group["betas"]
    adam_update_(
        params, grads, exp_avgs, exp_avg_sqs, steps,
        lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
        weight_decay=group["weight_decay"], cautious=cautious, max_scale=max_scale,
        foreach=foreach,
    )
