"""What more training would buy: the closing words of ``lictrain train``.

Three sources, each named in the text: the run's own test PSNR per minute (how fast it was
still improving when it stopped), the time-to-quality measurement of the default recipe on
this project's 2-core CPU (``bench/time_to_quality.py``), and measured GPU step times.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lictrain.tracking.records import read_metrics


@dataclass(frozen=True)
class ReferenceCurve:
    """A time-to-quality measurement: test PSNR at one λ after so many minutes, and the BD-rate."""

    source: str
    model: str
    lmbda: float
    psnr_by_minutes: tuple[tuple[float, float], ...]
    minutes_per_lambda: float
    bd_rate_vs_jpeg: float
    caveat: str = ""


#: ``bench/time_to_quality.py rd --budget-minutes 15`` with the default recipe (hpcm-tiny,
#: warm-up + cosine, peak LR 2e-3), 2 shared CPU cores, 2026-11-26: test PSNR (centre crops of
#: chelsea + coffee) of the λ=0.0067 run along its 15 minutes, and the BD-rate of the 4-λ curve
#: (real bitstreams of the whole photos) against JPEG 4:2:0; see docs/time_to_quality.md
CPU_REFERENCE: ReferenceCurve | None = ReferenceCurve(
    source="bench/time_to_quality.py", model="hpcm-tiny", lmbda=0.0067,
    psnr_by_minutes=((3, 21.1), (6, 23.8), (10, 25.9), (15, 27.3)),
    minutes_per_lambda=15, bd_rate_vs_jpeg=-36.1,
    caveat="better than JPEG up to 0.3 bpp; above that it stalls near 28 dB, the higher λ need longer")

#: seconds per training step (8 crops of 128x128) measured on an H200 (docs/hpcm.md)
GPU_STEP_SECONDS = {"hpcm-tiny": 0.0585, "mbt2018-mean": 0.0171}


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``run.json`` and the per-epoch rows of ``metrics.jsonl`` of ``run_dir``."""
    return json.loads((Path(run_dir) / "run.json").read_text()), read_metrics(run_dir)


def timeline(record: dict[str, Any], rows: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """(minutes since the run began, that epoch's metrics) after each epoch; a budgeted run's
    calibration counts as its first minutes."""
    minutes = (record.get("budget") or {}).get("calibration_seconds", 0.0) / 60
    points = []
    for row in rows:
        minutes += row.get("epoch_seconds", 0.0) / 60
        points.append((minutes, row))
    return points


def measured_step_seconds(rows: list[dict[str, Any]], batch_size: int) -> float | None:
    """Mean seconds per training step a run kept (from its images/s per epoch), if recorded."""
    rates = [row["train_images_per_second"] for row in rows if row.get("train_images_per_second")]
    return batch_size / statistics.fmean(rates) if rates else None


def late_slope(points: list[tuple[float, float]]) -> float:
    """dB per minute over the last quarter of the run (least squares; NaN with < 3 points)."""
    tail = points[-max(3, len(points) // 4):]
    if len(tail) < 3:
        return math.nan
    try:
        return statistics.linear_regression([x for x, _ in tail], [y for _, y in tail]).slope
    except statistics.StatisticsError:  # every point at the same minute
        return math.nan


def advice_text(run_dir: Path, cfg: Any, device_type: str) -> str:
    """A few lines on what a longer budget or a GPU would buy, for the end of a run."""
    record, rows = read_run(run_dir)
    budget = record.get("budget") or {}
    points = [(minutes, float(row["psnr"])) for minutes, row in timeline(record, rows)
              if isinstance(row.get("psnr"), (int, float)) and math.isfinite(float(row["psnr"]))]
    if not points:  # no finite test PSNR (a diverged run: the epoch lines said so)
        return ("what more training buys: nothing yet -- this run's test PSNR was never finite (diverged); "
                "lower --lr or keep --clip_max_norm") if rows else ""
    minutes, last = points[-1]
    lines = ["what more training buys:"]
    trained = (record.get("summary") or {}).get("trained_steps")  # a budget's last epoch may be partial
    steps = trained if isinstance(trained, int) else len(points) * budget.get("steps_per_epoch", 0)
    step_seconds = measured_step_seconds(rows, cfg.batch_size) or budget.get("step_seconds")
    pace = f", {steps} steps of {step_seconds:.2f} s" if steps and step_seconds else ""
    slope = late_slope(points)
    rising = f"; still rising {slope:.2f} dB/min at the end" if math.isfinite(slope) and slope > 0.05 else ""
    lines.append(f"  this run: {minutes:.1f} min on {device_type}{pace}; "
                 f"test PSNR {points[0][1]:.1f} -> {last:.1f} dB{rising}")
    ref = CPU_REFERENCE
    if ref is not None and cfg.model == ref.model:  # the measured curve is of one model's recipe
        curve = ", ".join(f"{p:.1f} dB at {m:g} min" for m, p in ref.psnr_by_minutes)
        lines.append(f"  longer, the default recipe, 2 CPU cores ({ref.source}): "
                     f"a {ref.minutes_per_lambda:g}-minute run "
                     f"at λ={ref.lmbda:g} had test PSNR {curve}; "
                     f"{ref.minutes_per_lambda:g} min at each of 4 λ: "
                     f"BD-rate {ref.bd_rate_vs_jpeg:+.0f}% vs JPEG 4:2:0 ({ref.caveat})")
    gpu = GPU_STEP_SECONDS.get(cfg.model)
    if device_type == "cpu" and gpu and step_seconds:
        lines.append(f"  a GPU: an H200 runs this model's step (8x128x128) in {gpu * 1000:.0f} ms, "
                     f"{step_seconds / gpu:.0f}x this run's pace; `--device auto` uses one, and the same "
                     f"--budget-minutes then buys that many more steps (or a bigger model: --model hpcm-base)")
    elif device_type == "cpu":
        lines.append("  a GPU: `--device auto` uses one; the same budget then buys many times the steps")
    return "\n".join(lines)
