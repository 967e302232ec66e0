"""Rate-distortion loss: known values, term separation, MS-SSIM variant."""

from __future__ import annotations

import math

import pytest
import torch

from lictrain.errors import ConfigError
from lictrain.losses import RateDistortionLoss, bits_per_pixel, ms_ssim_window, psnr_from_mse


def fake_output(x: torch.Tensor, delta: float, p_y: float, p_z: float) -> dict:
    return {
        "x_hat": x + delta,
        "likelihoods": {"y": torch.full((1, 4, 2, 2), p_y), "z": torch.full((1, 2, 1, 1), p_z)},
    }


def test_terms_match_hand_computation() -> None:
    x = torch.zeros(1, 3, 4, 4)
    out = fake_output(x, 0.1, 0.5, 0.25)
    terms = RateDistortionLoss(lmbda=0.01)(out, x)
    pixels = 16
    bpp_y = 16 * 1 / pixels  # 16 symbols of 1 bit
    bpp_z = 2 * 2 / pixels  # 2 symbols of 2 bits
    assert terms.rates["y"].item() == pytest.approx(bpp_y)
    assert terms.rates["z"].item() == pytest.approx(bpp_z)
    assert terms.bpp.item() == pytest.approx(bpp_y + bpp_z)
    assert terms.mse.item() == pytest.approx(0.01)
    assert terms.distortion.item() == pytest.approx(0.01 * 255**2 * 0.01)
    assert terms.loss.item() == pytest.approx(terms.distortion.item() + terms.bpp.item())
    assert terms.task_losses("rd").tolist() == pytest.approx([terms.distortion.item(), terms.bpp.item()])
    assert terms.task_losses("hierarchical").shape == (3,)


def test_finer_rate_likelihoods_are_used_when_reported() -> None:
    x = torch.zeros(1, 3, 4, 4)
    out = fake_output(x, 0.0, 0.5, 0.5)
    out["rate_likelihoods"] = {"z": out["likelihoods"]["z"], "s1": torch.full((1, 4, 1, 2), 0.5), "s2": torch.full((1, 4, 1, 2), 0.5)}
    terms = RateDistortionLoss(0.01)(out, x)
    assert list(terms.rates) == ["z", "s1", "s2"]
    assert terms.task_losses("hierarchical").shape == (4,)


def test_ms_ssim_metric_uses_one_minus_ms_ssim() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    out = fake_output(x, 0.0, 0.5, 0.5)
    terms = RateDistortionLoss(lmbda=5.0, metric="ms-ssim")(out, x)
    assert terms.distortion.item() == pytest.approx(0.0, abs=1e-5)  # identical images: MS-SSIM 1


def test_bits_per_pixel_of_uniform_likelihood() -> None:
    assert bits_per_pixel(torch.full((10,), 0.125), 10).item() == pytest.approx(3.0)


def test_validation() -> None:
    with pytest.raises(ConfigError, match="lambda must be positive"):
        RateDistortionLoss(lmbda=-1)
    with pytest.raises(ConfigError, match="unknown metric"):
        RateDistortionLoss(metric="psnr")


def test_helpers() -> None:
    assert psnr_from_mse(1e-4) == pytest.approx(40.0)
    assert math.isinf(psnr_from_mse(0.0))
    assert ms_ssim_window(256, 256) == 11 and ms_ssim_window(128, 128) == 7 and ms_ssim_window(16, 16) is None
