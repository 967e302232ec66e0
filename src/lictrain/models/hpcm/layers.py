"""Building blocks of HPCM's transforms and context model.

Li, Zhang, Li, Liu, "Learned Image Compression with Hierarchical Progressive Context
Modeling", ICCV 2025 (arXiv 2507.19125), Sec. 3 and the official code (``lyq133/LIC-HPCM``):

* the analysis/synthesis transforms stack *partial-convolution residual blocks*: a 3x3 conv
  on a quarter of the channels (the rest pass through untouched), then a 1x1 expansion, a
  LeakyReLU and a 1x1 projection back, added to the input;
* the spatial-prior networks stack *depthwise residual blocks* (3x3 depthwise, 1x1 expand x2,
  LeakyReLU, 1x1 back);
* the progressive context fusion is a *window cross-attention*: queries from the current
  step's context, keys/values from the context carried over from the previous step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv1x1(in_ch: int, out_ch: int) -> nn.Conv2d:
    """Pointwise convolution (with bias)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1)


def down2x2(in_ch: int, out_ch: int) -> nn.Conv2d:
    """Strided 2x2 convolution: halves height and width, no overlap."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=2, stride=2)


def up2x2(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """Transposed 2x2 convolution: doubles height and width (inverse of :func:`down2x2`)."""
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)


def down4x4(in_ch: int, out_ch: int) -> nn.Conv2d:
    """Strided 4x4 convolution (padding 1): the first, overlapping, downsampling of ``g_a``."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1)


def up4x4(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """Transposed 4x4 convolution (padding 1): the last upsampling of ``g_s``."""
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1)


class PartialConv3x3(nn.Module):
    """3x3 convolution on the first ``channels // ratio`` channels only.

    Spatial mixing on a fraction of the channels is enough when the following 1x1 layers mix
    all channels; it cuts the 3x3 cost by ``ratio²`` (FasterNet-style partial convolution).
    """

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        self.active = channels // ratio
        self.conv = nn.Conv2d(self.active, self.active, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head, tail = x[:, : self.active], x[:, self.active :]
        return torch.cat((self.conv(head), tail), dim=1)


class PConvResBlock(nn.Module):
    """Partial-conv residual block: ``x + W2·LeakyReLU(W1·PConv3x3(x))``.

    Args:
        channels: input = output width.
        partial_ratio: the 3x3 sees ``channels // partial_ratio`` channels (4 in HPCM).
        mlp_ratio: width of the hidden 1x1 layer relative to ``channels`` (4 in HPCM).
    """

    def __init__(self, channels: int, partial_ratio: int = 4, mlp_ratio: int = 4) -> None:
        super().__init__()
        hidden = channels * mlp_ratio
        self.body = nn.Sequential(
            PartialConv3x3(channels, partial_ratio),
            conv1x1(channels, hidden),
            nn.LeakyReLU(inplace=True),
            conv1x1(hidden, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DWConvResBlock(nn.Module):
    """Depthwise residual block: ``x + W2·LeakyReLU(W1·DW3x3(x))`` (the spatial priors' unit).

    Args:
        channels: input = output width.
        mlp_ratio: width of the hidden 1x1 layer relative to ``channels`` (2 in HPCM).
    """

    def __init__(self, channels: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        hidden = channels * mlp_ratio
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels),
            conv1x1(channels, hidden),
            nn.LeakyReLU(inplace=True),
            conv1x1(hidden, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _to_windows(t: torch.Tensor, heads: int, window: int) -> torch.Tensor:
    """``(B, heads·d, H, W)`` with ``H, W`` multiples of ``window`` -> ``(B·nH·nW, heads, window², d)``."""
    b, c, h, w = t.shape
    d = c // heads
    t = t.view(b, heads, d, h // window, window, w // window, window)
    t = t.permute(0, 3, 5, 1, 4, 6, 2)  # B, nH, nW, heads, wy, wx, d
    return t.reshape(-1, heads, window * window, d)


def _from_windows(t: torch.Tensor, batch: int, height: int, width: int, window: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows`."""
    _, heads, _, d = t.shape
    t = t.view(batch, height // window, width // window, heads, window, window, d)
    t = t.permute(0, 3, 6, 1, 4, 2, 5)  # B, heads, d, nH, wy, nW, wx
    return t.reshape(batch, heads * d, height, width)


class WindowCrossAttention(nn.Module):
    """Progressive context fusion (paper Sec. 3.3): ``h_t = Attn(q(x_t), k(h), v(h)) + W_o·x_t``.

    Queries come from the context ``x_t`` the spatial prior just produced, keys and values
    from the context ``h`` carried over from the previous coding step (or scale), so each step
    sees what earlier steps learned. Attention is local: non-overlapping ``window x window``
    windows, multi-head, no output projection on the attention branch (as in the official
    model); the skip branch is a 1x1 conv of ``x_t``.

    Maps whose sides are not multiples of ``window`` are zero-padded and the padded keys are
    masked out of the softmax, so any latent size works (the official code requires inputs
    padded to 256 pixels instead).

    Args:
        dim: channels of ``x_t`` and ``h`` (2·M: scales and means).
        window: window side (4 at s1, 8 at s2/s3 in HPCM).
        heads: attention heads (32 in Base/Large); ``dim`` must be divisible by it.
    """

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.window = window
        self.heads = heads
        self.q = conv1x1(dim, dim)
        self.kv = conv1x1(dim, 2 * dim)  # keys and values in one conv: fewer ops per step
        self.skip = conv1x1(dim, dim)
        self._masks: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        win = self.window
        pad_h, pad_w = (-h) % win, (-w) % win
        # 1x1 projections commute with windowing, so project first, on the unpadded maps.
        q, kv = self.q(x), self.kv(memory)
        mask = None
        if pad_h or pad_w:
            q, kv = F.pad(q, (0, pad_w, 0, pad_h)), F.pad(kv, (0, pad_w, 0, pad_h))
            mask = self._key_mask(b, h, w, x.device)
        k, v = kv.chunk(2, 1)
        qw, kw, vw = (_to_windows(t, self.heads, win) for t in (q, k, v))
        out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask)
        out = _from_windows(out, b, h + pad_h, w + pad_w, win)[..., :h, :w]
        return out + self.skip(x)

    def _key_mask(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """``(windows, 1, 1, keys)`` boolean mask, False on padded keys (cached per size)."""
        key = (batch, height, width, str(device))
        if key not in self._masks:
            win = self.window
            valid = torch.zeros(1, 1, height + (-height) % win, width + (-width) % win, dtype=torch.bool, device=device)
            valid[..., :height, :width] = True
            self._masks[key] = _to_windows(valid.expand(batch, 1, -1, -1), 1, win).transpose(-1, -2)
        return self._masks[key]
