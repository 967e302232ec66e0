"""End to end: ``lictrain train`` for 2 epochs on small crops, run records, determinism, Ctrl-C, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lictrain.cli.main import main
from lictrain.config import TrainConfig
from lictrain.tracking.records import read_metrics
from lictrain.training.fit import fit

pytestmark = pytest.mark.slow

SMALL = ["--model", "bmshj2018-hyperprior", "--patch-size", "64", "--test-patch-size", "64", "--batch-size", "2",
         "--epoch-size", "4", "--test-batch-size", "2"]


def small_cfg(data: Path, run: Path, **kw) -> TrainConfig:
    base = dict(dataset=str(data), model="bmshj2018-hyperprior", patch_size=64, test_patch_size=64, batch_size=2,
                epoch_size=4, test_batch_size=2, save_path=str(run), wandb_mode="disabled")
    return TrainConfig(**{**base, **kw})


def test_cli_trains_two_epochs_and_leaves_a_complete_run(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "lictrain", "train", "--dataset", str(image_folder), *SMALL,
                           "--epochs", "2", "--save_path", str(run)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1" in proc.stderr and "epoch 0/1" in proc.stderr and "Traceback" not in proc.stderr
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["config"]["epochs"] == 2 and record["versions"]["torch"]
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [0, 1]
    for key in ("loss", "bpp", "mse", "psnr", "ms_ssim", "lr", "train/loss"):
        assert key in metrics[-1]
    assert metrics[-1]["psnr"] > 0 and metrics[-1]["bpp"] > 0
    wandb_files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 1 and wandb_files[0].stat().st_size > 0
    assert record["wandb_run_id"] in wandb_files[0].name
    tracking = json.loads((run / "checkpoint_tracking.json").read_text())
    assert len(tracking["last_checkpoints"]) == 2


def test_same_command_twice_gives_the_same_losses(image_folder: Path, tmp_path: Path) -> None:
    a = fit(small_cfg(image_folder, tmp_path / "a", epochs=2), show_progress=False)
    b = fit(small_cfg(image_folder, tmp_path / "b", epochs=2), show_progress=False)
    ma, mb = read_metrics(a.run_dir), read_metrics(b.run_dir)
    for key in ("loss", "bpp", "mse", "train/loss", "train/bpp"):
        assert [m[key] for m in ma] == [m[key] for m in mb]


def test_interrupt_saves_a_checkpoint_and_resume_matches_uninterrupted(image_folder: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    straight = fit(small_cfg(image_folder, tmp_path / "straight", epochs=3), show_progress=False)

    import signal

    import lictrain.training.run as run_module

    real_test_epoch = run_module.test_epoch
    calls = {"n": 0}

    def signal_in_second_test(*args, **kwargs):  # a stop while testing: the epoch is saved, then the run stops
        calls["n"] += 1
        if calls["n"] == 2:
            signal.raise_signal(signal.SIGTERM)
        return real_test_epoch(*args, **kwargs)

    monkeypatch.setattr(run_module, "test_epoch", signal_in_second_test)
    interrupted = fit(small_cfg(image_folder, tmp_path / "cut", epochs=3), show_progress=False)
    assert interrupted.status == "interrupted" and interrupted.exit_code == 75
    record = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert record["status"] == "interrupted" and record["summary"]["signal"] == "SIGTERM"
    assert [m["epoch"] for m in read_metrics(tmp_path / "cut")] == [0, 1]
    monkeypatch.setattr(run_module, "test_epoch", real_test_epoch)

    # resume from the completed epoch-1 checkpoint: epochs 2.. must replay exactly
    code = main(["train", "--resume", str(tmp_path / "cut" / "checkpoint_epoch00001.pt"), "--wandb-mode", "disabled"])
    assert code == 0
    assert [m["loss"] for m in read_metrics(tmp_path / "cut")] == [m["loss"] for m in read_metrics(straight.run_dir)]


def test_interrupt_mid_epoch_resumes_at_that_batch_exactly(image_folder: Path, tmp_path: Path,
                                                           interrupt_after_steps) -> None:
    """Ctrl-C after 5 of 8 steps (4 per epoch): the resumed run trains batches 2..4 of epoch 1, not
    the whole epoch again, and ends where the uninterrupted run ends."""
    cfg = dict(epochs=2, epoch_size=8, lr_schedule="linear")
    straight = fit(small_cfg(image_folder, tmp_path / "straight", **cfg), show_progress=False)
    interrupt_after_steps(5)
    assert fit(small_cfg(image_folder, tmp_path / "cut", **cfg), show_progress=False).status == "interrupted"
    interrupt_after_steps.disarm()
    resumed = fit(small_cfg(image_folder, tmp_path / "cut", **cfg, resume=str(tmp_path / "cut")), show_progress=False)
    assert resumed.status == "finished"
    a, b = read_metrics(straight.run_dir), read_metrics(tmp_path / "cut")
    assert [m["epoch"] for m in b] == [0, 1]
    for key in ("loss", "bpp", "mse", "lr"):
        assert [m[key] for m in a] == [m[key] for m in b], key
    assert b[1]["train_images_per_second"] > 0


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 75), ("SIGUSR1", 75), ("SIGHUP", 75)])
def test_a_stop_signal_saves_the_step_and_exits_with_its_code(image_folder: Path, tmp_path: Path,
                                                              interrupt_after_steps, sig: str, code: int) -> None:
    import signal

    interrupt_after_steps(1, getattr(signal, sig))
    assert main(["train", "--dataset", str(image_folder), *SMALL, "--epochs", "2", "--save_path", str(tmp_path / "r"),
                 "--wandb-mode", "disabled"]) == code
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["status"] == "interrupted" and record["summary"]["signal"] == sig
    from lictrain.checkpoint import load_checkpoint, resolve_checkpoint

    ckpt = load_checkpoint(resolve_checkpoint(tmp_path / "r"))
    assert ckpt["completed"] is False and ckpt["batches_done"] == 1  # the step the signal landed in, whole


@pytest.mark.slow
def test_an_offline_wandb_run_ends_with_the_exact_sync_command(image_folder: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "r"
    assert main(["train", "--dataset", str(image_folder), *SMALL, "--epochs", "1", "--save_path", str(run),
                 "--wandb-mode", "offline", "--no-final-eval"]) == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "wandb sync" in line)
    folder = Path(line.split("wandb sync ", 1)[1].strip())
    assert folder.parent == run / "wandb" and folder.name.startswith("offline-run-")
    assert list(folder.glob("run-*.wandb"))  # the file wandb sync uploads
