"""HPCM (Li et al., ICCV 2025): registry, sizes, schedule, forward, entropy model, bitstreams.

Behaviour is tested on ``hpcm-tiny``; Base and Large are only built on the meta device to
count parameters (no memory, no init time).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lictrain.losses import RateDistortionLoss
from lictrain.models import build_model, get_spec
from lictrain.models.hpcm import BASE, HPCM, LARGE, TINY
from lictrain.models.hpcm.context import FIRST_STEP, NUM_STEPS, Lattice, schedule_tile
from lictrain.models.hpcm.entropy import GeneralizedGaussianConditional, gg_likelihood
from lictrain.models.hpcm.layers import WindowCrossAttention

NAMES = ("hpcm-base", "hpcm-large", "hpcm-tiny")


def _params(cfg) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in HPCM(cfg).parameters())


def _photo(height: int = 128, width: int = 192) -> torch.Tensor:
    """A crop of a real photograph (scikit-image's bundled 'chelsea'), (1, 3, H, W) in [0, 1]."""
    import skimage.data

    img = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).float() / 255
    return img[None, :, 40 : 40 + height, 100 : 100 + width].contiguous()


def test_registered_with_any_input_size() -> None:
    for name in NAMES:
        spec = get_spec(name)
        assert spec.alignment == 1 and spec.qualities == (1,)
        assert "HPCM" in spec.description


@pytest.mark.parametrize(("cfg", "published"), [(BASE, 68.50e6), (LARGE, 89.71e6)])
def test_parameter_counts_match_the_paper(cfg, published: float) -> None:
    assert abs(_params(cfg) / published - 1) < 0.02


def test_tiny_is_small_and_keeps_the_structure() -> None:
    assert _params(TINY) < 5e6
    model = HPCM(TINY)
    assert len(model.context.adaptors) == NUM_STEPS - 1 == 10
    assert [a.window for a in model.context.attention] == [4, 8, 8]


def test_schedule_codes_every_latent_once_in_11_steps() -> None:
    lat = Lattice(16, 16, 24, torch.device("cpu"))
    steps = lat.step_maps[2][0]  # (M, H, W) global step of each latent
    counts = torch.bincount(steps.flatten(), minlength=NUM_STEPS).tolist()
    total = steps.numel()
    # s1: 2 steps of 1/32 each; s2: 3 of 1/16; s3: 6 of 1/8.
    assert counts == [total // 32] * 2 + [total // 16] * 3 + [total // 8] * 6
    for g in range(8):
        tile = torch.tensor(schedule_tile(g))
        s2 = (tile < FIRST_STEP[2]).nonzero()
        s1 = (tile < FIRST_STEP[1]).nonzero()
        # s2 is one 2x2 lattice phase of the full grid, s1 one 4x4 lattice phase.
        assert len({(int(r) % 2, int(c) % 2) for r, c in s2}) == 1 and len(s2) == 16
        assert len({(int(r) % 4, int(c) % 4) for r, c in s1}) == 1 and len(s1) == 4
    # Scale grids hold exactly the latents coded at or before that scale.
    assert int(lat.step_maps[0].max()) == 1 and lat.step_maps[0].shape[-2:] == (4, 6)
    assert int(lat.step_maps[1].max()) == 4 and lat.step_maps[1].shape[-2:] == (8, 12)


def test_context_is_causal() -> None:
    """Changing latents coded at step k leaves the parameters of steps <= k untouched."""
    torch.manual_seed(0)
    model = HPCM(TINY).eval()
    ctx = model.context
    hyper = torch.randn(1, 2 * TINY.latent, 8, 12)
    lat = ctx.lattice(8, 12, hyper.device)
    k = 6
    y1 = torch.randn(1, TINY.latent, 8, 12) * 3
    y2 = torch.where(lat.step_maps[2] >= k, y1 + 5, y1)

    def record(y: torch.Tensor) -> list[torch.Tensor]:
        seen, levels = [], lat.pyramid(y)

        def coder(level, scales, means, mask):
            seen.append(torch.cat((scales, means), 1))
            return (torch.round(levels[level] - means) + means) * mask

        with torch.no_grad():
            ctx.run(hyper, coder)
        return seen

    a, b = record(y1), record(y2)
    assert len(a) == NUM_STEPS
    for step in range(NUM_STEPS):
        assert torch.equal(a[step], b[step]) == (step <= k), step


@pytest.mark.parametrize("size", [(67, 93), (64, 64)])
def test_forward_shapes_and_rates_at_any_size(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model("hpcm-tiny", 1)
    x = torch.rand(2, 3, *size)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert set(out["likelihoods"]) == {"y", "z"}
    rates = out["rate_likelihoods"]
    assert list(rates) == ["z", "s1", "s2", "s3"]
    n1, n2, n3 = (rates[k].shape[1] for k in ("s1", "s2", "s3"))
    assert n1 * 3 == n2 and n1 * 12 == n3  # 1/16, 3/16, 12/16 of the latents
    bits = lambda d: sum(torch.log2(v).sum() for v in d.values())  # noqa: E731
    assert torch.allclose(bits(rates), bits(out["likelihoods"]), rtol=1e-5)
    terms = RateDistortionLoss(0.01)(out, x)
    assert set(terms.rates) == {"z", "s1", "s2", "s3"}
    assert torch.allclose(sum(terms.rates.values()), terms.bpp)


def test_training_uses_ste_and_noise_eval_is_deterministic() -> None:
    torch.manual_seed(0)
    model = build_model("hpcm-tiny", 1)
    x = torch.rand(1, 3, 64, 64)
    out = model(x)
    lik = out["likelihoods"]["y"]
    assert lik.min() >= 1e-9 and lik.max() <= 1
    (out["x_hat"].square().mean() + torch.log(lik).mean()).backward()
    first = model.g_a[0].weight.grad
    assert first is not None and first.abs().sum() > 0  # gradient reaches g_a through ŷ (STE)
    assert not torch.equal(model(x)["likelihoods"]["y"], model(x)["likelihoods"]["y"])  # noise
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)["x_hat"], model(x)["x_hat"])


def test_gg_likelihood_is_the_generalised_gaussian_bin_mass() -> None:
    from scipy.stats import gennorm

    scales = torch.tensor([0.12, 0.7, 3.0, 25.0], dtype=torch.float64)
    values = torch.arange(-40, 41, dtype=torch.float64)
    lik = gg_likelihood(values[:, None], scales[None, :])
    ref = gennorm.cdf(values[:, None] + 0.5, 1.5, scale=scales) - gennorm.cdf(values[:, None] - 0.5, 1.5, scale=scales)
    assert np.allclose(lik.numpy(), ref, atol=1e-12)
    assert torch.allclose(lik[:, :3].sum(0), torch.ones(3, dtype=torch.float64))


def test_rans_tables_cost_what_the_likelihood_says() -> None:
    """GG samples with random scales: rANS bytes within 2% of -sum(log2 likelihood)."""
    from compressai.ans import RansDecoder, RansEncoder
    from scipy.stats import gennorm

    gen = np.random.default_rng(0)
    scales = torch.from_numpy(np.exp(gen.uniform(math.log(0.3), math.log(30), 20000))).float()
    values = torch.from_numpy(np.round(gennorm.rvs(1.5, scale=scales.numpy(), random_state=gen))).float()
    gg = GeneralizedGaussianConditional()
    assert gg.update() and not gg.update()
    est = float(-torch.log2(gg.likelihood(values, scales)).sum())
    indexes = gg.build_indexes(scales).tolist()
    cdfs, lengths, offsets = gg.tables()
    data = RansEncoder().encode_with_indexes(values.int().tolist(), indexes, cdfs, lengths, offsets)
    assert abs(len(data) * 8 / est - 1) < 0.02
    assert RansDecoder().decode_with_indexes(data, indexes, cdfs, lengths, offsets) == values.int().tolist()


def test_window_attention_masks_padding() -> None:
    """A map smaller than one window equals plain (unwindowed) attention over all positions."""
    torch.manual_seed(0)
    attn = WindowCrossAttention(16, window=8, heads=4)
    x, mem = torch.randn(2, 16, 3, 5), torch.randn(2, 16, 3, 5)
    q, k, v = (t.flatten(2).view(2, 4, 4, 15).transpose(-1, -2) for t in (attn.q(x), *attn.kv(mem).chunk(2, 1)))
    ref = torch.softmax(q @ k.transpose(-1, -2) / 2, -1) @ v  # head dim 4: scale 1/2
    ref = ref.transpose(-1, -2).reshape(2, 16, 3, 5) + attn.skip(x)
    assert torch.allclose(attn(x, mem), ref, atol=1e-5)


def test_compress_needs_update() -> None:
    model = build_model("hpcm-tiny", 1).eval()
    with pytest.raises(RuntimeError, match="update"):
        model.compress(torch.rand(1, 3, 64, 64))
    assert model.update(force=True) and not model.update()


def test_round_trip_equals_forward_at_odd_size() -> None:
    torch.manual_seed(0)
    model = build_model("hpcm-tiny", 1).eval()
    with torch.no_grad():  # make y carry some signal, so symbols are not all zero
        model.g_a[-1].weight.mul_(20)
    model.update(force=True)
    x = torch.rand(2, 3, 67, 93)
    enc = model.compress(x)
    assert [len(s) for s in enc["strings"]] == [2, 2] and enc["shape"] == (67, 93)
    dec = model.decompress(enc["strings"], enc["shape"])
    with torch.no_grad():
        ref = model(x)["x_hat"].clamp(0, 1)
    assert dec["x_hat"].shape == x.shape
    assert torch.allclose(dec["x_hat"], ref, atol=1e-6)


def test_few_steps_reduce_loss_and_real_bits_match_estimate() -> None:
    """Train hpcm-tiny a few steps on a photo; then bytes from rANS ≈ estimated bits (±2%)."""
    torch.manual_seed(0)
    x = _photo()
    model = build_model("hpcm-tiny", 1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    criterion = RateDistortionLoss(0.05)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        terms = criterion(model(x), x)
        terms.loss.backward()
        opt.step()
        losses.append(float(terms.loss.detach()))
    assert losses[-1] < 0.5 * losses[0]

    model.eval()
    model.update(force=True)
    with torch.no_grad():
        out = model(x)
    pixels = x.shape[-2] * x.shape[-1]
    est = float(sum(-torch.log2(v).sum() for v in out["likelihoods"].values())) / pixels
    enc = model.compress(x)
    real = sum(len(s[0]) for s in enc["strings"]) * 8 / pixels
    assert est > 0.1  # a meaningful rate, not a stream of zeros
    assert abs(real / est - 1) < 0.02
    dec = model.decompress(enc["strings"], enc["shape"])
    assert torch.allclose(dec["x_hat"], out["x_hat"].clamp(0, 1), atol=1e-6)
