"""HPCM: the codec, its presets and the registry entries.

Li, Zhang, Li, Liu, "Learned Image Compression with Hierarchical Progressive Context
Modeling", ICCV 2025 (arXiv 2507.19125). Transforms (facts from the official code):

* ``g_a``: 4x4/2 conv to 96, 2 PConv blocks; 2x2/2 to 192, 2 blocks; 2x2/2 to 384, 4 blocks
  (8 in Large); 2x2/2 to M = 320. ``g_s`` mirrors it with transposed convs.
* ``h_a``: 1 block at M, 2x2/2 to N = 256, 3 blocks, 2x2/2. ``h_s``: 2x2 up, 3 blocks,
  2x2 up to 2M, 1 block: per-position scales and means for the context model.
* ``y``: :class:`~lictrain.models.hpcm.context.HierarchicalContext` with GG(β=1.5) residual
  coding; ``z``: learned per-channel GG prior.

Images of any size are padded (edge replication, bottom/right) to a multiple of 64 — the
latent needs sides divisible by 4 for the two 2x2 lattice levels — and the output is cropped
back, so the registry alignment is 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lictrain.models.hpcm.context import FIRST_STEP, ContextConfig, HierarchicalContext
from lictrain.models.hpcm.entropy import GeneralizedGaussianConditional, GeneralizedGaussianPrior, scale_table_up_to
from lictrain.models.gains import RateGains, gain_margin
from lictrain.models.hpcm.layers import PConvResBlock, down2x2, down4x4, up2x2, up4x4
from lictrain.models.registry import register_model

PAD_MULTIPLE = 64  # 16x downsampling to y, then two 2x2 lattice levels (and h_a's 4x)


@dataclass(frozen=True)
class HPCMConfig:
    """Widths and depths of an HPCM preset.

    Attributes:
        widths: channels of ``g_a``/``g_s`` at 1/2, 1/4, 1/8 resolution.
        blocks: PConv residual blocks at those resolutions (per transform).
        latent: M, channels of ``y``.
        hyper: N, channels of ``z``.
        hyper_blocks: PConv blocks at N in ``h_a`` and in ``h_s``.
        mlp_ratio: hidden expansion of the PConv blocks.
        context: the context model's widths.
    """

    widths: tuple[int, int, int] = (96, 192, 384)
    blocks: tuple[int, int, int] = (2, 2, 4)
    latent: int = 320
    hyper: int = 256
    hyper_blocks: int = 3
    mlp_ratio: int = 4
    context: ContextConfig = field(default_factory=ContextConfig)


BASE = HPCMConfig()
LARGE = HPCMConfig(blocks=(2, 2, 8), context=ContextConfig(prior_s12=(2, 2), prior_s3=(4, 3)))
TINY = HPCMConfig(widths=(32, 64, 128), blocks=(1, 1, 2), latent=96, hyper=64, hyper_blocks=1, mlp_ratio=2,
                  context=ContextConfig(channels=96, prior_s12=(1, 1), prior_s3=(1, 1), heads=8))


def _stage(channels: int, count: int, mlp_ratio: int) -> list[nn.Module]:
    return [PConvResBlock(channels, 4, mlp_ratio) for _ in range(count)]


def analysis(cfg: HPCMConfig) -> nn.Sequential:
    """``g_a``: image -> y (16x down)."""
    (c1, c2, c3), (b1, b2, b3), r = cfg.widths, cfg.blocks, cfg.mlp_ratio
    return nn.Sequential(down4x4(3, c1), *_stage(c1, b1, r), down2x2(c1, c2), *_stage(c2, b2, r),
                         down2x2(c2, c3), *_stage(c3, b3, r), down2x2(c3, cfg.latent))


def synthesis(cfg: HPCMConfig) -> nn.Sequential:
    """``g_s``: ŷ -> image (16x up)."""
    (c1, c2, c3), (b1, b2, b3), r = cfg.widths, cfg.blocks, cfg.mlp_ratio
    return nn.Sequential(up2x2(cfg.latent, c3), *_stage(c3, b3, r), up2x2(c3, c2), *_stage(c2, b2, r),
                         up2x2(c2, c1), *_stage(c1, b1, r), up4x4(c1, 3))


def hyper_analysis(cfg: HPCMConfig) -> nn.Sequential:
    """``h_a``: y -> z (4x down)."""
    m, n, r = cfg.latent, cfg.hyper, cfg.mlp_ratio
    return nn.Sequential(*_stage(m, 1, r), down2x2(m, n), *_stage(n, cfg.hyper_blocks, r), down2x2(n, n))


def hyper_synthesis(cfg: HPCMConfig) -> nn.Sequential:
    """``h_s``: ẑ -> (scales, means) of y (4x up)."""
    m, n, r = cfg.latent, cfg.hyper, cfg.mlp_ratio
    return nn.Sequential(up2x2(n, n), *_stage(n, cfg.hyper_blocks, r), up2x2(n, 2 * m), *_stage(2 * m, 1, r))


class _QuantizeCoder:
    """Step coder of ``forward``: quantises each step, records its scales and means.

    Training: ``ŷ = y + sg(round(y - μ) - (y - μ))`` on the step's mask — the value of
    ``round(y - μ) + μ`` with the straight-through gradient — built from as few autograd ops
    as possible (there are 11 steps). Eval: ``(round((y - μ)·mask) + μ)·mask``, the very
    expression the encoder uses, so eval ``forward`` and ``compress`` give identical ŷ.
    """

    def __init__(self, y_levels: list[torch.Tensor], training: bool, gain: torch.Tensor | None = None) -> None:
        self.y = y_levels
        self.training = training
        self.gain = gain  # QVRF: round((y - μ)·g)/g + μ (models/gains.py); None: g = 1
        self.params: list[torch.Tensor | None] = [None] * len(y_levels)  # masked (scales, means) per scale

    def __call__(self, level: int, scales: torch.Tensor, means: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        step_params = torch.cat((scales, means), 1) * mask.repeat(1, 2, 1, 1)
        acc = self.params[level]
        self.params[level] = step_params if acc is None else acc + step_params
        y, g = self.y[level], self.gain
        if self.training:
            with torch.no_grad():
                d = y - means if g is None else (y - means) * g
                offset = torch.round(d) - d
            return (y + (offset if g is None else offset / g)) * mask
        if g is None:
            return (torch.round((y - means) * mask) + means) * mask
        return (torch.round((y - means) * g * mask) / g + means) * mask


class _EncodeCoder:
    """Step coder of ``compress``: rounds like eval ``forward`` and feeds one rANS stream per image."""

    def __init__(self, y_levels: list[torch.Tensor], gg: GeneralizedGaussianConditional,
                 gain: torch.Tensor | None = None) -> None:
        from compressai.ans import BufferedRansEncoder

        self.y, self.gg, self.gain = y_levels, gg, gain
        self.encoders = [BufferedRansEncoder() for _ in range(y_levels[0].shape[0])]

    def __call__(self, level: int, scales: torch.Tensor, means: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        g = self.gain
        q = torch.round((self.y[level] - means) * (mask if g is None else g * mask))
        indexes = self.gg.build_indexes(scales if g is None else scales * g)
        cdfs, lengths, offsets = self.gg.tables()
        for b, encoder in enumerate(self.encoders):
            encoder.encode_with_indexes(q[b].masked_select(mask[0]).int().tolist(),
                                        indexes[b].masked_select(mask[0]).tolist(), cdfs, lengths, offsets)
        return (q + means) * mask if g is None else (q / g + means) * mask

    def flush(self) -> list[bytes]:
        return [encoder.flush() for encoder in self.encoders]


class _DecodeCoder:
    """Step coder of ``decompress``: decodes the symbols the encoder wrote, in the same order."""

    def __init__(self, strings: list[bytes], gg: GeneralizedGaussianConditional,
                 gain: torch.Tensor | None = None) -> None:
        from compressai.ans import RansDecoder

        self.gg, self.gain = gg, gain
        self.decoders = []
        for s in strings:
            decoder = RansDecoder()
            decoder.set_stream(s)
            self.decoders.append(decoder)

    def __call__(self, level: int, scales: torch.Tensor, means: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        g = self.gain
        indexes = self.gg.build_indexes(scales if g is None else scales * g)
        cdfs, lengths, offsets = self.gg.tables()
        q = torch.zeros_like(means)
        for b, decoder in enumerate(self.decoders):
            values = decoder.decode_stream(indexes[b].masked_select(mask[0]).tolist(), cdfs, lengths, offsets)
            q[b].masked_scatter_(mask[0], torch.tensor(values, dtype=q.dtype, device=q.device))
        return (q + means) * mask if g is None else (q / g + means) * mask


class HPCM(nn.Module):
    """Learned image codec with hierarchical progressive context modelling.

    ``forward`` follows CompressAI's interface and adds ``rate_likelihoods`` (``z``, ``s1``,
    ``s2``, ``s3``: the y likelihoods split by the scale at which each latent is coded).
    ``update``/``compress``/``decompress`` produce and read real rANS bitstreams.

    Args:
        cfg: widths and depths (:data:`BASE`, :data:`LARGE`, :data:`TINY`).
        s2_placement: ``"lictrain"`` (default: every latent gets its own position's
            hyperprior parameters at the s1 -> s2 transition) or ``"official"`` (the official
            code's placement, which moves them for channel groups 2-7; the ``*-official``
            presets use it so converted official weights compute what they were trained for).
    """

    def __init__(self, cfg: HPCMConfig = BASE, s2_placement: str = "lictrain") -> None:
        super().__init__()
        if cfg.context.channels != cfg.latent:
            raise ValueError("context channels must equal the latent channels M")
        self.cfg = cfg
        self.s2_placement = s2_placement
        self.g_a, self.g_s = analysis(cfg), synthesis(cfg)
        self.h_a, self.h_s = hyper_analysis(cfg), hyper_synthesis(cfg)
        self.context = HierarchicalContext(cfg.context, s2_placement)
        self.y_gg = GeneralizedGaussianConditional()
        self.z_prior = GeneralizedGaussianPrior(cfg.hyper)
        self.rate_gains: RateGains | None = None  # variable rate (make_variable_rate)
        self.gain: torch.Tensor | None = None  # the rate in use (models.gains.at_rate); not saved

    def make_variable_rate(self, lambdas: list[float]) -> None:
        """One gain per λ of ``lambdas`` (QVRF); the y scale table grows by the largest gain
        expected (``σ·g`` must not clip at the table's end)."""
        self.rate_gains = RateGains(lambdas).to(self.y_gg.scale_table.device)
        self.y_gg.scale_table = scale_table_up_to(64.0 * gain_margin(lambdas)).to(self.y_gg.scale_table)
        self.y_gg.cdfs = None  # rebuilt by update()

    @staticmethod
    def _pad(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def forward(self, x: torch.Tensor) -> dict:
        """Reconstruction and likelihoods (training: STE ŷ, noisy likelihoods; eval: rounding)."""
        h, w = x.shape[-2:]
        y = self.g_a(self._pad(x))
        z_hat, z_lik = self.z_prior(self.h_a(y))
        lat = self.context.lattice(y.shape[-2], y.shape[-1], y.device)
        g = self.gain
        coder = _QuantizeCoder(lat.pyramid(y), self.training, g)
        y_hat = self.context.run(self.h_s(z_hat), coder)  # the context reads the de-gained ŷ: one model, every rate
        x_hat = self.g_s(y_hat)[..., :h, :w]

        # Assemble scales and means on the full grid (each latent was coded exactly once).
        params = coder.params[0]
        for level in (1, 2):
            params = lat.refine(params, level) + coder.params[level]
        scales, means = params.chunk(2, 1)
        res = y - means if g is None else (y - means) * g
        res = res + torch.empty_like(res).uniform_(-0.5, 0.5) if self.training else torch.round(res)
        y_lik = self.y_gg.likelihood(res, scales if g is None else scales * g)

        steps, b = lat.step_maps[2], y.shape[0]
        split = {
            "s1": steps < FIRST_STEP[1],
            "s2": (steps >= FIRST_STEP[1]) & (steps < FIRST_STEP[2]),
            "s3": steps >= FIRST_STEP[2],
        }
        rates = {"z": z_lik} | {k: y_lik.masked_select(m).view(b, -1) for k, m in split.items()}
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}, "rate_likelihoods": rates}

    def update(self, scale_table: torch.Tensor | None = None, force: bool = False) -> bool:
        """Build the rANS CDF tables of y (scale table) and z (learned per-channel scales).

        Call after training (or after loading weights) and before :meth:`compress`.
        Returns whether anything was (re)built.
        """
        updated = self.y_gg.update(scale_table, force=force)
        return self.z_prior.update(force=force) or updated

    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> dict:
        """Encode a batch: ``{"strings": [y_strings, z_strings], "shape": (H, W)}``.

        ``shape`` is the *input image* size (not z's, unlike CompressAI): decompress needs it
        to undo the padding, and z's size follows from it.
        """
        y = self.g_a(self._pad(x))
        z_strings, z_hat = self.z_prior.compress(self.h_a(y))
        lat = self.context.lattice(y.shape[-2], y.shape[-1], y.device)
        coder = _EncodeCoder(lat.pyramid(y), self.y_gg, self.gain)
        self.context.run(self.h_s(z_hat), coder)
        return {"strings": [coder.flush(), z_strings], "shape": tuple(x.shape[-2:])}

    @torch.no_grad()
    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int]) -> dict:
        """Decode what :meth:`compress` wrote; ``x_hat`` is cropped to ``shape`` and clamped to [0, 1]."""
        h, w = shape
        hp, wp = h + (-h) % PAD_MULTIPLE, w + (-w) % PAD_MULTIPLE
        z_hat = self.z_prior.decompress(strings[1], (hp // 64, wp // 64))
        y_hat = self.context.run(self.h_s(z_hat), _DecodeCoder(strings[0], self.y_gg, self.gain))
        return {"x_hat": self.g_s(y_hat)[..., :h, :w].clamp(0, 1)}


@register_model("hpcm-base", alignment=1, qualities=(1,), parameters={1: 68_505_299})
def hpcm_base(quality: int) -> nn.Module:
    """HPCM-Base (Li et al., ICCV 2025), 68.5 M parameters; the rate point is set by lambda."""
    return HPCM(BASE)


@register_model("hpcm-large", alignment=1, qualities=(1,), parameters={1: 89_718_803})
def hpcm_large(quality: int) -> nn.Module:
    """HPCM-Large (Li et al., ICCV 2025), 89.7 M parameters; deeper transforms and priors."""
    return HPCM(LARGE)


# The official placement exists for weights converted from the official release
# (lictrain.models.hpcm.official); a checkpoint records its model name, so fine-tuning such
# weights keeps the placement they were trained with. Training from scratch: use hpcm-base.
@register_model("hpcm-base-official", alignment=1, qualities=(1,), parameters={1: 68_505_299})
def hpcm_base_official(quality: int) -> nn.Module:
    """HPCM-Base with the official code's s2 hyperprior placement: runs converted official weights."""
    return HPCM(BASE, s2_placement="official")


@register_model("hpcm-large-official", alignment=1, qualities=(1,), parameters={1: 89_718_803})
def hpcm_large_official(quality: int) -> nn.Module:
    """HPCM-Large with the official code's s2 hyperprior placement: runs converted official weights."""
    return HPCM(LARGE, s2_placement="official")


@register_model("hpcm-tiny", alignment=1, qualities=(1,), short_budget_lr=2e-3, parameters={1: 3_694_875})  # 4e-3 as good, 8e-3 diverged
def hpcm_tiny(quality: int) -> nn.Module:
    """HPCM-Tiny: HPCM's full 3-scale, 11-step, attention structure at CPU-friendly width."""
    return HPCM(TINY)
