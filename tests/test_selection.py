"""``--best-metric``, ``--best-mode`` and ``--early-stop``: known sequences, then real runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lictrain.cli.main import main
from lictrain.config import TrainConfig
from lictrain.errors import ConfigError
from lictrain.tracking.records import read_metrics
from lictrain.training.fit import fit
from lictrain.training.selection import BestMetric, EarlyStopping, JpegReference


def small_cfg(data: Path, run: Path, **kw) -> TrainConfig:
    base = dict(dataset=str(data), model="bmshj2018-factorized", patch_size=64, test_patch_size=64, batch_size=2,
                epoch_size=4, test_batch_size=2, save_path=str(run), wandb_mode="disabled", final_eval=False,
                lr=1e-3, lr_schedule="multistep")
    return TrainConfig(**{**base, **kw})


def test_best_metric_directions_and_override() -> None:
    assert not BestMetric.from_config("loss").higher_is_better
    assert not BestMetric.from_config("bpp").higher_is_better
    assert BestMetric.from_config("psnr").higher_is_better
    ms = BestMetric.from_config("ms-ssim")
    assert ms.key == "ms_ssim" and ms.higher_is_better
    assert BestMetric.from_config("rd").key == "rd_gain"
    assert not BestMetric.from_config("psnr", "min").higher_is_better
    assert BestMetric.from_config("psnr").value({"psnr": 30}) == 30.0
    assert math.isnan(BestMetric.from_config("psnr").value({"psnr": None}))
    with pytest.raises(ConfigError, match="--best-metric must be one of"):
        TrainConfig(best_metric="accuracy").validate()
    with pytest.raises(ConfigError, match="--early-stop must be a positive integer"):
        TrainConfig(early_stop=0).validate()
    with pytest.raises(ConfigError, match="--early-stop-min-delta"):
        TrainConfig(early_stop_min_delta=-1).validate()


def test_early_stopping_counts_epochs_without_a_large_enough_improvement() -> None:
    stop = EarlyStopping(BestMetric.from_config("psnr"), patience=2, min_delta=0.1)
    decisions = [stop.update(e, v) for e, v in enumerate([20.0, 20.5, 20.55, 20.6, 20.59])]
    # 20.55 and 20.6 beat 20.5 by <= 0.1: two stale epochs -> stop after epoch 3
    assert decisions == [False, False, False, True, True]
    assert (stop.best, stop.best_epoch) == (20.5, 1)
    assert "did not improve by more than 0.1 for" in stop.reason() and "in epoch 1" in stop.reason()  # 0-based, as the files
    loss = EarlyStopping(BestMetric.from_config("loss"), patience=1)
    assert [loss.update(e, v) for e, v in enumerate([3.0, math.nan, 2.0, 2.5])] == [False, True, False, True]
    resumed = EarlyStopping(BestMetric.from_config("psnr"), patience=2, min_delta=0.1)
    resumed.load_state_dict(json.loads(json.dumps(stop.state_dict())))
    assert (resumed.best, resumed.best_epoch, resumed.stale) == (stop.best, stop.best_epoch, stop.stale)
    other = EarlyStopping(BestMetric.from_config("loss"), patience=2)
    other.load_state_dict(stop.state_dict())  # another metric's state: start afresh
    assert other.best_epoch == -1


def test_jpeg_reference_interpolates_in_log_rate_and_extends_the_ends() -> None:
    ref = JpegReference([0.25, 0.5, 1.0], [28.0, 30.0, 33.0])
    assert ref.quality_at(0.5) == pytest.approx(30.0)
    assert ref.quality_at(math.sqrt(0.5)) == pytest.approx(31.5)  # halfway in log-rate
    assert ref.quality_at(2.0) == pytest.approx(36.0)  # the last segment's slope: +3 dB per doubling
    assert ref.quality_at(0.125) == pytest.approx(26.0)
    assert ref.gain(0.5, 31.0) == pytest.approx(1.0)
    assert math.isnan(ref.quality_at(0.0))


@pytest.mark.slow
def test_best_metric_psnr_ranks_checkpoints_by_psnr(image_folder: Path, tmp_path: Path) -> None:
    result = fit(small_cfg(image_folder, tmp_path / "r", epochs=4, best_metric="psnr", keep_best=1), show_progress=False)
    rows = read_metrics(result.run_dir)
    best_epoch = max(range(len(rows)), key=lambda e: rows[e]["psnr"])
    assert result.summary["best_checkpoint"].endswith(f"checkpoint_epoch{best_epoch:05d}.pt")
    assert result.summary["best_metric"] == "psnr" and result.summary["best_epoch"] == best_epoch
    assert result.summary["best_value"] == pytest.approx(rows[best_epoch]["psnr"])
    tracking = json.loads((result.run_dir / "checkpoint_tracking.json").read_text())
    assert tracking["metric_name"] == "psnr" and tracking["higher_is_better"] is True


@pytest.mark.slow
def test_early_stop_ends_the_run_stopped_keeps_the_best_and_resumes(image_folder: Path, tmp_path: Path) -> None:
    """min-delta 100 dB: no epoch after the first improves, so patience 2 stops after epoch 3 of 6."""
    run = tmp_path / "r"
    code = main(["train", "--dataset", str(image_folder), "--model", "bmshj2018-factorized", "--patch-size", "64",
                 "--test-patch-size", "64", "--batch-size", "2", "--epoch-size", "4", "--epochs", "6",
                 "--save_path", str(run), "--wandb-mode", "disabled", "--no-final-eval", "--best-metric", "psnr",
                 "--early-stop", "2", "--early-stop-min-delta", "100"])
    assert code == 0
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "stopped"
    summary = record["summary"]
    assert summary["early_stopped"] is True and summary["reason"].startswith("early stop: test psnr did not improve")
    rows = read_metrics(run)
    top = max(range(3), key=lambda e: rows[e]["psnr"])  # the best checkpoint is the best epoch, delta or not
    assert summary["best_epoch"] == top and summary["best_checkpoint"].endswith(f"checkpoint_epoch{top:05d}.pt")
    assert "(best" in summary["reason"] and "in epoch 0)" in summary["reason"]  # no epoch beat epoch 0 by 100 dB
    assert (run / summary["best_checkpoint"]).exists()  # relative to the run folder
    assert [r["epoch"] for r in read_metrics(run)] == [0, 1, 2]
    # resumable: more patience continues from epoch 3 and counts the stale epochs already seen
    code = main(["train", "--resume", str(run), "--early-stop", "3", "--wandb-mode", "disabled"])
    assert code == 0
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "stopped" and [r["epoch"] for r in read_metrics(run)] == [0, 1, 2, 3]


@pytest.mark.slow
def test_best_metric_rd_logs_the_gain_over_jpeg(image_folder: Path, tmp_path: Path) -> None:
    result = fit(small_cfg(image_folder, tmp_path / "r", epochs=2, best_metric="rd"), show_progress=False)
    rows = read_metrics(result.run_dir)
    assert all(math.isfinite(r["rd_gain"]) for r in rows)
    assert result.summary["best_value"] == pytest.approx(max(r["rd_gain"] for r in rows))


def test_the_analyzer_counts_an_early_stopped_run_as_finished(tmp_path: Path) -> None:
    from lictrain.analysis.readers import read_lictrain_run

    for name, summary in (("early", {"early_stopped": True, "psnr": 25.0}), ("pruned", {"psnr": 20.0})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"status": "stopped", "config": {"lmbda": 0.01},
                                                              "summary": summary}))
    assert read_lictrain_run(tmp_path / "early").state == "finished"
    assert read_lictrain_run(tmp_path / "early").status == "stopped"
    assert read_lictrain_run(tmp_path / "pruned").state == "stopped"
