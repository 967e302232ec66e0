"""Training throughput (images/s) with 1 and 2 DDP processes under torchrun.

Runs ``lictrain train`` on the built-in photos under ``torchrun --nproc_per_node=K`` for each K
(same per-rank batch, so the global batch grows with K) and reads the
``train_images_per_second`` of the last epoch from ``metrics.jsonl``. On CPU each process gets
``cores // K`` threads. On a GPU machine pass ``--device cuda`` (K <= number of GPUs).

    .venv/bin/python bench/ddp_scaling.py [--procs 1 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def throughput(procs: int, device: str, epochs: int, epoch_size: int, model: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        threads = max(1, (os.cpu_count() or 2) // procs)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               "-m", "lictrain", "train", "--model", model, "--epochs", str(epochs), "--epoch-size", str(epoch_size),
               "--device", device, "--wandb-mode", "disabled", "--save_path", str(Path(tmp) / "run")]
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
        # skip the first epoch (warm-up); average the rest
        rates = [json.loads(line)["train_images_per_second"] for line in lines[1:]]
        return sum(rates) / len(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--epoch-size", type=int, default=64)
    parser.add_argument("--model", default="bmshj2018-hyperprior")
    args = parser.parse_args()
    results = {k: throughput(k, args.device, args.epochs, args.epoch_size, args.model) for k in args.procs}
    base = results[args.procs[0]]
    print(f"{args.model}, per-rank batch 8 x 128^2, device {args.device}")
    for k, rate in results.items():
        print(f"{k} process(es): {rate:7.2f} images/s   speed-up {rate / base:.2f}x")


if __name__ == "__main__":
    main()
