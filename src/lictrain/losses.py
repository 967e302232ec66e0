"""Rate-distortion loss that returns its terms apart.

``loss = λ·255²·MSE + bpp`` (``metric="mse"``) or ``λ·(1 − MS-SSIM) + bpp``
(``metric="ms-ssim"``), the convention of CompressAI's examples. The balanced optimiser
needs the distortion and rate terms separately, and the hierarchical tasks need the rate of
each coding scale, so :class:`RateDistortionLoss` returns all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim

from lictrain.errors import ConfigError

METRICS = ("mse", "ms-ssim")
#: the task sets of the balanced optimiser: D and R, or D and one rate per coding scale
BALANCED_TASKS = ("rd", "hierarchical")


@dataclass
class RDTerms:
    """The parts of one batch's rate-distortion loss (all 0-dim tensors).

    Attributes:
        loss: ``distortion + bpp``, the standard training objective.
        distortion: ``λ·255²·MSE`` or ``λ·(1 − MS-SSIM)``.
        bpp: estimated bits per pixel, summed over all likelihoods.
        mse: mean squared error on [0, 1] pixels (always computed, for PSNR).
        rates: bits per pixel of each rate component (``likelihoods`` keys, or the model's
            finer ``rate_likelihoods`` when it reports them); they sum to ``bpp``.
    """

    loss: torch.Tensor
    distortion: torch.Tensor
    bpp: torch.Tensor
    mse: torch.Tensor
    rates: dict[str, torch.Tensor]

    def task_losses(self, tasks: str = "rd") -> torch.Tensor:
        """Task losses for balanced training: ``[D, R]`` or ``[D, R_1, ..., R_k]``."""
        if tasks == "rd":
            return torch.stack([self.distortion, self.bpp])
        if tasks == "hierarchical":
            return torch.stack([self.distortion, *self.rates.values()])
        raise ConfigError(f"unknown balanced task set {tasks!r}; use 'rd' or 'hierarchical'")


def bits_per_pixel(likelihoods: torch.Tensor, num_pixels: int) -> torch.Tensor:
    """Estimated rate of one likelihood tensor, in bits per image pixel."""
    return torch.log(likelihoods).sum() / (-math.log(2) * num_pixels)


def ms_ssim_window(height: int, width: int) -> int | None:
    """Largest odd Gaussian window (<= 11) for which 5-scale MS-SSIM fits the image, or None."""
    side = min(height, width)
    for win in (11, 9, 7, 5, 3):
        if side > (win - 1) * 2**4:
            return win
    return None


def ms_ssim_value(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean MS-SSIM of a batch in [0, 1]; NaN if the images are too small for 5 scales."""
    win = ms_ssim_window(x.shape[-2], x.shape[-1])
    if win is None:
        return torch.tensor(float("nan"), device=x.device)
    return ms_ssim(x_hat.float(), x.float(), data_range=1.0, win_size=win)


class RateDistortionLoss(torch.nn.Module):
    """``λ·D + R`` with its terms returned apart.

    Args:
        lmbda: the rate-distortion trade-off λ (> 0).
        metric: ``"mse"`` (D = 255²·MSE) or ``"ms-ssim"`` (D = 1 − MS-SSIM).
    """

    def __init__(self, lmbda: float = 0.0067, metric: str = "mse") -> None:
        super().__init__()
        if not lmbda > 0:
            raise ConfigError(f"lambda must be positive, got {lmbda}; typical values are 0.0018..0.0483")
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        self.lmbda = lmbda
        self.metric = metric

    def forward(self, output: dict, target: torch.Tensor) -> RDTerms:
        n, _, height, width = target.shape
        num_pixels = n * height * width
        x_hat = output["x_hat"]
        rate_source = output.get("rate_likelihoods") or output["likelihoods"]
        rates = {name: bits_per_pixel(lik, num_pixels) for name, lik in rate_source.items()}
        bpp = sum(rates.values())
        mse = F.mse_loss(x_hat.float(), target.float())
        if self.metric == "mse":
            distortion = self.lmbda * 255**2 * mse
        else:
            distortion = self.lmbda * (1 - ms_ssim_value(x_hat, target))
        return RDTerms(loss=distortion + bpp, distortion=distortion, bpp=bpp, mse=mse, rates=rates)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of an MSE on [0, 1] pixels (inf for a perfect match)."""
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)
