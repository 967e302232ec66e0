"""CompressAI's Gaussian conditional with a quantisation gain (QVRF on a hyperprior model).

With gain ``g`` the latent is coded as ``round((y − μ)·g)`` under N(0, σ·g), which is the
Gaussian conditional applied to ``y·g`` with scales ``σ·g`` and means ``μ·g``; the value returned
is divided by ``g`` again (ŷ = round((y − μ)·g)/g + μ). The state dict is CompressAI's own, so a
fixed-rate checkpoint loads into it unchanged; ``gain = None`` is the fixed-rate codec exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from compressai.entropy_models import GaussianConditional
from torch import nn


class GainedGaussianConditional(GaussianConditional):
    """:class:`compressai.entropy_models.GaussianConditional` at the rate of :attr:`gain`."""

    gain: torch.Tensor | None = None

    @classmethod
    def wrap(cls, conditional: GaussianConditional, model: nn.Module) -> "GainedGaussianConditional":
        """The same entropy model (scale table, bounds, CDF tables) with a gain."""
        gained = cls(None, scale_bound=float(conditional.lower_bound_scale.bound),
                     likelihood_bound=float(conditional.likelihood_lower_bound.bound)
                     if conditional.use_likelihood_bound else 0.0)
        for name, buffer in conditional.named_buffers(recurse=False):  # tables of any size (CDFs built or not)
            setattr(gained, name, buffer.clone())
        gained.train(conditional.training)
        return gained.to(conditional.scale_table.device)

    def forward(self, inputs: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None = None,
                training: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gain
        if g is None:
            return super().forward(inputs, scales, means, training)
        outputs, likelihood = super().forward(inputs * g, scales * g, None if means is None else means * g, training)
        return outputs / g, likelihood

    def build_indexes(self, scales: torch.Tensor) -> torch.Tensor:
        return super().build_indexes(scales if self.gain is None else scales * self.gain)

    def compress(self, inputs: torch.Tensor, indexes: torch.Tensor, means: torch.Tensor | None = None) -> Any:
        g = self.gain
        if g is None:
            return super().compress(inputs, indexes, means)
        return super().compress(inputs * g, indexes, None if means is None else means * g)

    def decompress(self, strings: Any, indexes: torch.Tensor, dtype: torch.dtype = torch.float,
                   means: torch.Tensor | None = None) -> torch.Tensor:
        g = self.gain
        if g is None:
            return super().decompress(strings, indexes, dtype, means)
        return super().decompress(strings, indexes, dtype, None if means is None else means * g) / g
