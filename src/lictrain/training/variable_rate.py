"""``--lambdas``: train one variable-rate model (QVRF gains, :mod:`lictrain.models.gains`).

Every training step draws one of the trained λ uniformly (QVRF's stage 2), sets the model's
gain and the loss's λ to it, then runs the wrapped strategy's step unchanged. The draw is a pure
function of ``(seed, step)``, so a resumed run draws what the uninterrupted one did. The test
pass codes the test crops at every trained λ: the epoch's ``loss`` is the mean of the per-λ R-D
losses (what ``--best-metric loss`` ranks: one checkpoint is best over the whole curve), and
``<metric>@<λ>`` keys keep each rate's values.

Balanced training draws λ the same way; the task weights are shared by all rates, which is why
``--balanced-update same-batch`` is required (FAMO's log-loss change is then measured on one
batch at one λ; next-batch would compare two batches at two λ).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from lictrain.losses import RateDistortionLoss
from lictrain.models.gains import RateGains, rate_gains, set_gain
from lictrain.training.loop import EpochStats, test_epoch
from lictrain.training.steps import StepOutcome

#: mixes the seed into the per-step draw (an odd constant: consecutive seeds give unrelated streams)
DRAW_STREAM = 0x9E3779B1


def rate_index(seed: int, step: int, count: int) -> int:
    """The λ index trained at global step ``step``: uniform, a pure function of ``(seed, step)``."""
    generator = torch.Generator().manual_seed((seed * DRAW_STREAM + step) % (2**63))
    return int(torch.randint(count, (1,), generator=generator))


def rate_key(metric: str, lmbda: float) -> str:
    """``psnr@0.0067``: a per-rate metric's name in metrics.jsonl and W&B."""
    return f"{metric}@{lmbda:g}"


class VariableRateStrategy:
    """A strategy (standard or balanced) trained at a λ drawn per step; everything else is the
    wrapped strategy's (its optimiser, schedules and state)."""

    def __init__(self, base: Any, model: torch.nn.Module, criterion: RateDistortionLoss, seed: int) -> None:
        gains = rate_gains(model)
        if gains is None:
            raise ValueError("the model has no rate gains: call make_variable_rate first")
        self.base, self.model, self.criterion, self.gains, self.seed = base, model, criterion, gains, seed
        self.steps = 0  # steps drawn so far (saved: a resumed run continues the same draws)

    def __getattr__(self, name: str) -> Any:  # optimizer, epoch_values, sync_tensor, ...: the wrapped strategy's
        return getattr(self.__dict__["base"], name)

    def use_rate(self, index: int) -> None:
        set_gain(self.model, self.gains.gain(index))
        self.criterion.lmbda = self.gains.lambda_of(index)

    def step(self, batch: torch.Tensor) -> StepOutcome:
        index = rate_index(self.seed, self.steps, self.gains.count)
        self.use_rate(index)
        self.steps += 1
        return self.base.step(batch)

    def state_dict(self) -> dict[str, Any]:
        return {**self.base.state_dict(), "variable_rate": {"steps": self.steps}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int((state.get("variable_rate") or {}).get("steps", 0))
        self.base.load_state_dict({k: v for k, v in state.items() if k != "variable_rate"})


def test_at_rates(model: torch.nn.Module, criterion: RateDistortionLoss, loader: Iterable[torch.Tensor],
                  device: torch.device, gains: RateGains) -> EpochStats:
    """The test pass at every trained λ: per-rate values as ``<metric>@<λ>``, and their means."""
    per_rate: list[dict[str, float]] = []
    values: dict[str, float] = {}
    for index in range(gains.count):
        lmbda = gains.lambda_of(index)
        set_gain(model, gains.gain(index).detach())
        criterion.lmbda = lmbda
        rate = test_epoch(model, criterion, loader, device).values
        per_rate.append(rate)
        values.update({rate_key(k, lmbda): v for k, v in rate.items()})
        values[rate_key("gain", lmbda)] = float(gains.gain(index).detach())
    for key in per_rate[0]:
        values[key] = sum(r[key] for r in per_rate) / len(per_rate)
    return EpochStats(values)
