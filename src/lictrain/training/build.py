"""Building a run's parts from a :class:`TrainConfig`: device, seeds, data loaders, model and strategy."""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from lictrain.checkpoint.weights import load_weights
from lictrain.config import TrainConfig
from lictrain.data import CenterCropDataset, LoaderSettings, load_test_crops, train_loader
from lictrain.data.shards import ShardLoader
from lictrain.data.stream import CropLoader
from lictrain.device import resolve_device  # noqa: F401 (re-exported: its old home)
from lictrain.errors import CheckpointError, ConfigError
from lictrain.losses import RateDistortionLoss
from lictrain.models import build_model, get_spec
from lictrain.models.gains import lambdas_in_state, make_variable_rate, rate_gains
from lictrain.training.distributed import DistInfo
from lictrain.training.optimizers import build_aux_optimizer, split_parameters
from lictrain.training.speed import apply_speed_levers
from lictrain.training.strategy import build_strategy
from lictrain.training.variable_rate import VariableRateStrategy

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_loaders(cfg: TrainConfig, device: torch.device,
                  dist: DistInfo | None = None) -> tuple[CropLoader | ShardLoader, DataLoader, str]:
    """Train stream (random crops, decoded on demand), test loader (centre crops decoded once)
    and a description of the data."""
    dist = dist or DistInfo()
    pin = device.type == "cuda"
    settings = LoaderSettings(cfg.patch_size, cfg.batch_size, cfg.crops_per_image, cfg.epoch_size, cfg.seed,
                              cfg.num_workers, pin)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    train = train_loader(cfg.dataset, settings, dist.rank, dist.world_size, local_world)
    test_set = CenterCropDataset(load_test_crops(cfg.dataset, cfg.test_patch_size), cfg.test_patch_size)
    test = DataLoader(test_set, batch_size=cfg.test_batch_size, shuffle=False, num_workers=0, pin_memory=pin)
    source = cfg.dataset or "built-in scikit-image photos"
    log.info("data: %s; %s; %d test crops", source, train.describe(), len(test_set))
    return train, test, source


def check_runnable(cfg: TrainConfig) -> None:
    """What ``fit`` would refuse about the model before training: an unknown ``--model``, a
    ``--quality`` it does not offer, crops that are not a multiple of its alignment.

    Raises:
        ConfigError: naming the flag and the fix.
    """
    spec = get_spec(cfg.model)
    if cfg.quality not in spec.qualities:
        raise ConfigError(f"--quality {cfg.quality} is not available for {cfg.model}; choose "
                          f"{spec.qualities[0]}..{spec.qualities[-1]}")
    check_alignment(cfg, spec.alignment)


def check_alignment(cfg: TrainConfig, alignment: int) -> None:
    """Crops must be a multiple of the model's total downsampling factor."""
    for flag, size in (("--patch-size", cfg.patch_size), ("--test-patch-size", cfg.test_patch_size)):
        if size % alignment:
            raise ConfigError(f"{flag} {size} is not a multiple of {alignment}, which {cfg.model} needs; "
                              f"use {max(alignment, size // alignment * alignment)}")


def same_rates(model: torch.nn.Module, lambdas: list[float]) -> bool:
    """Whether ``model`` already has gains for exactly ``lambdas`` (a variable-rate --pretrained)."""
    gains = rate_gains(model)
    return gains is not None and [round(v, 12) for v in gains.lambdas.tolist()] == [round(v, 12) for v in lambdas]


def load_pretrained_weights(model: torch.nn.Module, path: str, model_name: str | None = None) -> float | None:
    """Load weights only (fine-tuning) from a lictrain checkpoint, a CompressAI or official HPCM
    checkpoint, a state dict or safetensors.

    Returns the λ a fixed-rate lictrain checkpoint was trained at (``None`` when the file does
    not say, or holds a variable-rate model): QVRF's gains start relative to it.

    Raises:
        CheckpointError: missing/unsafe file or weights that do not fit the model.
    """
    weights = load_weights(path)
    trained_rates = lambdas_in_state(weights.state)
    if trained_rates is not None:  # a variable-rate checkpoint: its gains join the model first
        make_variable_rate(model, trained_rates)
    if model_name and weights.model and weights.model != model_name:
        raise CheckpointError(f"{weights.file} holds {weights.model} weights, not {model_name}; "
                              f"pass --model {weights.model} (or leave --model out with --pretrained)")
    try:
        model.load_state_dict(weights.state, strict=True)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"weights in {weights.file} do not fit this model ({first}); check --model and "
                              "--quality") from exc
    log.info("loaded pretrained weights from %s (%s)", weights.file, weights.origin)
    config = weights.checkpoint.get("config")  # none in files that are not lictrain's; untrusted in any
    lmbda = config.get("lmbda") if isinstance(config, dict) else None
    fixed = trained_rates is None and isinstance(lmbda, (int, float)) and not isinstance(lmbda, bool)
    return float(lmbda) if fixed and math.isfinite(lmbda) and lmbda > 0 else None


@dataclass
class TrainingParts:
    """The live objects a run trains: the bare model, what steps call, loss, strategy."""

    model: torch.nn.Module
    trained: torch.nn.Module  # FastForward/DDP wrappers around ``model`` when in use
    criterion: RateDistortionLoss
    aux_optimizer: torch.optim.Optimizer | None
    strategy: Any


def build_parts(cfg: TrainConfig, device: torch.device, dist: DistInfo, alignment: int) -> TrainingParts:
    """Model (with ``--pretrained`` weights and speed levers), loss, optimisers and strategy."""
    model = build_model(cfg.model, cfg.quality).to(device)
    trained_at = load_pretrained_weights(model, cfg.pretrained, cfg.model) if cfg.pretrained else None
    if cfg.lambdas is not None and not same_rates(model, cfg.lambdas):
        # from scratch, or QVRF's route from fixed-rate weights: the gain of the λ they were
        # trained at starts at 1, so that rate starts where the fixed model was
        make_variable_rate(model, cfg.lambdas, reference=trained_at)
        if trained_at is not None:
            log.info("variable rate from weights trained at λ=%g: gains start at √(λ/%g)", trained_at, trained_at)
    if cfg.lambdas is not None and cfg.rate_gains == "fixed":
        rate_gains(model).log_gains.requires_grad_(False)  # before the optimiser is built: it never sees them
    if dist.enabled:
        torch.manual_seed(cfg.seed + 7919 * dist.rank)  # each rank its own quantisation noise
    trained = apply_speed_levers(model, cfg, device)
    if dist.enabled:
        trained = DistributedDataParallel(trained, device_ids=[device.index] if device.type == "cuda" else None)
    criterion = RateDistortionLoss(cfg.lmbda if cfg.lambdas is None else cfg.lambdas[0], cfg.metric)
    net_params, aux_params = split_parameters(model)
    aux_optimizer = build_aux_optimizer(aux_params, cfg.aux_lr)
    strategy = build_strategy(cfg, trained, model, criterion, net_params, aux_optimizer, alignment, device, dist)
    if cfg.lambdas is not None:
        strategy = VariableRateStrategy(strategy, model, criterion, cfg.seed)
    return TrainingParts(model, trained, criterion, aux_optimizer, strategy)
