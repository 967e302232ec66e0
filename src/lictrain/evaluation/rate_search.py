"""``--target-bpp``: the λ at which a variable-rate model codes an image at a given bpp.

Bisection in log λ over the model's trained range with real encodes (the whole ``.lic`` file's
bpp, the number the user asked for): bpp rises with λ, so at most :data:`MAX_ENCODES` encodes
find a λ within ``tolerance`` of the target, or say that the target is outside the range the
model can reach on this image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lictrain.errors import ConfigError
from lictrain.evaluation.codec import CodecInfo, Encoded, encode_image
from lictrain.evaluation.metrics import bpp
from lictrain.models.gains import rate_gains

#: encodes a search may spend (each halves the λ interval in log space: 2^-24 of it at the end)
MAX_ENCODES = 24
#: default relative tolerance on the bpp
TOLERANCE = 0.02


@dataclass(frozen=True)
class RateFound:
    """The λ found, its encoded file and how many encodes the search took."""

    lmbda: float
    encoded: Encoded
    bpp: float
    encodes: int


def encode_at_bpp(model: torch.nn.Module, info: CodecInfo, pixels: torch.Tensor, target: float,
                  tolerance: float = TOLERANCE) -> RateFound:
    """Encode ``pixels`` at the λ whose file has ``target`` bpp (within ``tolerance``, relative).

    Raises:
        ConfigError: a fixed-rate model, a bad target, or a target outside what the trained range
            reaches on this image (the message gives the reachable bpp).
    """
    gains = rate_gains(model)
    if gains is None:
        raise ConfigError("--target-bpp needs a variable-rate model (trained with --lambdas); this one has one rate")
    if not (math.isfinite(target) and target > 0):
        raise ConfigError(f"--target-bpp must be a positive number, got {target}")
    height, width = int(pixels.shape[1]), int(pixels.shape[2])
    encodes = 0

    def at(lmbda: float) -> tuple[Encoded, float]:
        nonlocal encodes
        encodes += 1
        enc = encode_image(model, info, pixels, verify=False, lmbda=lmbda)
        return enc, bpp(len(enc.data), height, width)

    low, high = gains.range
    enc_low, bpp_low = at(low)
    enc_high, bpp_high = at(high)
    if bpp_low > target * (1 + tolerance) or bpp_high < target * (1 - tolerance):
        raise ConfigError(f"--target-bpp {target:g} is outside this model's range on this image: "
                          f"{bpp_low:.4f} bpp (λ={low:g}) .. {bpp_high:.4f} bpp (λ={high:g})")
    best = min(((low, enc_low, bpp_low), (high, enc_high, bpp_high)), key=lambda r: abs(r[2] / target - 1))
    lo, hi = math.log(low), math.log(high)
    while abs(best[2] / target - 1) > tolerance and encodes < MAX_ENCODES:
        mid = 0.5 * (lo + hi)
        enc, rate = at(math.exp(mid))
        if abs(rate / target - 1) < abs(best[2] / target - 1):
            best = (math.exp(mid), enc, rate)
        lo, hi = (mid, hi) if rate < target else (lo, mid)
    lmbda, _, rate = best
    if abs(rate / target - 1) > tolerance:
        raise ConfigError(f"no λ in {low:g}..{high:g} codes this image within {tolerance:.0%} of {target:g} bpp "
                          f"(closest: {rate:.4f} bpp at λ={lmbda:.4g}); the image is too small for that precision")
    final = encode_image(model, info, pixels, verify=True, lmbda=lmbda)  # with the reconstruction checksum
    return RateFound(lmbda, final, bpp(len(final.data), height, width), encodes + 1)
