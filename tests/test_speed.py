"""Speed levers: bf16 autocast with float32 entropy models, channels_last, compile."""

from __future__ import annotations

import pytest
import torch
from compressai.entropy_models import EntropyModel

from lictrain.config import TrainConfig
from lictrain.errors import ConfigError
from lictrain.losses import RateDistortionLoss
from lictrain.models import build_model
from lictrain.training.speed import FastForward, apply_speed_levers, float32_module_types

CPU = torch.device("cpu")


def _batch(seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _record_entropy_inputs(model: torch.nn.Module) -> list[tuple[bool, list[torch.dtype]]]:
    """(autocast on?, input dtypes) seen inside every entropy model call."""
    seen: list[tuple[bool, list[torch.dtype]]] = []

    def hook(mod, args, kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        seen.append((torch.is_autocast_enabled("cpu"), [t.dtype for t in tensors]))

    for module in model.modules():
        if isinstance(module, float32_module_types()):
            module.register_forward_pre_hook(hook, with_kwargs=True)  # runs after keep_float32's own hook
    return seen


@pytest.mark.parametrize("name", ["bmshj2018-hyperprior", "hpcm-tiny"])
def test_bf16_runs_transforms_in_bf16_and_entropy_models_in_float32(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 1)
    trained = apply_speed_levers(model, TrainConfig(precision="bf16"), CPU)
    assert isinstance(trained, FastForward)
    transform_dtypes = []
    model.g_a.register_forward_hook(lambda m, a, out: transform_dtypes.append(out.dtype))
    seen = _record_entropy_inputs(model)
    x = _batch()
    out = trained(x)
    assert transform_dtypes == [torch.bfloat16]
    assert seen and all(not autocast and all(d == torch.float32 for d in dtypes) for autocast, dtypes in seen)
    assert out["x_hat"].dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out["likelihoods"].values())
    assert not torch.is_autocast_enabled("cpu")  # the hooks put autocast back as it was


def test_bf16_loss_is_close_to_float32_and_gradients_reach_every_transform() -> None:
    torch.manual_seed(0)
    model = build_model("bmshj2018-hyperprior", 1).eval()  # eval: rounding, no random noise
    x = _batch(1)
    criterion = RateDistortionLoss(0.0067)
    reference = criterion(model(x), x)
    trained = apply_speed_levers(model, TrainConfig(precision="bf16"), CPU)
    terms = criterion(trained(x), x)
    assert float(terms.bpp.detach()) == pytest.approx(float(reference.bpp.detach()), rel=0.05)
    assert float(terms.mse.detach()) == pytest.approx(float(reference.mse.detach()), rel=0.05)
    terms.loss.backward()
    assert model.g_a[0].weight.grad is not None and model.g_a[0].weight.grad.dtype == torch.float32
    assert torch.isfinite(model.g_s[0].weight.grad).all()


def test_channels_last_matches_the_default_layout() -> None:
    torch.manual_seed(0)
    model = build_model("bmshj2018-factorized", 1).eval()
    x = _batch(2)
    reference = model(x)["x_hat"]
    trained = apply_speed_levers(model, TrainConfig(channels_last=True), CPU)
    assert model.g_a[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(trained(x)["x_hat"], reference, rtol=1e-4, atol=1e-5)


def test_channels_last_works_for_hpcm_with_its_5d_tensor() -> None:
    torch.manual_seed(0)
    model = build_model("hpcm-tiny", 1).eval()
    assert any(p.dim() == 5 for p in model.parameters()) or any(b.dim() == 5 for b in model.buffers())
    x = _batch(3)
    reference = model(x)["x_hat"]
    trained = apply_speed_levers(model, TrainConfig(channels_last=True), CPU)
    torch.testing.assert_close(trained(x)["x_hat"], reference, rtol=1e-4, atol=1e-4)


def test_no_lever_returns_the_model_itself() -> None:
    model = build_model("bmshj2018-factorized", 1)
    assert apply_speed_levers(model, TrainConfig(), CPU) is model


def test_compile_needs_transforms_and_bad_precision_is_refused() -> None:
    with pytest.raises(ConfigError, match="--compile compiles"):
        apply_speed_levers(torch.nn.Conv2d(3, 3, 3), TrainConfig(compile=True), CPU)
    with pytest.raises(ConfigError, match="--precision must be one of fp32, bf16"):
        TrainConfig(precision="fp16").validate()


def test_entropy_model_types_cover_compressai_and_hpcm() -> None:
    types = float32_module_types()
    assert EntropyModel in types
    hpcm = build_model("hpcm-tiny", 1)
    assert any(isinstance(m, types) and not isinstance(m, EntropyModel) for m in hpcm.modules())
