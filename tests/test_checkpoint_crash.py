"""CheckpointManager under kill -9, across processes, and at interpreter exit."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import lictrain
from lictrain.checkpoint import LOCK_NAME, TRACKING_FILE, CheckpointManager, checkpoint_filename
from lictrain.errors import CheckpointError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")

KEEP_LAST, KEEP_BEST = 2, 2
N = 64 * 1024  # floats per tensor: 256 KiB, so kills also land inside writes

CHILD = textwrap.dedent(
    """
    import sys, torch
    from lictrain.checkpoint import CheckpointManager
    save_dir, start, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    N = int(sys.argv[4])
    cm = CheckpointManager(save_dir, keep_last_n=2, keep_best=2, async_save=True, fsync=True)
    print("ready", flush=True)
    stop = start + 5 if mode == "exit" else start + 100000
    for e in range(start, stop):
        v = float(e)
        cm.save_checkpoint(
            e, {"w": torch.full((N,), v), "b": torch.full((N // 2,), v)},
            {"state": {0: {"exp_avg": torch.full((N,), v)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
            metric_value=float((e * 7919) % 13), tag=f"epoch-{e}",
        )
        print("saved", e, flush=True)
    # mode == "exit": leave without wait() or close(); atexit must flush and unlock
    """
)


def _spawn(tmp_path: Path, save_dir: Path, start: int, mode: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ)
    src = str(Path(lictrain.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        [sys.executable, str(script), str(save_dir), str(start), mode, str(N)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _check_whole(path: Path, ckpt: dict) -> None:
    e = ckpt["epoch"]
    assert path.name == checkpoint_filename(e)
    assert ckpt["tag"] == f"epoch-{e}"
    assert torch.all(ckpt["model_state"]["w"] == e) and ckpt["model_state"]["w"].numel() == N
    assert torch.all(ckpt["model_state"]["b"] == e)
    assert torch.all(ckpt["optimizer_state"]["state"][0]["exp_avg"] == e)


def test_sigkill_at_random_points_leaves_a_loadable_latest(tmp_path):
    save_dir = tmp_path / "run"
    rnd = random.Random(1234)
    start = 0
    previous_latest = -1
    for round_ in range(4):
        child = _spawn(tmp_path, save_dir, start, "loop")
        try:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
            if round_ == 0:  # a second run on the same directory is refused while it lives
                with pytest.raises(CheckpointError, match=f"in use.*pid {child.pid}"):
                    CheckpointManager(save_dir)
            # After "saved start+2" returns, the save of `start` is durable (one queued write).
            while True:
                line = child.stdout.readline()
                assert line, child.stderr.read()
                if int(line.split()[1]) >= start + 2:
                    break
            time.sleep(rnd.uniform(0.0, 0.25))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL

        tracking = json.loads((save_dir / TRACKING_FILE).read_text())  # whole JSON
        assert isinstance(tracking["last_checkpoints"], list)
        with CheckpointManager(save_dir, keep_last_n=KEEP_LAST, keep_best=KEEP_BEST,
                               async_save=False) as cm:
            assert not [p for p in save_dir.iterdir() if p.name.startswith(".tmp-")]
            latest = cm.latest_checkpoint
            assert latest is not None
            ckpt = cm.load()
            _check_whole(latest, ckpt)
            assert ckpt["epoch"] >= max(previous_latest, start)
            for p in cm.last_checkpoints + cm.best_checkpoints:
                _check_whole(p, cm.load(p))
            previous_latest = ckpt["epoch"]
            # At most one dropped file may await deletion after a kill.
            n_files = len([p for p in save_dir.iterdir() if p.name.startswith("checkpoint_epoch")])
            assert n_files <= KEEP_LAST + KEEP_BEST + 1
        start = previous_latest + 1
    assert previous_latest >= 8


def test_interpreter_exit_flushes_pending_saves_and_unlocks(tmp_path):
    save_dir = tmp_path / "run"
    child = _spawn(tmp_path, save_dir, 0, "exit")
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "saved 4" in out
    assert not (save_dir / LOCK_NAME).exists()
    tracking = json.loads((save_dir / TRACKING_FILE).read_text())
    assert tracking["last_checkpoints"] == [checkpoint_filename(3), checkpoint_filename(4)]
    with CheckpointManager(save_dir, keep_last_n=KEEP_LAST, keep_best=KEEP_BEST) as cm:
        assert cm.latest_checkpoint == save_dir / checkpoint_filename(4)
        _check_whole(cm.latest_checkpoint, cm.load())
