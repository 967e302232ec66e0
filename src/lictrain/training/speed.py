"""Speed levers of a training step: bf16 autocast, channels_last, ``torch.compile``.

- ``--precision bf16`` runs the training forward under ``torch.autocast(bfloat16)`` — convolutions
  and attention of the transforms in bf16 — while every entropy model (CompressAI's
  ``EntropyModel`` and HPCM's generalized-Gaussian ones) runs in float32 on float32 inputs:
  likelihoods of a few 1e-9 and their logs are far below bf16's resolution. Weights, the
  optimiser and the test pass stay float32, so checkpoints do not change.
- ``--channels-last`` stores weights and batches NHWC (faster convolutions on many GPUs/CPUs).
- ``--compile`` compiles the analysis and synthesis transforms (``g_a``, ``g_s``) in place.
  The hyper-transforms and context models that predict entropy parameters are left eager:
  the decoder must reproduce those parameters bit for bit, and eager kernels are what the
  codec's ``compress``/``decompress`` run.

``bench/time_to_quality.py`` measures what each buys on this machine.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from compressai.entropy_models import EntropyModel

from lictrain.config import TrainConfig
from lictrain.errors import ConfigError
from lictrain.models.hpcm.entropy import GeneralizedGaussianConditional, GeneralizedGaussianPrior

log = logging.getLogger(__name__)

#: transforms compiled by ``--compile`` when a model has them
COMPILED_TRANSFORMS = ("g_a", "g_s")


def float32_module_types() -> tuple[type, ...]:
    """Module types that must run in float32 under autocast (every entropy model)."""
    return (EntropyModel, GeneralizedGaussianConditional, GeneralizedGaussianPrior)


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
        return value.float()
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    return value


def keep_float32(module: torch.nn.Module, device_type: str) -> None:
    """Run ``module`` with autocast off and float32 inputs, even inside an autocast region."""
    saved: list[bool] = []

    def before(mod: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        saved.append(torch.is_autocast_enabled(device_type))
        torch.set_autocast_enabled(device_type, False)
        return _to_float32(args), _to_float32(kwargs)

    def after(mod: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        torch.set_autocast_enabled(device_type, saved.pop())

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after, with_kwargs=True, always_call=True)


def to_channels_last(model: torch.nn.Module) -> None:
    """Store every 4-D parameter and buffer NHWC, in place.

    ``model.to(memory_format=torch.channels_last)`` refuses models holding a 5-D tensor
    (HPCM has one); other ranks have no NHWC layout and are left as they are.
    """
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)


class FastForward(torch.nn.Module):
    """Wraps a codec for training steps: NHWC batches and bf16 autocast as configured.

    Holds the model as ``module`` (like DDP does); outputs come back as float32, so the loss
    is computed in float32 whatever the forward ran in.
    """

    def __init__(self, model: torch.nn.Module, device_type: str, bf16: bool, channels_last: bool) -> None:
        super().__init__()
        self.module = model
        self.device_type = device_type
        self.bf16 = bf16
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.module(x, *args, **kwargs)
        return _to_float32(out)


def apply_speed_levers(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """Prepare ``model`` in place per ``cfg``; return what training steps should call.

    Returns ``model`` itself when no lever is on, else a :class:`FastForward` around it.
    """
    bf16 = cfg.precision == "bf16"
    if bf16:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("--precision bf16 needs a GPU with bfloat16 support; use --precision fp32")
        for module in model.modules():
            if isinstance(module, float32_module_types()):
                keep_float32(module, device.type)
    if cfg.channels_last:
        to_channels_last(model)
    if cfg.compile:
        compiled = [name for name in COMPILED_TRANSFORMS if isinstance(getattr(model, name, None), torch.nn.Module)]
        if not compiled:
            raise ConfigError(f"--compile compiles a model's g_a/g_s transforms; {type(model).__name__} has none")
        for name in compiled:
            getattr(model, name).compile()
        log.info("compiling %s (the first steps are slow while it compiles)", ", ".join(compiled))
    if not (bf16 or cfg.channels_last):
        return model
    return FastForward(model, device.type, bf16, cfg.channels_last)
