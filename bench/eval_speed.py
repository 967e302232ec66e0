"""``lictrain eval`` vs CompressAI's ``eval_model`` on the same checkpoint, images and device.

Both tools run as the user runs them (a fresh process each: imports, model load, update, every
image encoded to real bitstreams and decoded, metrics), interleaved ``--repeats`` times so that a
shared machine's load falls on both alike; the figure is the median wall time of each and their
ratio (goal: lictrain <= 1.2x). lictrain runs with its defaults (keeps the ``.lic`` files and
writes JSON + CSV) and once more with ``--check-decode --estimate`` (the optional passes).

The checkpoint: ``bmshj2018-factorized`` quality 1 after a short lictrain run, saved in
CompressAI's layout (``{"state_dict": ...}``) so that both tools read the same file. The images:
``--images`` photos of 768x512 cut from the built-in photos (PNG), written to a temporary folder
and deleted afterwards.

    .venv/bin/python bench/eval_speed.py [--images 24] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ARCH = "bmshj2018-factorized"


def write_photos(folder: Path, count: int, size: tuple[int, int] = (768, 512)) -> None:
    """``count`` PNG photos of ``size`` (w, h): crops (and flips) of the built-in photos."""
    from lictrain.data import load_builtin

    photos = [im.pixels.permute(1, 2, 0).numpy() for im in load_builtin("train") + load_builtin("test")]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    width, height = size
    for i in range(count):
        photo = photos[i % len(photos)]
        if photo.shape[0] < height or photo.shape[1] < width:  # small photos: tile them up
            reps = (-(-height // photo.shape[0]), -(-width // photo.shape[1]), 1)
            photo = np.tile(photo, reps)
        top = int(rng.integers(0, photo.shape[0] - height + 1))
        left = int(rng.integers(0, photo.shape[1] - width + 1))
        crop = photo[top:top + height, left:left + width]
        Image.fromarray(np.ascontiguousarray(crop[:, ::-1] if i % 2 else crop)).save(folder / f"img{i:02d}.png")


def make_checkpoint(work: Path) -> Path:
    """A briefly trained bmshj2018-factorized, saved as CompressAI's examples/train.py saves it."""
    from lictrain.checkpoint import load_checkpoint, resolve_checkpoint
    from lictrain.config import TrainConfig
    from lictrain.training.fit import fit

    run = work / "run"
    fit(TrainConfig(model=ARCH, quality=1, epochs=2, epoch_size=64, lr=1e-3, save_path=str(run),
                    wandb_mode="disabled", final_eval=False), show_progress=False)
    state = load_checkpoint(resolve_checkpoint(run))["model_state"]
    path = work / "checkpoint.pth.tar"
    torch.save({"epoch": 1, "state_dict": state}, path)
    return path


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_photos(work / "images", args.images)
        ckpt = make_checkpoint(work)
        cuda = ["--cuda"] if args.device == "cuda" else []
        tools = {
            "compressai eval_model": [python, "-m", "compressai.utils.eval_model", "checkpoint", str(work / "images"),
                                      "-a", ARCH, "-p", str(ckpt), *cuda],
            "lictrain eval": [python, "-m", "lictrain", "eval", str(ckpt), "--model", ARCH, "--quality", "1",
                              "--dataset", str(work / "images"), "--device", args.device, "--quiet"],
            "lictrain eval --check-decode --estimate": [
                python, "-m", "lictrain", "eval", str(ckpt), "--model", ARCH, "--quality", "1", "--dataset",
                str(work / "images"), "--device", args.device, "--quiet", "--check-decode", "--estimate"],
        }
        times: dict[str, list[float]] = {name: [] for name in tools}
        for repeat in range(args.repeats):
            for name, command in tools.items():
                if name.startswith("lictrain"):  # a fresh output folder each time (no --force needed)
                    command = [*command, "--out-dir", str(work / f"out-{repeat}-{len(times[name])}-{hash(name)}")]
                times[name].append(timed(command))
                print(f"repeat {repeat + 1}: {name}: {times[name][-1]:.1f} s", flush=True)
    base = statistics.median(times["compressai eval_model"])
    print(f"\n{ARCH} q1, {args.images} images of 768x512, {args.device}, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats} interleaved runs (whole command: imports, load, every image)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:42s} {median:7.1f} s   {median / base:5.2f}x   (runs: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
