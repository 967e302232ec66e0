"""Hierarchical progressive context model (HPCM's entropy-parameter network for ``y``).

Li, Zhang, Li, Liu, "Learned Image Compression with Hierarchical Progressive Context
Modeling", ICCV 2025 (arXiv 2507.19125), Sec. 3.2-3.3 and the official code:

* **Hierarchical coding schedule.** The M latent channels form 8 groups. Each group owns a
  2x2-subsampled lattice of the latent grid (scale s2, H/2 x W/2) and, inside it, a further
  2x2-subsampled lattice (scale s1, H/4 x W/4). Coding visits s1 in 2 steps (checkerboard),
  then the rest of s2 in 3 steps, then the rest of the full grid s3 in 6 steps: 11 steps.
  Coarse scales see far-apart latents with small, cheap networks: long-range context.
* **Progressive context fusion.** Every step after the first runs a per-step 1x1 adaptor and
  a spatial-prior net (depthwise residual blocks; s1 and s2 share one, s3 has its own) on
  ``[carried context, ŷ so far]``, giving this step's scales and means; a window
  cross-attention then fuses them with the carried context, and the result is carried to
  the next step. Between scales the carried context is scattered onto the finer grid, the
  hyperprior's parameters fill the not-yet-coded positions, and a 1x1 conv mixes them.

The network is written once for encoder, decoder and training: :meth:`HierarchicalContext.run`
calls a *step coder* for each step, which quantises (training/eval), encodes or decodes the
step's latents. Encoder and decoder thus execute identical operations on identical ``ŷ``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from lictrain.models.hpcm.layers import DWConvResBlock, WindowCrossAttention, conv1x1

GROUPS = 8
STEPS_PER_SCALE = (2, 3, 6)  # s1, s2, s3
FIRST_STEP = (0, 2, 5)  # global index of each scale's first step
NUM_STEPS = sum(STEPS_PER_SCALE)  # 11

# 2x2 phases (row, col) in the order the schedule visits them; group g's s2 lattice is
# phase _PHASES[g % 4] of the full grid.
_PHASES = ((0, 0), (1, 1), (0, 1), (1, 0))

#: How the hyperprior's parameters reach the not-yet-coded s2 positions (s1 -> s2).
S2_PLACEMENTS = ("lictrain", "official")

# Official placement: per group, the phase *of the s2 grid* that the official code leaves out
# when it gathers the hyperprior's s2 parameters (its ``get_mask_for_s1`` marks full-grid
# 4x4-tile positions (0,0) (1,1) (0,1) (1,0) (0,2) (1,3) (0,3) (1,2) for groups 0..7, i.e.
# s2-grid phase (0,0) for groups 0-3 and (0,1) for groups 4-7). Only groups 0 and 1 have
# their s1 lattice there, so for groups 2-7 the kept values, taken in raster order, land
# on the positions of other latents.
_OFFICIAL_S2_SKIP = ((0, 0),) * 4 + ((0, 1),) * 4


def _s1_phase(group: int) -> tuple[int, int]:
    """Phase of the group's s1 lattice inside its s2 grid (pairs of groups share one)."""
    k = group // 2
    return (k >> 1, k & 1)


def schedule_tile(group: int) -> list[list[int]]:
    """8x8 tile of global step indices (0..10) at which each latent of ``group`` is coded.

    The tile repeats over the latent grid. Rules (official schedule):

    * s1 (steps 0-1): checkerboard on the s1 grid; groups 0-3 code the even squares first,
      groups 4-7 the odd ones, so every step sees both parities across channels.
    * s2 (steps 2-4): with ``k = group // 2`` and phases ``m_i = (i >> 1, i & 1)`` of the
      s2 grid (``m_k`` is the s1 lattice), the remaining phases are ``m_{k^3}, m_{k^2}, m_{k^1}``
      in that order: diagonal neighbour first, then vertical, then horizontal.
    * s3 (steps 5-10): a 4x4 tile splits each 2x2 phase into its two diagonals; the group
      visits phases cyclically from its own s2 phase, a diagonal pair per phase, 2 steps
      per phase; groups 0-3 start with the main diagonal, groups 4-7 with the anti-diagonal.
    """
    tile = [[-1] * 8 for _ in range(8)]
    for r in range(8):
        for c in range(8):
            if (r % 2, c % 2) == _PHASES[group % 4]:
                r2, c2 = r // 2, c // 2
                if (r2 % 2, c2 % 2) == _s1_phase(group):
                    parity = (r2 // 2 + c2 // 2) % 2
                    tile[r][c] = parity if group < 4 else 1 - parity
                else:
                    k = group // 2
                    xor = next(x for x in (3, 2, 1) if ((k ^ x) >> 1, (k ^ x) & 1) == (r2 % 2, c2 % 2))
                    tile[r][c] = 2 + (3, 2, 1).index(xor)
            else:
                pattern = 2 * _PHASES.index((r % 2, c % 2)) + (0 if (r % 4) // 2 == (c % 4) // 2 else 1)
                k = (pattern - 2 * (group % 4)) % 8
                k = k if group < 4 else k ^ 1
                tile[r][c] = 3 + k  # k in 2..7: the 6 s3 steps
    return tile


class Lattice:
    """Index bookkeeping of the schedule for one latent size (cached by the context model).

    Scale grids are indexed 0 (s1), 1 (s2), 2 (s3 = full grid). ``coarsen``/``refine`` move
    a tensor between neighbouring scales with ``pixel_unshuffle``/``pixel_shuffle`` and a
    per-channel phase pick, so each channel group keeps its own lattice.

    Args:
        channels: M (a multiple of 8).
        height, width: latent grid size (multiples of 4).
        device: where the step maps live.
    """

    def __init__(self, channels: int, height: int, width: int, device: torch.device) -> None:
        if channels % GROUPS or height % 4 or width % 4:
            raise ValueError(f"latent {channels}x{height}x{width} must have channels % 8 == 0 and sides % 4 == 0")
        per = channels // GROUPS
        tiles = torch.tensor([schedule_tile(g) for g in range(GROUPS)], device=device)
        full = tiles.repeat(1, height // 8 + 1, width // 8 + 1)[:, :height, :width]
        full = full.repeat_interleave(per, dim=0).unsqueeze(0)  # (1, M, H, W)
        phase = lambda p: p[0] * 2 + p[1]  # noqa: E731 - channel offset inside pixel_unshuffle
        s2 = torch.tensor([phase(_PHASES[g % 4]) for g in range(GROUPS)], device=device).repeat_interleave(per)
        s1 = torch.tensor([phase(_s1_phase(g)) for g in range(GROUPS)], device=device).repeat_interleave(per)
        base = torch.arange(channels, device=device) * 4
        # _pick[i]: channels to keep when going from scale i+1 down to scale i.
        self._pick = [base + s1, base + s2]
        maps = [full]
        for level in (1, 0):
            maps.insert(0, self.coarsen(maps[0], level))
        self.step_maps = maps  # (1, M, h_l, w_l) global step index per scale
        for level, first in enumerate(FIRST_STEP):
            if int(maps[level].min()) != 0 or int(maps[level].max()) != first + STEPS_PER_SCALE[level] - 1:
                raise AssertionError("inconsistent coding schedule")
        self._official_s2: tuple[torch.Tensor, torch.Tensor] | None = None  # built on first use

    def _index(self, level: int, channels: int) -> torch.Tensor:
        pick = self._pick[level]
        reps = channels // pick.numel()  # scales|means stacks repeat the per-channel phases
        return torch.cat([pick + 4 * pick.numel() * i for i in range(reps)])

    def coarsen(self, t: torch.Tensor, level: int) -> torch.Tensor:
        """Scale ``level + 1`` -> ``level``: keep each channel's lattice (``C`` a multiple of M)."""
        return nn.functional.pixel_unshuffle(t, 2).index_select(1, self._index(level, t.shape[1]))

    def refine(self, t: torch.Tensor, level: int) -> torch.Tensor:
        """Scale ``level - 1`` -> ``level``: scatter onto the finer grid, zeros elsewhere."""
        b, c, h, w = t.shape
        out = t.new_zeros(b, 4 * c, h, w).index_copy(1, self._index(level - 1, c), t)
        return nn.functional.pixel_shuffle(out, 2)

    def pyramid(self, t: torch.Tensor) -> list[torch.Tensor]:
        """``[t at s1, t at s2, t]`` for a full-grid tensor."""
        s2 = self.coarsen(t, 1)
        return [self.coarsen(s2, 0), s2, t]

    def official_s2_hyper(self, t: torch.Tensor) -> torch.Tensor:
        """The official code's s2 hyperprior parameters for an s2-grid tensor ``t``.

        For every channel the official code takes the values of ``t`` outside the s2-grid
        phase :data:`_OFFICIAL_S2_SKIP` of its group, in raster order, and writes them, in
        raster order, onto the positions not coded at s1; the s1 positions get zeros. For
        groups 0 and 1 this equals ``t`` masked to the uncoded positions; for groups 2-7 it
        shifts values onto other latents. Pure index moves: exact in any dtype.

        Args:
            t: ``(B, C, H/2, W/2)`` with ``C`` a multiple of M (scales|means stacks).
        """
        if self._official_s2 is None:
            self._official_s2 = self._official_s2_indices()
        src, dst = self._official_s2
        reps = t.shape[1] // src.shape[0]
        src, dst = src.repeat(reps, 1), dst.repeat(reps, 1)
        flat = t.flatten(2)
        b = t.shape[0]
        values = flat.gather(2, src.expand(b, -1, -1))
        return torch.zeros_like(flat).scatter_(2, dst.expand(b, -1, -1), values).view_as(t)

    def _official_s2_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel raster indices ``(src, dst)``, each ``(M, 3/4·h·w)``, of :meth:`official_s2_hyper`."""
        steps = self.step_maps[1][0]  # (M, h, w)
        m, h, w = steps.shape
        per, device = m // GROUPS, steps.device
        rows = torch.arange(h, device=device).view(h, 1) % 2
        cols = torch.arange(w, device=device).view(1, w) % 2
        keep = torch.stack([(rows != r) | (cols != c) for r, c in _OFFICIAL_S2_SKIP]).repeat_interleave(per, dim=0)
        uncoded = steps >= FIRST_STEP[1]
        flat = torch.arange(h * w, device=device).expand(m, -1)
        n = h * w * 3 // 4  # both masks keep three of the four phases of every channel
        return flat[keep.flatten(1)].view(m, n), flat[uncoded.flatten(1)].view(m, n)

    def step_mask(self, level: int, step: int) -> torch.Tensor:
        """Boolean ``(1, M, h_l, w_l)``: latents coded at global ``step`` on scale ``level``'s grid."""
        return self.step_maps[level] == step


class StepCoder(Protocol):
    """Quantises/encodes/decodes one step: returns ``ŷ`` on ``mask`` (zeros elsewhere)."""

    def __call__(self, level: int, scales: torch.Tensor, means: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


class SpatialPrior(nn.Module):
    """Spatial-prior net: ``W·DW-blocks(DW-blocks(x) · q_step)`` -> (scales, means).

    The per-step learned channel gain ``q_step`` between the two stacks lets one shared
    network behave differently at each step.
    """

    def __init__(self, channels: int, blocks: tuple[int, int], mlp_ratio: int) -> None:
        super().__init__()
        width = 3 * channels
        self.head = nn.Sequential(*(DWConvResBlock(width, mlp_ratio) for _ in range(blocks[0])))
        self.tail = nn.Sequential(*(DWConvResBlock(width, mlp_ratio) for _ in range(blocks[1])),
                                  conv1x1(width, 2 * channels))

    def forward(self, x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return self.tail(self.head(x) * gain)


@dataclass(frozen=True)
class ContextConfig:
    """Widths of the context model.

    Attributes:
        channels: M, latent channels (multiple of 8; 2M divisible by ``heads``).
        prior_s12: DW blocks (before, after the step gain) of the s1/s2 spatial prior.
        prior_s3: the same for s3.
        heads: attention heads.
        windows: attention window side at s1, s2, s3.
        mlp_ratio: hidden width of the DW blocks.
    """

    channels: int = 320
    prior_s12: tuple[int, int] = (2, 1)
    prior_s3: tuple[int, int] = (3, 2)
    heads: int = 32
    windows: tuple[int, int, int] = (4, 8, 8)
    mlp_ratio: int = 2


class HierarchicalContext(nn.Module):
    """The 11-step hierarchical progressive context model (see the module docstring).

    Args:
        cfg: widths of the context model.
        s2_placement: how the hyperprior's parameters fill the s2 positions not coded at s1:
            ``"lictrain"`` (each latent gets its own position's parameters) or ``"official"``
            (the official code's gather, see :meth:`Lattice.official_s2_hyper`; needed to
            run weights converted from the official release). Parameters are identical.
    """

    def __init__(self, cfg: ContextConfig, s2_placement: str = "lictrain") -> None:
        super().__init__()
        if s2_placement not in S2_PLACEMENTS:
            raise ValueError(f"s2_placement must be one of {S2_PLACEMENTS}, not {s2_placement!r}")
        m = cfg.channels
        self.channels = m
        self.s2_placement = s2_placement
        # Step 0 uses the hyperprior directly; steps 1..10 each have an adaptor and a gain.
        self.adaptors = nn.ModuleList(conv1x1(3 * m, 3 * m) for _ in range(NUM_STEPS - 1))
        self.gains = nn.Parameter(torch.ones(NUM_STEPS - 1, 1, 3 * m, 1, 1))
        prior_s12 = SpatialPrior(m, cfg.prior_s12, cfg.mlp_ratio)
        self.priors = nn.ModuleList([prior_s12, prior_s12, SpatialPrior(m, cfg.prior_s3, cfg.mlp_ratio)])
        self.attention = nn.ModuleList(WindowCrossAttention(2 * m, w, cfg.heads) for w in cfg.windows)
        self.scale_fusion = nn.ModuleList(conv1x1(2 * m, 2 * m) for _ in range(2))  # into s2, into s3
        self._lattices: dict[tuple, Lattice] = {}

    def lattice(self, height: int, width: int, device: torch.device) -> Lattice:
        """The (cached) :class:`Lattice` of a latent grid."""
        key = (height, width, str(device))
        if key not in self._lattices:
            self._lattices[key] = Lattice(self.channels, height, width, device)
        return self._lattices[key]

    def run(self, hyper: torch.Tensor, coder: StepCoder) -> torch.Tensor:
        """Code all 11 steps; returns the full-grid ``ŷ``.

        Args:
            hyper: hyper-synthesis output ``(B, 2M, H, W)``: scales then means.
            coder: called once per step with that step's scales, means and mask.
        """
        lat = self.lattice(hyper.shape[-2], hyper.shape[-1], hyper.device)
        hyper_levels = lat.pyramid(hyper)
        carried = hyper_levels[0]
        scales, means = carried.chunk(2, 1)
        y_hat = coder(0, scales, means, lat.step_mask(0, 0))
        step = 1
        for level in range(3):
            if level:
                y_hat = lat.refine(y_hat, level)
                # Coded positions carry the fused context; the rest get the hyperprior.
                if level == 1 and self.s2_placement == "official":
                    fresh = lat.official_s2_hyper(hyper_levels[1])
                else:
                    uncoded = lat.step_maps[level] >= FIRST_STEP[level]
                    fresh = hyper_levels[level] * uncoded.repeat(1, 2, 1, 1)
                carried = self.scale_fusion[level - 1](lat.refine(carried, level) + fresh)
            while step < FIRST_STEP[level] + STEPS_PER_SCALE[level]:
                params = self.adaptors[step - 1](torch.cat((carried, y_hat), dim=1))
                context = self.priors[level](params, self.gains[step - 1])
                carried = self.attention[level](context, carried)
                scales, means = context.chunk(2, 1)
                y_hat = y_hat + coder(level, scales, means, lat.step_mask(level, step))
                step += 1
        return y_hat
