"""DDP under torchrun on CPU (gloo): ranks stay identical, rank 0 writes, resume works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lictrain.tracking.records import read_metrics
from lictrain.training.distributed import DistInfo, globally_valued

pytestmark = pytest.mark.slow

SMALL = ["--model", "bmshj2018-hyperprior", "--patch-size", "64", "--test-patch-size", "64", "--batch-size", "2",
         "--epoch-size", "8", "--test-batch-size", "2", "--wandb-mode", "disabled", "--device", "cpu"]


def torchrun(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lictrain", "train", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_two_process_balanced_run_stays_in_sync_and_resumes(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    flags = ["--dataset", str(image_folder), *SMALL, "--use_balanced", "--save_path", str(run)]
    first = torchrun(*flags, "--epochs", "2")
    # check_in_sync raises after every epoch if parameters or balanced logits differ between ranks
    assert first.returncode == 0, first.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["world_size"] == 2
    assert len(read_metrics(run)) == 2
    assert first.stderr.count("epoch 1/1") == 1  # one voice: rank 0 alone prints summaries

    resumed = torchrun("--resume", str(run), "--epochs", "3", "--wandb-mode", "disabled", "--device", "cpu")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [m["epoch"] for m in read_metrics(run)] == [0, 1, 2]


def test_globally_valued_is_identity_in_one_process() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    assert globally_valued(x, DistInfo()) is x


def _torchrun_command(data: Path, run: Path, restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            f"--max-restarts={restarts}", "-m", "lictrain", "train", "--dataset", str(data),
            "--model", "bmshj2018-factorized", "--patch-size", "64", "--test-patch-size", "64", "--batch-size", "2",
            "--epoch-size", "16", "--epochs", "2", "--log-every", "1", "--wandb-mode", "disabled", "--no-final-eval",
            "--device", "cpu", "--save-path", str(run), "--auto-resume"]


def _start_and_wait(command: list[str], run: Path, steps: int) -> subprocess.Popen:
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        rows = read_metrics(run, steps=True) if (run / "metrics.jsonl").exists() else []
        if rows and rows[-1]["step"] >= steps:
            break
        time.sleep(0.02)
    return proc


def test_torchrun_stops_all_ranks_at_one_step_and_restarts_after_a_killed_rank(image_folder: Path,
                                                                               tmp_path: Path) -> None:
    """SIGTERM to the torchrun agent: both ranks stop after the same step and rank 0 saves it. Then,
    with --max-restarts 1, SIGKILL of rank 1: the restarted ranks --auto-resume from the newest
    checkpoint and finish with the losses of an uninterrupted run."""
    import signal

    straight, run = tmp_path / "straight", tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    assert subprocess.run(_torchrun_command(image_folder, straight), env=env, capture_output=True,
                          timeout=300).returncode == 0

    agent = _start_and_wait(_torchrun_command(image_folder, run), run, 3)
    agent.send_signal(signal.SIGTERM)
    agent.communicate(timeout=120)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted" and record["summary"]["signal"] == "SIGTERM"
    from lictrain.checkpoint import load_checkpoint, resolve_checkpoint

    ckpt = load_checkpoint(resolve_checkpoint(run))
    assert ckpt["completed"] is False and ckpt["batches_done"] >= 3 and len(ckpt["rng_states"]) == 2

    agent = _start_and_wait(_torchrun_command(image_folder, run, restarts=1), run, 6)
    ranks = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(agent.pid)], capture_output=True,
                           text=True).stdout.splitlines()
    workers = [int(line.split()[0]) for line in ranks if "lictrain" in line]
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    _, err = agent.communicate(timeout=300)
    assert agent.returncode == 0, err[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert [(m["epoch"], m["loss"]) for m in read_metrics(run)] == [(m["epoch"], m["loss"]) for m in
                                                                   read_metrics(straight)]
