"""CompressAI's Gaussian conditional with a quantisation gain (QVRF on CompressAI's models).

With gain ``g`` the latent is coded as ``round((y − μ)·g)`` under N(0, σ·g): the quantiser and
the likelihood see ``y·g``, ``μ·g`` and ``σ·g``, and what comes back is divided by ``g`` again
(ŷ = round((y − μ)·g)/g + μ). Only the quantiser (:meth:`quantize`, :meth:`dequantize`), the
likelihood and the coder's indexes change, so every CompressAI coding path that goes through
them — the hyperpriors' ``compress``/``decompress``, and the autoregressive models' sequential
loops, whose context then reads the de-gained ŷ — codes at the gain's rate. The state dict is
CompressAI's own, so a fixed-rate checkpoint loads into it unchanged; ``gain = None`` is the
fixed-rate codec exactly.

Tong et al., "QVRF: A Quantization-error-aware Variable Rate Framework for Learned Image
Compression", ICIP 2023 (arXiv 2303.05744).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from compressai.entropy_models import GaussianConditional
from torch import nn


class GainedGaussianConditional(GaussianConditional):
    """:class:`compressai.entropy_models.GaussianConditional` at the rate of :attr:`gain`."""

    gain: torch.Tensor | None = None
    #: the largest gain expected (σ·g must stay inside the scale table: it is extended this far)
    top_gain: float = 1.0

    @classmethod
    def wrap(cls, conditional: GaussianConditional, top_gain: float) -> "GainedGaussianConditional":
        """The same entropy model (scale table, bounds, CDF tables) with a gain."""
        gained = cls(None, scale_bound=float(conditional.lower_bound_scale.bound),
                     likelihood_bound=float(conditional.likelihood_lower_bound.bound)
                     if conditional.use_likelihood_bound else 0.0)
        for name, buffer in conditional.named_buffers(recurse=False):  # tables of any size (CDFs built or not)
            setattr(gained, name, buffer.clone())
        gained.top_gain = float(top_gain)
        gained.train(conditional.training)
        return gained.to(conditional.scale_table.device)

    def quantize(self, inputs: torch.Tensor, mode: str, means: torch.Tensor | None = None) -> torch.Tensor:
        g = self.gain
        if g is None:
            return super().quantize(inputs, mode, means)
        outputs = super().quantize(inputs * g, mode, None if means is None else means * g)
        return outputs if mode == "symbols" else outputs / g  # symbols stay integers on the gained grid

    def dequantize(self, inputs: torch.Tensor, means: torch.Tensor | None = None,  # type: ignore[override]
                   dtype: torch.dtype = torch.float) -> torch.Tensor:
        g = self.gain
        if g is None:
            return GaussianConditional.dequantize(inputs, means, dtype)
        outputs = inputs.to(means.dtype if means is not None else dtype) / g
        return outputs if means is None else outputs + means

    def _likelihood(self, inputs: torch.Tensor, scales: torch.Tensor,
                    means: torch.Tensor | None = None) -> torch.Tensor:
        g = self.gain
        if g is None:
            return super()._likelihood(inputs, scales, means)
        return super()._likelihood(inputs * g, scales * g, None if means is None else means * g)

    def build_indexes(self, scales: torch.Tensor) -> torch.Tensor:
        return super().build_indexes(scales if self.gain is None else scales * self.gain)

    def update_scale_table(self, scale_table: Any, force: bool = False) -> bool:
        """CompressAI's table, extended at its own density up to ``top_gain`` times its top: a
        large gain multiplies σ past 256, where the table would clip it (and waste bits)."""
        table = [float(s) for s in scale_table]
        if self.top_gain > 1.0 and len(table) > 1 and table[0] > 0:
            step = math.log(table[-1] / table[0]) / (len(table) - 1)
            extra = math.ceil(math.log(self.top_gain) / step)
            table += [table[-1] * math.exp(step * (k + 1)) for k in range(extra)]
        return super().update_scale_table(table, force=force)


def gained_compress_ar(model: nn.Module, y_hat: torch.Tensor, params: torch.Tensor, height: int, width: int,
                       kernel_size: int, padding: int) -> bytes:
    """CompressAI's sequential encoder of the autoregressive models (mbt2018, cheng2020), with
    the context fed the de-gained ŷ as the decoder rebuilds it.

    CompressAI's own loop writes ``y_q + μ`` back into ŷ, which is right only at gain 1; here
    the symbol goes through :meth:`GainedGaussianConditional.dequantize`, exactly as
    ``_decompress_ar`` does, so encoder and decoder read the same context.
    """
    from compressai.ans import BufferedRansEncoder
    import torch.nn.functional as F

    conditional = model.gaussian_conditional
    cdf, cdf_lengths = conditional.quantized_cdf.tolist(), conditional.cdf_length.tolist()
    offsets = conditional.offset.tolist()
    weight = model.context_prediction.weight * model.context_prediction.mask
    symbols: list[int] = []
    indexes: list[int] = []
    for h in range(height):
        for w in range(width):
            crop = y_hat[:, :, h:h + kernel_size, w:w + kernel_size]
            context = F.conv2d(crop, weight, bias=model.context_prediction.bias)
            found = model.entropy_parameters(torch.cat((params[:, :, h:h + 1, w:w + 1], context), dim=1))
            scales, means = found.squeeze(3).squeeze(2).chunk(2, 1)
            index = conditional.build_indexes(scales)
            y_q = conditional.quantize(crop[:, :, padding, padding], "symbols", means)
            y_hat[:, :, h + padding, w + padding] = conditional.dequantize(y_q, means)
            symbols.extend(y_q.reshape(-1).tolist())
            indexes.extend(index.reshape(-1).tolist())
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(symbols, indexes, cdf, cdf_lengths, offsets)
    return encoder.flush()
