"""Classical codecs through Pillow, measured exactly like the learned ones.

========= ====================================================================
name      codec
========= ====================================================================
jpeg420   JPEG (libjpeg), 4:2:0 chroma subsampling, optimised Huffman tables
jpeg444   JPEG, no chroma subsampling (4:4:4), optimised Huffman tables
webp      WebP (libwebp) lossy, ``method=4`` (cwebp's default effort)
avif      AVIF (libavif through Pillow's native plugin), 4:2:0, ``speed=6``,
          only when ``PIL.features.check("avif")``
========= ====================================================================

Each is swept over Pillow's ``quality`` (default :data:`DEFAULT_QUALITIES`). bpp counts the
whole encoded file (headers and tables included, as for ``.lic`` files); the decoded image
is Pillow's RGB decode of those bytes; PSNR and MS-SSIM as in :mod:`.metrics`.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, features

from lictrain.data import NamedImage
from lictrain.errors import ConfigError
from lictrain.evaluation.metrics import bpp, ms_ssim_uint8, psnr_uint8
from lictrain.evaluation.results import CurveResult, ImageResult, PointResult

DEFAULT_QUALITIES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)


@dataclass(frozen=True)
class Anchor:
    """A classical codec: Pillow format and save options for a quality."""

    name: str
    title: str
    format: str
    options: Callable[[int], dict[str, Any]]
    available: Callable[[], bool] = lambda: True


ANCHORS: dict[str, Anchor] = {
    a.name: a
    for a in (
        Anchor("jpeg420", "JPEG 4:2:0", "JPEG", lambda q: {"quality": q, "subsampling": 2, "optimize": True}),
        Anchor("jpeg444", "JPEG 4:4:4", "JPEG", lambda q: {"quality": q, "subsampling": 0, "optimize": True}),
        Anchor("webp", "WebP", "WEBP", lambda q: {"quality": q, "method": 4}, lambda: bool(features.check("webp"))),
        Anchor("avif", "AVIF", "AVIF", lambda q: {"quality": q, "speed": 6, "subsampling": "4:2:0"},
               lambda: bool(features.check("avif"))),
    )
}


def available_anchors() -> list[str]:
    """Anchor names whose Pillow plugin is installed."""
    return [name for name, a in ANCHORS.items() if a.available()]


def parse_anchor_list(text: str) -> list[str]:
    """``"jpeg420,webp"`` (or ``"all"``) -> names; ConfigError for unknown or unavailable ones."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return available_anchors()
    for n in names:
        if n not in ANCHORS:
            raise ConfigError(f"unknown anchor {n!r}; choose from {', '.join(ANCHORS)} (or all)")
        if not ANCHORS[n].available():
            raise ConfigError(f"anchor {n} needs Pillow's {ANCHORS[n].format} plugin, which is not installed here")
    if not names:
        raise ConfigError("--anchors is empty; give e.g. jpeg420,jpeg444,webp")
    return names


def parse_qualities(text: str) -> list[int]:
    """``"10,20,90"`` or ``"10:95:5"`` (start:stop:step, stop included) -> qualities in 1..100."""
    try:
        if ":" in text:
            start, stop, step = (int(v) for v in text.split(":"))
            values = list(range(start, stop + 1, step))
        else:
            values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--anchor-qualities must be a list like 10,30,50,70,90 or a range 10:95:5, got {text!r}") from None
    if not values or any(not 1 <= v <= 100 for v in values):
        raise ConfigError(f"--anchor-qualities must be values in 1..100, got {text!r}")
    return sorted(set(values))


def encode_decode(anchor: Anchor, pixels: torch.Tensor, quality: int) -> tuple[bytes, torch.Tensor, float, float]:
    """(file bytes, decoded uint8 (3, H, W), encode seconds, decode seconds) of one image."""
    img = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    buf = io.BytesIO()
    t0 = time.perf_counter()
    img.save(buf, format=anchor.format, **anchor.options(quality))
    encode_s = time.perf_counter() - t0
    data = buf.getvalue()
    t1 = time.perf_counter()
    with Image.open(io.BytesIO(data)) as decoded:
        rgb = np.asarray(decoded.convert("RGB"), dtype=np.uint8)
    decode_s = time.perf_counter() - t1
    return data, torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))), encode_s, decode_s


def evaluate_anchor(
    name: str,
    images: Sequence[NamedImage],
    qualities: Sequence[int] = DEFAULT_QUALITIES,
    *,
    ms_ssim: bool = True,
) -> CurveResult:
    """One anchor over a quality sweep on ``images``: a :class:`CurveResult` of kind ``anchor``.

    Args:
        ms_ssim: compute MS-SSIM (skip it for speed where only PSNR is needed).

    Raises:
        ConfigError: unknown or unavailable anchor.
    """
    parse_anchor_list(name)
    anchor = ANCHORS[name]
    points = []
    for q in qualities:
        point = PointResult(f"q{q}", {"codec": anchor.title, "quality": int(q)})
        for im in images:
            data, decoded, enc_s, dec_s = encode_decode(anchor, im.pixels, int(q))
            b = bpp(len(data), im.height, im.width)
            point.images.append(ImageResult(
                image=im.name, height=im.height, width=im.width, bytes=len(data), payload_bytes=len(data),
                bpp=b, bpp_payload=b, bpp_estimated=float("nan"), psnr=psnr_uint8(im.pixels, decoded),
                ms_ssim=ms_ssim_uint8(im.pixels, decoded) if ms_ssim else float("nan"),
                encode_s=enc_s, decode_s=dec_s,
            ))
        points.append(point)
    return CurveResult(name, "anchor", points, f"{anchor.title} (Pillow), quality {min(qualities)}..{max(qualities)}",
                       [im.name for im in images])
