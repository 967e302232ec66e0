"""``--log-every``: step rows in metrics.jsonl beside the epoch rows, exact across a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lictrain.config import TrainConfig
from lictrain.tracking.records import RunRecord, read_metrics
from lictrain.training.fit import fit
from lictrain.training.step_log import StepLog
from lictrain.training.steps import StepOutcome


def outcome(loss: float, applied: bool = True) -> StepOutcome:
    return StepOutcome(applied, loss=loss, bpp=loss / 10, mse=0.01, distortion=loss, extra={"task/rate": 1.0})


def test_step_log_emits_means_of_the_last_n_applied_steps() -> None:
    rows = []
    log = StepLog(3, lambda step, row: rows.append((step, row)), lambda: {"lr": 0.5})
    for step, (loss, applied) in enumerate([(1.0, True), (2.0, True), (9.0, False), (4.0, True), (6.0, True),
                                            (8.0, True)], start=1):
        log.record(step, 0, outcome(loss, applied))
    assert [s for s, _ in rows] == [3, 6]
    first, second = rows[0][1], rows[1][1]
    assert first["train/loss"] == pytest.approx(1.5) and first["skipped_steps"] == 1  # the skipped step not averaged
    assert second["train/loss"] == pytest.approx(6.0) and "skipped_steps" not in second
    assert second["train/psnr"] == pytest.approx(20.0) and second["lr"] == 0.5 and second["kind"] == "step"
    log.flush(6, 0)  # nothing new: no row
    assert len(rows) == 2


def test_records_keep_step_rows_apart_and_truncate_them_by_step(tmp_path: Path) -> None:
    record = RunRecord(tmp_path, {"model": "m"})
    record.log_step({"kind": "step", "step": 2, "epoch": 0, "train/loss": 1.0})
    record.log_epoch({"epoch": 0, "loss": 1.0})
    record.log_step({"kind": "step", "step": 4, "epoch": 1, "train/loss": 0.5})
    record.log_step({"kind": "step", "step": 6, "epoch": 1, "train/loss": 0.4})
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0]
    assert [r["step"] for r in read_metrics(tmp_path, steps=True)] == [2, 4, 6]
    assert "train/loss" not in record.data["summary"]  # step rows never become the summary
    record.truncate_metrics_after(1, step=4)  # resumed in epoch 1 after its 4th step overall
    assert [r["step"] for r in read_metrics(tmp_path, steps=True)] == [2, 4]
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0]


@pytest.mark.slow
def test_log_every_rows_survive_an_interrupt_and_resume_exactly(image_folder: Path, tmp_path: Path,
                                                                interrupt_after_steps) -> None:
    def cfg(run: str, **kw) -> TrainConfig:
        return TrainConfig(dataset=str(image_folder), model="bmshj2018-factorized", patch_size=64, test_patch_size=64,
                           batch_size=2, epoch_size=8, test_batch_size=2, save_path=str(tmp_path / run),
                           wandb_mode="disabled", final_eval=False, lr=1e-3, lr_schedule="linear", epochs=2,
                           log_every=3, use_balanced=True, **kw)

    straight = fit(cfg("straight"), show_progress=False)
    rows = read_metrics(straight.run_dir, steps=True)
    assert [r["step"] for r in rows] == [3, 4, 6, 8]  # every 3 steps, and the rest at each epoch's end
    assert [r["epoch"] for r in rows] == [0, 0, 1, 1]
    assert {"lr", "gamma", "weight/distortion", "weight/rate", "train/loss", "train/task/rate"} <= set(rows[0])
    interrupt_after_steps(5)
    assert fit(cfg("cut"), show_progress=False).status == "interrupted"
    interrupt_after_steps.disarm()
    assert fit(cfg("cut", resume=str(tmp_path / "cut")), show_progress=False).status == "finished"
    resumed = read_metrics(tmp_path / "cut", steps=True)
    assert [r["step"] for r in resumed] == [3, 4, 6, 8]
    for a, b in zip(rows, resumed):
        if a["step"] != 6:  # the row at step 6 spans the interruption (steps 6 only after resume)
            assert a == b
    run = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert run["status"] == "finished"
