"""How long a stop takes: SIGTERM to a training process group -> checkpoint saved -> exit.

What a cluster user sets ``sbatch --signal=...@SECONDS`` (and SLURM's KillWait) from. For each
model, a real ``lictrain train`` (two decoding workers, a folder of synthetic photos) is started in
its own process group; after a few logged steps the whole group gets SIGTERM (twice, 20 ms apart,
as SLURM plus a forwarding trap would send it). Measured, side by side in one run: the median
step time, the seconds from the signal to the process's exit (one step finishing + the checkpoint
written + exit), the checkpoint's size and its integrity check on load. Then the same command with
``--auto-resume`` must finish (exit 0).

    .venv/bin/python bench/stop_latency.py [--models hpcm-tiny bmshj2018-hyperprior] [--tries 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photos(folder: Path, count: int, size: tuple[int, int] = (512, 384)) -> None:
    """Tiles plus grain, JPEG q90 (as the brief's synthetic photos, smaller)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("test", 2)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            tiles = rng.integers(0, 255, (size[1] // 32 + 1, size[0] // 32 + 1, 3), dtype=np.uint8)
            base = np.asarray(Image.fromarray(tiles).resize(size, Image.NEAREST), dtype=np.float32)
            grain = rng.normal(0, 8, base.shape)
            Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8)).save(folder / split / f"{i}.jpg", quality=90)


def command(data: Path, run: Path, model: str) -> list[str]:
    return [sys.executable, "-m", "lictrain", "train", "--dataset", str(data), "--model", model,
            "--patch-size", "128", "--test-patch-size", "128", "--batch-size", "4", "--epochs", "2",
            "--num-workers", "2", "--log-every", "1", "--wandb-mode", "disabled", "--no-final-eval",
            "--save-path", str(run), "--auto-resume"]


def step_rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("kind") == "step"]


def one_stop(data: Path, run: Path, model: str, after: int) -> dict[str, float]:
    proc = subprocess.Popen(command(data, run, model), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    started = None
    while proc.poll() is None:
        rows = step_rows(run)
        if len(rows) >= after:
            break
        if rows and started is None:
            started = time.perf_counter(), len(rows)
        time.sleep(0.005)
    now = time.perf_counter()
    step = (now - started[0]) / max(1, len(step_rows(run)) - started[1]) if started else float("nan")
    os.killpg(proc.pid, signal.SIGTERM)
    time.sleep(0.02)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    _, err = proc.communicate(timeout=300)
    stop = time.perf_counter() - now
    assert proc.returncode == 75, err.decode()[-2000:]
    from lictrain.checkpoint import load_checkpoint, resolve_checkpoint, verify_checkpoint_file

    ckpt = resolve_checkpoint(run)
    t = time.perf_counter()
    verify_checkpoint_file(ckpt)
    verify = time.perf_counter() - t
    load_checkpoint(ckpt)
    return {"step_s": step, "stop_s": stop, "checkpoint_mb": ckpt.stat().st_size / 2**20, "verify_s": verify}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["hpcm-tiny", "bmshj2018-hyperprior"])
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--photos", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        photos(data, args.photos)
        print(f"{'model':24} {'step s':>8} {'SIGTERM->exit s':>16} {'checkpoint MB':>14} {'CRC check s':>12}")
        for model in args.models:
            results = []
            for k in range(args.tries):
                run = Path(tmp) / f"{model}-{k}"
                results.append(one_stop(data, run, model, after=4 + 3 * k))
                done = subprocess.run(command(data, run, model), capture_output=True, timeout=1200)
                assert done.returncode == 0, done.stderr.decode()[-2000:]
            med = {k: statistics.median(r[k] for r in results) for k in results[0]}
            print(f"{model:24} {med['step_s']:8.3f} {med['stop_s']:16.2f} {med['checkpoint_mb']:14.1f} "
                  f"{med['verify_s']:12.3f}   (median of {args.tries}; every requeue finished)")


if __name__ == "__main__":
    main()
