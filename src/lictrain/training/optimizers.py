"""Network and auxiliary optimisers.

The network's parameters are optimised for the rate-distortion loss; the quantiles of
CompressAI's ``EntropyBottleneck`` are optimised by their own auxiliary loss with a separate
Adam (as in CompressAI's examples).
"""

from __future__ import annotations

import torch

AUX_SUFFIX = ".quantiles"


def split_parameters(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """``(network, aux)`` parameters: aux are the EntropyBottleneck quantiles."""
    net, aux = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (aux if name.endswith(AUX_SUFFIX) else net).append(param)
    return net, aux


def build_aux_optimizer(aux_params: list[torch.nn.Parameter], aux_lr: float) -> torch.optim.Optimizer | None:
    """Adam on the quantiles, or ``None`` when the model has no EntropyBottleneck."""
    return torch.optim.Adam(aux_params, lr=aux_lr) if aux_params else None


def aux_loss_of(model: torch.nn.Module) -> torch.Tensor | None:
    """The model's auxiliary (quantile) loss, or ``None`` if it has none."""
    fn = getattr(model, "aux_loss", None)
    return fn() if callable(fn) else None
