"""Benchmark CheckpointManager: blocking time per save, and disk used by a long run.

1. Blocking time. A model-sized state (CompressAI ``bmshj2018_hyperprior``, quality 3, its
   ``state_dict`` plus an Adam state after one step: about 5.1M parameters, 61 MB per
   checkpoint) is saved ``--reps`` times with ``CheckpointManager.save_checkpoint``
   (``async_save=True``, fsync on) and with a bare ``torch.save`` of the same state to the same
   directory. We time what the training loop waits for (the manager's background write is
   waited for outside the timer) and print the median and the ratio (goal: <= 1.5x).
2. Disk. A 3000-epoch run with ``keep_last_n=3, keep_best=3`` and a noisy decaying loss
   saves a small state every epoch; we count the bytes left on disk (and the peak) against
   keeping every epoch's checkpoint, and project both to the model-sized checkpoint.

Usage::

    python bench/checkpoint_save.py [--reps 7] [--epochs 3000] [--device cpu|cuda] [--dir DIR]

``--dir`` is where the files go (default: a temporary folder under ``./outputs``, removed at
the end); put it on the disk your runs write to. Runs in well under two minutes on a laptop.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from lictrain.checkpoint import CheckpointManager, load_checkpoint


def model_sized_state(quality: int = 3, device: str = "cpu") -> tuple[dict, dict]:
    """``(model.state_dict(), adam.state_dict())`` of bmshj2018_hyperprior after one step."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from compressai.zoo import bmshj2018_hyperprior

        model = bmshj2018_hyperprior(quality=quality, pretrained=False).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen).to(device)
    opt.step()
    return model.state_dict(), opt.state_dict()


def _nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def bench_blocking(root: Path, reps: int, device: str = "cpu") -> dict[str, float]:
    model_state, opt_state = model_sized_state(device=device)
    mb = (_nbytes(model_state) + _nbytes(opt_state)) / 1e6
    n_params = sum(v.numel() for v in model_state.values())
    print(f"state: bmshj2018_hyperprior q3 on {device}, {n_params / 1e6:.2f}M model values, "
          f"{mb:.1f} MB with Adam state")

    bare_dir = root / "bare"
    bare_dir.mkdir()
    bare, ours, durable, sync, fresh = [], [], [], [], []
    with CheckpointManager(root / "ours", keep_last_n=2, keep_best=1, async_save=True,
                           fsync=True) as cm, \
         CheckpointManager(root / "fresh", keep_last_n=2, keep_best=1, async_save=True,
                           fsync=True, reuse_buffers=False) as cm_fresh, \
         CheckpointManager(root / "sync", keep_last_n=2, keep_best=1, async_save=False,
                           fsync=True) as cm_sync:
        for i in range(reps + 1):  # the first round warms caches and is dropped
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            torch.save({"epoch": i, "model_state": model_state, "optimizer_state": opt_state,
                        "metric_value": 1.0}, bare_dir / f"bare_{i % 2}.pt")
            t1 = time.perf_counter()

            t2 = time.perf_counter()
            cm.save_checkpoint(i, model_state, opt_state, metric_value=1.0 / (i + 1))
            t3 = time.perf_counter()
            cm.wait()  # outside the timer: training would be running meanwhile
            t4 = time.perf_counter()

            torch.save({"epoch": i, "model_state": model_state, "optimizer_state": opt_state,
                        "metric_value": 1.0}, bare_dir / f"bare_{i % 2}.pt")
            t5 = time.perf_counter()
            cm_fresh.save_checkpoint(i, model_state, opt_state, metric_value=1.0 / (i + 1))
            t6 = time.perf_counter()
            cm_fresh.wait()

            t7 = time.perf_counter()
            cm_sync.save_checkpoint(i, model_state, opt_state, metric_value=1.0 / (i + 1))
            t8 = time.perf_counter()
            if i:
                bare.extend([t1 - t0, t5 - t4])
                ours.append(t3 - t2)
                durable.append(t4 - t2)
                fresh.append(t6 - t5)
                sync.append(t8 - t7)
        ck = load_checkpoint(cm.latest_checkpoint)
        assert torch.equal(ck["model_state"]["g_a.0.weight"], model_state["g_a.0.weight"].cpu())

    med = {k: statistics.median(v) for k, v in
           [("bare", bare), ("ours", ours), ("durable", durable), ("sync", sync),
            ("fresh", fresh)]}
    print(f"blocking time, median of {reps}:")
    print(f"  bare torch.save (no fsync)             {med['bare'] * 1e3:8.1f} ms")
    print(f"  save_checkpoint async (fsync on)       {med['ours'] * 1e3:8.1f} ms   "
          f"ratio {med['ours'] / med['bare']:.2f}x (goal <= 1.5x)")
    print(f"    ... until durable (write+fsync+tracking+retention) {med['durable'] * 1e3:8.1f} ms, "
          "in the background")
    print(f"  same, reuse_buffers=False              {med['fresh'] * 1e3:8.1f} ms   "
          f"ratio {med['fresh'] / med['bare']:.2f}x (copy into freshly allocated memory)")
    print(f"  save_checkpoint sync (fsync on)        {med['sync'] * 1e3:8.1f} ms   "
          f"ratio {med['sync'] / med['bare']:.2f}x")
    med["mb"] = mb
    med["model_mb"] = _nbytes(model_state) / 1e6
    return med


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.is_file())


def bench_disk(root: Path, epochs: int, full_mb: float, model_mb: float) -> None:
    rnd = random.Random(0)
    state = {"w": torch.randn(1024), "b": torch.randn(64)}
    opt = {"state": {0: {"exp_avg": torch.randn(1024), "exp_avg_sq": torch.rand(1024)}},
           "param_groups": [{"lr": 1e-4, "params": [0]}]}
    d = root / "disk"
    every_epoch = 0
    peak = 0
    t0 = time.perf_counter()
    with CheckpointManager(d, keep_last_n=3, keep_best=3, async_save=False, fsync=False) as cm:
        for e in range(epochs):
            loss = 1.0 + 4.0 * math.exp(-5.0 * e / epochs) + rnd.gauss(0.0, 0.05)
            path = cm.save_checkpoint(e, state, opt, metric_value=loss)
            every_epoch += path.stat().st_size
            peak = max(peak, _dir_bytes(d))
        n_files = len(cm.last_checkpoints) + len(
            [p for p in cm.best_checkpoints if p not in cm.last_checkpoints])
    kept = _dir_bytes(d)
    elapsed = time.perf_counter() - t0
    print(f"disk, {epochs}-epoch run, keep_last_n=3 keep_best=3 ({elapsed:.1f} s):")
    print(f"  every epoch kept: {every_epoch / 1e6:9.2f} MB ({epochs} files)")
    print(f"  CheckpointManager: {kept / 1e6:8.3f} MB at the end ({n_files} checkpoints + "
          f"tracking file), peak {peak / 1e6:.3f} MB")
    print(f"  disk saved: {100 * (1 - kept / every_epoch):.2f}% at the end, "
          f"{100 * (1 - peak / every_epoch):.2f}% at peak (guide claims 90%)")
    print(f"  projected to the {full_mb:.0f} MB checkpoint ({model_mb:.0f} MB weights only): "
          f"{epochs * full_mb / 1e3:.1f} GB vs {6 * full_mb / 1e3:.2f} GB; with "
          f"best_weights_only {(3 * full_mb + 3 * model_mb) / 1e3:.2f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=3000)
    ap.add_argument("--device", default="cpu",
                    help="where the model and Adam state live, e.g. cuda (default: cpu)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where to write (default: a temporary folder under ./outputs)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    base = args.dir or Path("outputs")
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench_ckpt_", dir=base))
    try:
        med = bench_blocking(root, args.reps, args.device)
        bench_disk(root, args.epochs, med["mb"], med["model_mb"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
