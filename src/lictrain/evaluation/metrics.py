"""Image quality and rate metrics on 8-bit RGB images, as codec papers report them.

Every metric compares two ``uint8`` tensors of shape ``(3, H, W)``: what the user would see,
after the decoder's output was clamped and rounded to 8 bits. PSNR is over all three RGB
channels together (one MSE over ``3·H·W`` values, peak 255); MS-SSIM is pytorch_msssim's
on the 0..255 values with ``data_range=255``, averaged over the RGB channels, with a smaller
Gaussian window on images too small for the standard 11-tap one (see :func:`ms_ssim_window`).
"""

from __future__ import annotations

import math

import torch

from lictrain.losses import ms_ssim_window

__all__ = ["bpp", "ms_ssim_db", "ms_ssim_uint8", "psnr_uint8", "ms_ssim_window"]


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 3 or a.shape[0] != 3:
        raise ValueError(f"expected two (3, H, W) images of the same size, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != torch.uint8 or b.dtype != torch.uint8:
        raise ValueError(f"metrics take uint8 images, got {a.dtype} and {b.dtype}")


def psnr_uint8(reference: torch.Tensor, decoded: torch.Tensor) -> float:
    """RGB PSNR in dB of two ``uint8`` (3, H, W) images; ``inf`` when they are identical."""
    _check_pair(reference, decoded)
    diff = reference.to(torch.float64) - decoded.to(torch.float64)
    mse = float(diff.square().mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ms_ssim_uint8(reference: torch.Tensor, decoded: torch.Tensor) -> float:
    """MS-SSIM in [0, 1] of two ``uint8`` (3, H, W) images; NaN when the image is too small.

    Five scales need the short side to exceed ``16·(win - 1)``: 11-tap windows from 161 px,
    down to 3-tap windows from 33 px (:func:`lictrain.losses.ms_ssim_window`).
    """
    from pytorch_msssim import ms_ssim

    _check_pair(reference, decoded)
    win = ms_ssim_window(reference.shape[-2], reference.shape[-1])
    if win is None:
        return math.nan
    value = ms_ssim(decoded[None].float(), reference[None].float(), data_range=255.0, win_size=win)
    return float(value)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, ``-10·log10(1 - MS-SSIM)`` (as CompressAI's plots)."""
    if value is None or math.isnan(value):
        return math.nan
    return math.inf if value >= 1 else -10.0 * math.log10(1.0 - value)


def bpp(num_bytes: int, height: int, width: int) -> float:
    """Bits per pixel: ``8 · bytes / (height · width)``."""
    return 8.0 * num_bytes / (height * width)
