"""Which epoch is best, and when to stop: ``--best-metric``, ``--best-mode``, ``--early-stop``.

The best metric ranks the kept "best" checkpoints (``CheckpointManager``) and drives early
stopping. ``loss`` (the default, as before) is the R-D loss the run optimises; ``psnr``,
``bpp`` and ``ms-ssim`` are the test split's; ``rd`` is the test PSNR (MS-SSIM in dB for an
MS-SSIM run) minus JPEG's at the same bpp on the same test crops, interpolated in log-bpp: a
λ-free measure of how good the codec is, where ``psnr`` alone rewards spending more bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lictrain.config import BEST_METRICS
from lictrain.evaluation.anchors import evaluate_anchor
from lictrain.evaluation.metrics import ms_ssim_db

#: JPEG qualities of the ``rd`` reference curve (bpp from ~0.15 to ~4 on photos)
REFERENCE_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)


@dataclass(frozen=True)
class BestMetric:
    """``--best-metric`` resolved: the metrics key it reads and its direction."""

    name: str
    key: str
    higher_is_better: bool

    @classmethod
    def from_config(cls, name: str, mode: str = "auto") -> "BestMetric":
        key, higher = BEST_METRICS[name]
        if mode != "auto":
            higher = mode == "max"
        return cls(name, key, higher)

    def value(self, metrics: dict[str, Any]) -> float:
        """This epoch's value (NaN when missing or not a number: never best)."""
        value = metrics.get(self.key)
        return float(value) if isinstance(value, (int, float)) else math.nan

    def better(self, value: float, than: float, min_delta: float = 0.0) -> bool:
        """Whether ``value`` improves on ``than`` by more than ``min_delta``."""
        if not math.isfinite(value):
            return False
        if not math.isfinite(than):
            return True
        return value > than + min_delta if self.higher_is_better else value < than - min_delta

    def describe(self) -> str:
        return f"test {self.name} ({'higher' if self.higher_is_better else 'lower'} is better)"


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs in a row without an improvement of more than ``min_delta``.

    The first epoch always sets the best; an epoch whose value is not finite counts as no
    improvement. Its state travels in every checkpoint, so a resumed run counts on.
    """

    metric: BestMetric
    patience: int | None
    min_delta: float = 0.0
    best: float = math.nan
    best_epoch: int = -1
    stale: int = 0  # epochs since the best (``best`` moves only by more than ``min_delta``)
    top: float = math.nan  # the best value seen at all: what ranks the best checkpoint
    top_epoch: int = -1

    def update(self, epoch: int, value: float) -> bool:
        """Record ``epoch``'s value; True when the run should stop now."""
        if self.metric.better(value, self.top):
            self.top, self.top_epoch = value, epoch
        if self.metric.better(value, self.best, self.min_delta if self.best_epoch >= 0 else 0.0):
            self.best, self.best_epoch, self.stale = value, epoch, 0
        else:
            self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def reason(self) -> str:
        delta = f" by more than {self.min_delta:g}" if self.min_delta else ""
        return (f"early stop: test {self.metric.name} did not improve{delta} for {self.stale} epochs "
                f"(best {self.best:.4g} in epoch {self.best_epoch})")  # 0-based, as the files and run.json

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "stale": self.stale, "metric": self.metric.name,
                "top": self.top, "top_epoch": self.top_epoch}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from a checkpoint's state (none, or another metric's: start counting afresh)."""
        if not state or state.get("metric") != self.metric.name:
            return
        self.best = float(state.get("best", math.nan))
        self.best_epoch = int(state.get("best_epoch", -1))
        self.stale = int(state.get("stale", 0))
        self.top = float(state.get("top", self.best))
        self.top_epoch = int(state.get("top_epoch", self.best_epoch))


class JpegReference:
    """JPEG 4:2:0's rate-quality curve on the test crops, for ``--best-metric rd``.

    Args:
        rates: JPEG's mean bpp per quality.
        qualities: its mean PSNR (or MS-SSIM in dB) per quality.
    """

    def __init__(self, rates: Sequence[float], qualities: Sequence[float]) -> None:
        order = np.argsort(rates)
        self.log_rates = np.log(np.asarray(rates, dtype=float)[order])
        self.qualities = np.asarray(qualities, dtype=float)[order]

    @classmethod
    def measure(cls, crops: Sequence[Any], metric: str = "mse") -> "JpegReference":
        """Encode ``crops`` (``NamedImage``) with Pillow's JPEG at :data:`REFERENCE_QUALITIES`."""
        curve = evaluate_anchor("jpeg420", crops, REFERENCE_QUALITIES, ms_ssim=metric == "ms-ssim")
        rates, quality = [], []
        for point in curve.points:
            mean = point.mean
            rates.append(mean["bpp"])
            quality.append(ms_ssim_db(mean["ms_ssim"]) if metric == "ms-ssim" else mean["psnr"])
        return cls(rates, quality)

    def quality_at(self, bpp: float) -> float:
        """JPEG's quality at ``bpp``: linear in log-bpp, extended past the ends by the end segments."""
        if not (math.isfinite(bpp) and bpp > 0):
            return math.nan
        x, y = self.log_rates, self.qualities
        r = math.log(bpp)
        if r < x[0] or r > x[-1]:
            i = 0 if r < x[0] else len(x) - 2
            slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
            return float(y[i] + slope * (r - x[i]))
        return float(np.interp(r, x, y))

    def gain(self, bpp: float, quality: float) -> float:
        """``quality`` minus JPEG's at ``bpp`` (dB; positive: better than JPEG)."""
        return float(quality - self.quality_at(bpp))
