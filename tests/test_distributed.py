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
    assert first.stderr.count("epoch 2/2") == 1  # one voice: rank 0 alone prints summaries

    resumed = torchrun("--resume", str(run), "--epochs", "3", "--wandb-mode", "disabled", "--device", "cpu")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [m["epoch"] for m in read_metrics(run)] == [0, 1, 2]


def test_globally_valued_is_identity_in_one_process() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    assert globally_valued(x, DistInfo()) is x
