"""The closing advice: PSNR per minute of a run, its late slope, and the GPU comparison."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lictrain.config import TrainConfig
from lictrain.training.advice import GPU_STEP_SECONDS, advice_text, late_slope, read_run, timeline


def fake_run(run_dir: Path, psnrs: list[float], epoch_seconds: float = 30.0) -> Path:
    run_dir.mkdir()
    budget = {"calibration_seconds": 6.0, "step_seconds": 0.9, "steps_per_epoch": 24}  # calibration was slower
    (run_dir / "run.json").write_text(json.dumps({"budget": budget}))
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": i, "psnr": p, "epoch_seconds": epoch_seconds, "train_images_per_second": 8 / 0.585})
                + "\n" for i, p in enumerate(psnrs)))
    return run_dir


def test_minutes_count_the_calibration_and_every_epoch(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "r", [10.0, 12.0, 13.0])
    points = [(minutes, row["psnr"]) for minutes, row in timeline(*read_run(run))]
    assert [m for m, _ in points] == pytest.approx([0.6, 1.1, 1.6])
    assert [p for _, p in points] == [10.0, 12.0, 13.0]


def test_late_slope_is_the_least_squares_slope_of_the_last_quarter() -> None:
    points = [(float(m), 5.0 + 2.0 * m) for m in range(12)]  # 2 dB per minute throughout
    assert late_slope(points) == pytest.approx(2.0)
    flat_end = [(float(m), min(m, 6.0)) for m in range(12)]
    assert late_slope(flat_end) == pytest.approx(0.0)
    assert math.isnan(late_slope([(0.0, 1.0), (1.0, 2.0)]))


def test_advice_names_the_pace_the_slope_and_the_gpu_ratio(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "r", [8.0 + i for i in range(12)])  # +2 dB/min
    text = advice_text(run, TrainConfig(model="hpcm-tiny"), "cpu")
    assert "288 steps of 0.58 s" in text and "test PSNR 8.0 -> 19.0 dB" in text
    assert "still rising 2.00 dB/min" in text
    assert "BD-rate -36% vs JPEG 4:2:0" in text  # the measured 15-minute reference
    assert f"{GPU_STEP_SECONDS['hpcm-tiny'] * 1000:.0f} ms, 10x this run's pace" in text
    assert "H200" not in advice_text(run, TrainConfig(model="hpcm-tiny"), "cuda")
    # the measured 15-minute curve is hpcm-tiny's: not quoted for another model
    assert "BD-rate" not in advice_text(run, TrainConfig(model="bmshj2018-factorized"), "cpu")
