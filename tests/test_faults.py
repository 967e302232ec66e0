"""Faults surface at once: a full disk (a real tmpfs, or a simulated ENOSPC), a read-only folder,
a dead process's run.json. The run stops at the next step boundary, older checkpoints intact,
no temporary left, one line that names the cause, exit 74, and the same command resumes."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

from lictrain.config import TrainConfig
from lictrain.errors import StorageError
from lictrain.tracking.records import read_metrics
from lictrain.training.fit import fit

SMALL = ["--model", "bmshj2018-factorized", "--patch-size", "64", "--test-patch-size", "64", "--batch-size", "2",
         "--epoch-size", "8", "--test-batch-size", "2", "--wandb-mode", "disabled", "--no-final-eval", "--log-every", "1"]


def small_cfg(data: Path, run: Path, **kw: Any) -> TrainConfig:
    base = dict(dataset=str(data), model="bmshj2018-factorized", patch_size=64, test_patch_size=64, batch_size=2,
                epoch_size=8, test_batch_size=2, save_path=str(run), wandb_mode="disabled", epochs=3,
                final_eval=False, log_every=1)
    return TrainConfig(**{**base, **kw})


def failing_save(monkeypatch: pytest.MonkeyPatch, fail_at: int, code: int = errno.ENOSPC) -> None:
    """``torch.save`` raises ``OSError(code)`` from its ``fail_at``-th call on, after writing a few bytes
    (a partial temporary file, as a disk that fills up mid-write leaves)."""
    real = torch.save
    calls = {"n": 0}

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] >= fail_at:
            if hasattr(f, "write"):
                f.write(b"PK\x03\x04 partial")
            raise OSError(code, os.strerror(code), getattr(f, "name", None))
        real(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)


def last_step(run: Path) -> int:
    return max(r["step"] for r in read_metrics(run, steps=True))


def test_a_failed_background_save_stops_the_run_at_the_next_step(image_folder: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        failing_save(patch, fail_at=2)  # epoch 0 saved; epoch 1's checkpoint hits a full disk
        with pytest.raises(StorageError, match="no space left on the device") as caught:
            fit(small_cfg(image_folder, run), show_progress=False)
    assert caught.value.exit_code == 74 and "\n" not in str(caught.value)
    # noticed at the next step boundary (as epoch 2 begins, or after its first step), not an epoch later
    assert last_step(run) in (2 * 4, 2 * 4 + 1)
    assert sorted(p.name for p in run.glob("checkpoint_*.pt")) == ["checkpoint_epoch00000.pt"]
    assert not list(run.glob(".tmp-lictrain-*"))
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "no space left" in record["summary"]["error"]
    resumed = fit(small_cfg(image_folder, run, auto_resume=True), show_progress=False)
    assert resumed.status == "finished" and [m["epoch"] for m in read_metrics(run)] == [0, 1, 2]


def test_when_the_very_first_save_fails_the_folder_is_taken_over(image_folder: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        failing_save(patch, fail_at=1, code=errno.EROFS)
        with pytest.raises(StorageError, match="read-only file system"):
            fit(small_cfg(image_folder, run, epochs=2), show_progress=False)
    assert not list(run.glob("checkpoint_*.pt")) and not list(run.glob(".tmp-lictrain-*"))
    result = fit(small_cfg(image_folder, run, epochs=2, auto_resume=True), show_progress=False)
    assert result.status == "finished" and [m["epoch"] for m in read_metrics(run)] == [0, 1]


def test_the_cli_says_the_cause_in_one_line_with_exit_74(image_folder: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    from lictrain.cli.main import main

    failing_save(monkeypatch, fail_at=1)
    code = main(["train", "--dataset", str(image_folder), *SMALL, "--epochs", "2", "--save-path", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 74
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "no space left on the device" in lines[0] and "--auto-resume" in lines[0]
    assert "Traceback" not in err


# -- a real full disk: a tmpfs too small for a third checkpoint --------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_real_full_disk_stops_at_once_and_resumes_when_there_is_room(image_folder: Path, tmp_path: Path,
                                                                       small_tmpfs: Path) -> None:
    """A checkpoint of bmshj2018-factorized is 36 MB: two fit in 80 MB, the third does not."""
    run = small_tmpfs / "run"
    command = [sys.executable, "-m", "lictrain", "train", "--dataset", str(image_folder), *SMALL, "--epochs", "4",
               "--keep-last-n", "3", "--save-path", str(run), "--auto-resume"]
    full = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert full.returncode == 74, full.stderr[-2000:]
    errors = [ln for ln in full.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "no space left on the device" in errors[0] and "Traceback" not in full.stderr
    assert sorted(p.name for p in run.glob("checkpoint_*.pt")) == ["checkpoint_epoch00000.pt",
                                                                   "checkpoint_epoch00001.pt"]
    assert not list(run.glob(".tmp-lictrain-*"))
    assert last_step(run) in (3 * 4, 3 * 4 + 1)
    assert json.loads((run / "run.json").read_text())["status"] in ("failed", "crashed")
    from lictrain.checkpoint import load_latest_valid

    path, _ = load_latest_valid(run)
    assert path.name == "checkpoint_epoch00001.pt"  # intact
    subprocess.run(["mount", "-o", "remount,size=300m", str(small_tmpfs)], check=True)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [m["epoch"] for m in read_metrics(run)] == [0, 1, 2, 3]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_a_failed_last_save_marks_the_run_failed_not_running(image_folder: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        failing_save(patch, fail_at=2)  # the second and last epoch's checkpoint
        with pytest.raises(StorageError, match="no space left"):
            fit(small_cfg(image_folder, run, epochs=2), show_progress=False)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "no space left" in record["summary"]["error"]
    assert [p.name for p in run.glob("checkpoint_*.pt")] == ["checkpoint_epoch00000.pt"]
    again = fit(small_cfg(image_folder, run, epochs=2, auto_resume=True), show_progress=False)
    assert again.status == "finished" and "error" not in json.loads((run / "run.json").read_text())["summary"]
