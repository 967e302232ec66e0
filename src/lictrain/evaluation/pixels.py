"""The pixel path around a codec: uint8 image -> padded float input, decoder output -> cropped uint8.

``replicate`` padding (the default) pads on the right and bottom to the model's alignment by
**replicating the edge pixels**: no artificial edge, so the padding costs fewer bits than zeros;
a model whose alignment is 1 (it pads internally) gets the image as is. ``official`` pads with
zeros, centred, to a multiple of 256 (the official HPCM test protocol).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lictrain.errors import BitstreamError

__all__ = ["PAD_MODES", "OFFICIAL_PAD_MULTIPLE", "pad_to", "to_input", "to_uint8"]

#: padding protocols: ``replicate`` (default) pads on the right/bottom to the model's multiple by
#: edge replication (the fewest extra pixels, no hard edge to code); ``official`` pads with zeros,
#: centred, to a multiple of 256 -- the official HPCM test script's protocol, needed to reproduce
#: its published numbers on images whose sides are not multiples of 256 (CLIC, Tecnick)
PAD_MODES = ("replicate", "official")
OFFICIAL_PAD_MULTIPLE = 256


def pad_to(x: torch.Tensor, alignment: int, mode: str = "replicate") -> torch.Tensor:
    """Pad a (N, C, H, W) batch to a multiple of ``alignment`` (``replicate``: right/bottom, edge
    replication) or of ``max(alignment, 256)`` (``official``: zeros, centred)."""
    h, w = x.shape[-2:]
    if mode == "official":
        multiple = max(alignment, OFFICIAL_PAD_MULTIPLE)
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="constant", value=0.0)
    ph, pw = (-h) % alignment, (-w) % alignment
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def to_input(pixels: torch.Tensor, alignment: int, device: torch.device | str, pad: str = "replicate") -> torch.Tensor:
    """uint8 (3, H, W) -> padded float (1, 3, H', W') in [0, 1] on ``device``."""
    if pixels.dtype != torch.uint8 or pixels.dim() != 3 or pixels.shape[0] != 3:
        raise ValueError(f"expected a uint8 (3, H, W) image, got {pixels.dtype} {tuple(pixels.shape)}")
    x = pixels.to(device).float().div_(255.0).unsqueeze(0)
    return pad_to(x, max(1, alignment), pad)


def to_uint8(x_hat: torch.Tensor, height: int, width: int, centred: bool = False) -> torch.Tensor:
    """Decoder output (1, 3, H', W') -> cropped (the top-left, or the centre for centred padding),
    clamped, rounded uint8 (3, H, W) on the CPU."""
    if x_hat.dim() != 4 or x_hat.shape[0] != 1 or x_hat.shape[1] != 3:
        raise BitstreamError(f"the decoder returned x_hat of shape {tuple(x_hat.shape)}, expected (1, 3, H, W)")
    if x_hat.shape[-2] < height or x_hat.shape[-1] < width:
        raise BitstreamError(
            f"the decoder returned a {x_hat.shape[-1]}x{x_hat.shape[-2]} image for a {width}x{height} original"
        )
    top = (x_hat.shape[-2] - height) // 2 if centred else 0
    left = (x_hat.shape[-1] - width) // 2 if centred else 0
    out = x_hat[0, :, top : top + height, left : left + width].float().clamp(0.0, 1.0).mul(255.0).round()
    return out.to(torch.uint8).cpu().contiguous()
