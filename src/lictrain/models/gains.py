"""Quantisation gains: one model for many rates (QVRF, Tong et al., arXiv 2303.05744).

A variable-rate model keeps one scalar gain ``g_k`` per trained λ_k. The mean-removed latent is
scaled before rounding and scaled back after it,

    ŷ = round((y − μ)·g)/g + μ,

and the entropy model codes the integer ``round((y − μ)·g)`` with its scale multiplied by ``g``:
a larger gain is a finer quantiser, more bits and less distortion. Everything that reads ŷ (the
synthesis, and a context model such as HPCM's) reads the de-gained value, so one network serves
every rate. Gains start at ``√(λ_k / λ_min)`` (QVRF's initialisation) and are learned with the
network; between two trained λ the log-gain is interpolated linearly in log λ (Cui et al., CVPR
2021, interpolate adjacent gain vectors geometrically), which gives continuous rates.
"""

from __future__ import annotations

import math
import types
from typing import Sequence

import torch
from torch import nn

from lictrain.errors import ConfigError

#: the smallest gain a rate may use (a gain is a quantiser step's inverse: it must stay positive)
MIN_GAIN = 1e-3


def check_lambdas(lambdas: Sequence[float]) -> list[float]:
    """``lambdas`` sorted, as floats: two or more distinct positive values.

    Raises:
        ConfigError: fewer than two, repeated, or not positive finite numbers.
    """
    values = [float(v) for v in lambdas]
    if len(values) < 2:
        raise ConfigError(f"--lambdas needs two or more values for one variable-rate model, got {values} "
                          "(one λ: --lambda)")
    if any(not (math.isfinite(v) and v > 0) for v in values):
        raise ConfigError(f"--lambdas must be positive numbers, got {values}")
    if len(set(values)) != len(values):
        raise ConfigError(f"--lambdas must be distinct, got {values}")
    return sorted(values)


def gain_margin(lambdas: Sequence[float]) -> float:
    """The largest gain a model trained on ``lambdas`` is expected to reach: twice QVRF's initial
    ``√(λ_max/λ_min)`` (gains are learned and drift)."""
    values = check_lambdas(lambdas)
    return 2.0 * math.sqrt(values[-1] / values[0])


class RateGains(nn.Module):
    """The learned gain of each trained λ, and the gain of any λ between them.

    ``log_gains[k]`` is the log of λ_k's gain (log space keeps gains positive); ``lambdas`` is
    a buffer, so a checkpoint carries the λ each gain belongs to.
    """

    def __init__(self, lambdas: Sequence[float]) -> None:
        super().__init__()
        values = check_lambdas(lambdas)
        self.register_buffer("lambdas", torch.tensor(values, dtype=torch.float64))
        self.log_gains = nn.Parameter(torch.zeros(len(values)))
        self.start_at(values[0])

    def start_at(self, reference: float) -> None:
        """Gains ``√(λ_k/reference)`` (QVRF's initialisation): the rate trained at ``reference``
        has gain 1."""
        if not (math.isfinite(reference) and reference > 0):
            raise ConfigError(f"the reference λ of the gains must be a positive number, got {reference!r}")
        with torch.no_grad():
            self.log_gains.copy_(0.5 * torch.log(self.lambdas / reference).to(self.log_gains))

    @property
    def count(self) -> int:
        return int(self.lambdas.numel())

    @property
    def range(self) -> tuple[float, float]:
        return float(self.lambdas[0]), float(self.lambdas[-1])

    def gain(self, index: torch.Tensor | int) -> torch.Tensor:
        """The gain of trained λ number ``index`` (a tensor of indexes gives one gain each)."""
        return self.log_gains[index].exp().clamp_min(MIN_GAIN)

    def gain_at(self, lmbda: float) -> torch.Tensor:
        """The gain for ``lmbda`` inside the trained range: log-gain linear in log λ.

        Raises:
            ConfigError: ``lmbda`` outside the trained range.
        """
        low, high = self.range
        if not (math.isfinite(lmbda) and low * (1 - 1e-9) <= lmbda <= high * (1 + 1e-9)):
            raise ConfigError(f"λ={lmbda:g} is outside this model's trained range {low:g}..{high:g}; pick a λ in it "
                              "(or --target-bpp)")
        logs = torch.log(self.lambdas.to(torch.float64))
        x = math.log(min(max(lmbda, low), high))
        k = int(torch.searchsorted(logs, torch.tensor(x, dtype=torch.float64)).clamp(1, self.count - 1))
        t = (x - float(logs[k - 1])) / (float(logs[k]) - float(logs[k - 1]))
        log_gain = (1 - t) * self.log_gains[k - 1] + t * self.log_gains[k]
        return log_gain.exp().clamp_min(MIN_GAIN)

    def lambda_of(self, index: int) -> float:
        return float(self.lambdas[index])

    def extra_repr(self) -> str:
        low, high = self.range
        return f"{self.count} rates, λ {low:g}..{high:g}"


# -- making a model variable-rate, and choosing its rate -------------------------------------------
#: why a model family cannot take gains (class name -> the one-line reason)
REFUSED = {
    "FactorizedPrior": "bmshj2018-factorized codes y with one learned density per channel (no hyperprior scale "
                       "to multiply by a gain), so a gain would need that density to fit every rate at once; "
                       "use bmshj2018-hyperprior or mbt2018-mean",
}


def make_variable_rate(model: nn.Module, lambdas: Sequence[float], reference: float | None = None) -> nn.Module:
    """Give ``model`` one learned gain per λ (in place; returns it).

    Gains start at QVRF's ``√(λ_k/λ_ref)``: ``λ_ref`` is ``reference``, the λ a fixed-rate model
    was trained at (its own rate starts exactly where it was), else the smallest λ.

    HPCM models carry their own :meth:`make_variable_rate` (the context reads the de-gained ŷ);
    CompressAI's hyperpriors (scale, mean-scale) and autoregressive models (mbt2018, cheng2020)
    get a gained Gaussian conditional, the latter also an encoder loop whose context reads the
    de-gained ŷ as their decoder does.

    Raises:
        ConfigError: a model family that cannot take gains (the message says why and what works).
    """
    name = type(model).__name__
    if hasattr(model, "make_variable_rate"):
        model.make_variable_rate(list(lambdas))
        return _start_at(model, reference)
    if name in REFUSED:
        raise ConfigError(f"variable rate (--lambdas): {REFUSED[name]}")
    conditional = getattr(model, "gaussian_conditional", None)
    if conditional is None:
        raise ConfigError(f"variable rate (--lambdas) is not built for {name}; use an hpcm model, "
                          "bmshj2018-hyperprior, mbt2018-mean, mbt2018 or cheng2020-*")
    from lictrain.models.gained_conditional import GainedGaussianConditional, gained_compress_ar

    model.gaussian_conditional = GainedGaussianConditional.wrap(conditional, gain_margin(lambdas))
    if hasattr(model, "_compress_ar"):  # CompressAI's loop writes y_q + μ back: right at gain 1 only
        model._compress_ar = types.MethodType(gained_compress_ar, model)
    model.rate_gains = RateGains(lambdas).to(next(model.parameters()).device)
    return _start_at(model, reference)


def _start_at(model: nn.Module, reference: float | None) -> nn.Module:
    """``model`` with its gains started at ``reference`` (:meth:`RateGains.start_at`; ``None``: as built)."""
    gains = rate_gains(model)
    if reference is not None and gains is not None:
        gains.start_at(reference)
    return model


def rate_gains(model: nn.Module) -> RateGains | None:
    """The model's gains (``None``: a fixed-rate model)."""
    gains = getattr(model, "rate_gains", None)
    return gains if isinstance(gains, RateGains) else None


def set_gain(model: nn.Module, gain: torch.Tensor | None) -> None:
    """Code at ``gain`` from now on (a scalar, or one per image as ``(B, 1, 1, 1)``; ``None``: 1)."""
    model.gain = gain
    conditional = getattr(model, "gaussian_conditional", None)
    if conditional is not None and hasattr(conditional, "gain"):
        conditional.gain = gain


def lambdas_in_state(state: dict) -> list[float] | None:
    """The trained λ of a variable-rate state dict (``rate_gains.lambdas``), else ``None``."""
    for key, value in state.items():
        if key.endswith("rate_gains.lambdas") and isinstance(value, torch.Tensor):
            return [float(v) for v in value.flatten()]
    return None
