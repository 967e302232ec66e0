"""The training loop, top to bottom: ``fit`` -> per epoch ``train_one_epoch`` + ``test_epoch``."""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lictrain.losses import RateDistortionLoss, ms_ssim_value, psnr_from_mse
from lictrain.training.steps import StepOutcome

log = logging.getLogger(__name__)


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on ``device`` as float in [0, 1]: uint8 crops travel as bytes and become float there."""
    batch = batch.to(device, non_blocking=True)
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch


@dataclass
class EpochStats:
    """Means over an epoch's batches (train: applied steps only)."""

    values: dict[str, float]
    skipped: int = 0
    data_wait: float = 0.0  # seconds the loop waited for the loader (train)
    batches: int = 0  # batches trained (train; fewer than the epoch's when it was cut)


@dataclass
class EpochTally:
    """Running sums of an epoch's training steps; saved with a mid-epoch checkpoint, so that the
    epoch's train means after a resume are those of the uninterrupted epoch."""

    sums: dict[str, float] = field(default_factory=dict)
    applied: int = 0
    skipped: int = 0
    batches: int = 0

    def add(self, outcome: StepOutcome) -> None:
        self.batches += 1
        if not outcome.applied:
            self.skipped += 1
            return
        self.applied += 1
        for key, value in outcome.values().items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def stats(self, data_wait: float, batches: int) -> EpochStats:
        means = {k: v / self.applied for k, v in self.sums.items()} if self.applied else {}
        return EpochStats(means, self.skipped, data_wait, batches)

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "applied": self.applied, "skipped": self.skipped, "batches": self.batches}

    @classmethod
    def from_state(cls, state: Any) -> "EpochTally":
        if not isinstance(state, dict):
            return cls()
        return cls({str(k): float(v) for k, v in (state.get("sums") or {}).items()}, int(state.get("applied", 0)),
                   int(state.get("skipped", 0)), int(state.get("batches", 0)))


def train_one_epoch(
    step: Callable[[torch.Tensor], StepOutcome],
    model: torch.nn.Module,
    loader: Iterable[torch.Tensor],
    device: torch.device,
    epoch: int,
    total_batches: int,
    show_progress: bool | None = None,
    after_step: Callable[[StepOutcome], bool] | None = None,
    tally: EpochTally | None = None,
) -> EpochStats:
    """One pass over ``loader``: one ``step`` per batch, with a tqdm bar (loss, bpp, PSNR).

    ``after_step(outcome)`` runs after every batch, applied or skipped (a per-batch LR schedule,
    step logging); when it returns True the epoch ends there (a budget's deadline). ``tally``
    carries the sums of the epoch's batches before this call (a resumed epoch).
    """
    model.train()
    tally = tally if tally is not None else EpochTally()
    skipped_before = tally.skipped
    waited = [0.0]
    bar = tqdm(_timed(loader, waited), total=total_batches, desc=f"epoch {epoch}", leave=False, disable=None if show_progress is None else not show_progress, dynamic_ncols=True)
    batches = 0
    for batch in bar:
        outcome = step(to_device(batch, device))
        batches += 1
        tally.add(outcome)  # before after_step: a stop there saves the tally with this step in it
        cut = after_step(outcome) if after_step is not None else False
        if outcome.applied:
            bar.set_postfix(loss=f"{outcome.loss:.4f}", bpp=f"{outcome.bpp:.3f}", psnr=f"{psnr_from_mse(outcome.mse):.2f}",
                            refresh=False)
        if cut:
            break
    bar.close()  # a cut epoch leaves the loader (and its workers) here; the bar must not linger
    if tally.skipped > skipped_before:
        log.warning("epoch %d: skipped %d batch(es) with a non-finite loss or gradient", epoch,
                    tally.skipped - skipped_before)
    return tally.stats(waited[0], batches)


def _timed(loader: Iterable[torch.Tensor], waited: list[float]) -> Iterator[torch.Tensor]:
    """``loader``'s batches, adding the seconds spent waiting for each to ``waited[0]``."""
    iterator = iter(loader)
    while True:
        started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        waited[0] += time.perf_counter() - started
        yield batch


@torch.no_grad()
def test_epoch(model: torch.nn.Module, criterion: RateDistortionLoss, loader: Iterable[torch.Tensor],
               device: torch.device) -> EpochStats:
    """Loss, estimated bpp, MSE, PSNR and MS-SSIM on the test split (eval mode), image-weighted."""
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for batch in loader:
        batch = to_device(batch, device)
        out = model(batch)
        terms = criterion(out, batch)
        n = batch.shape[0]
        x_hat = out["x_hat"].clamp(0, 1)
        per_image_mse = F.mse_loss(x_hat, batch, reduction="none").flatten(1).mean(1)
        sums["loss"] += float(terms.loss) * n
        sums["bpp"] += float(terms.bpp) * n
        sums["mse"] += float(per_image_mse.sum())
        sums["psnr"] += sum(psnr_from_mse(float(m)) for m in per_image_mse)
        sums["ms_ssim"] += float(ms_ssim_value(x_hat, batch)) * n
        count += n
    return EpochStats({k: v / count for k, v in sums.items()})


def format_summary(epoch: int, epochs: int, train: EpochStats, test: EpochStats, lr: float, seconds: float,
                   extra: dict[str, float] | None = None) -> str:
    """The one-line per-epoch summary printed after each epoch."""
    t, v = train.values, test.values
    parts = [
        f"epoch {epoch}/{epochs - 1}",  # 0-based, as the checkpoint files and run.json
        f"train loss {t.get('loss', math.nan):.4f} bpp {t.get('bpp', math.nan):.3f} psnr {t.get('psnr', math.nan):.2f}",
        f"| test loss {v['loss']:.4f} bpp {v['bpp']:.3f} psnr {v['psnr']:.2f} ms-ssim {v['ms_ssim']:.4f}",
        f"| lr {lr:.2e}",
    ]
    for key, value in (extra or {}).items():
        parts.append(f"{key} {value:.4g}")
    if train.skipped:
        parts.append(f"skipped {train.skipped}")
    parts.append(f"| {seconds:.1f}s")
    return " ".join(parts)
