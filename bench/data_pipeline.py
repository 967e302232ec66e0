"""Data pipeline benchmark: crops/s, peak RSS and start-up, side by side on the same 2K photos.

Compared on the same synthetic 2048x1365 JPEG q90 photos (bench/synthetic_photos.py):

* ``in-memory``  -- the pre-streaming path: every photo decoded to a CHW uint8 tensor up front
  (Pillow + a layout copy), then random crops from memory;
* ``compressai`` -- a plain CompressAI-style loader: ``ImageFolder`` + torchvision
  ``RandomCrop`` (one Pillow decode per crop, float conversion in the worker);
* ``lictrain``   -- ``lictrain.data.train_loader`` on the folder (K crops per decode), and on
  WebDataset shards / decode-free ``.npy`` tiles written by ``lictrain data prepare``.

Sections (all by default)::

    python bench/data_pipeline.py [--photos 50 800] [--sections decode throughput startup memory listing]

* ``decode``: ms per photo: Pillow, Pillow + the old layout copy, simplejpeg, PNG.
* ``throughput``: 256x256 crops/s on ONE core (num_workers=0, torch threads 1): the figure a
  worker process delivers; multiply by workers.
* ``startup``: seconds from nothing to the first batch, per photo count.
* ``memory``: peak RSS (process + workers, sampled) of a real ``lictrain train`` step loop per
  photo count, and under ``torchrun`` (2 CPU ranks).
* ``listing``: start-up on 300,000 files (hard links of one photo: real files, no disk).

The synthetic folders live in a temporary directory that is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_photos import make_photos  # noqa: E402

PATCH = 256


# --------------------------------------------------------------------------- loaders compared
def in_memory_loader(folder: Path, batch: int, seed: int = 0):
    """The pre-streaming path: decode all (Pillow, CHW copy), crop from memory."""
    from PIL import Image

    images = []
    for path in sorted(folder.iterdir()):
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
        images.append(torch.from_numpy(np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1))))
    rng = np.random.default_rng(seed)

    def batches():
        while True:
            out = torch.empty((batch, 3, PATCH, PATCH), dtype=torch.uint8)
            for b in range(batch):
                im = images[int(rng.integers(len(images)))]
                top = int(rng.integers(im.shape[1] - PATCH + 1))
                left = int(rng.integers(im.shape[2] - PATCH + 1))
                out[b] = im[:, top : top + PATCH, left : left + PATCH]
            yield out
    return batches()


def compressai_loader(folder: Path, batch: int, workers: int = 0):
    """CompressAI's examples/train.py data path: ImageFolder-like dataset + RandomCrop + ToTensor."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class Folder(Dataset):
        def __init__(self) -> None:
            self.paths = sorted(folder.iterdir())
            self.transform = transforms.Compose([transforms.RandomCrop(PATCH), transforms.ToTensor()])

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.transform(Image.open(self.paths[i]).convert("RGB"))

    loader = DataLoader(Folder(), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)

    def batches():
        while True:
            yield from loader
    return batches()


def lictrain_loader(dataset: Path, batch: int, crops: int, workers: int = 0):
    from lictrain.data import LoaderSettings, train_loader

    loader = train_loader(str(dataset), LoaderSettings(PATCH, batch, crops, None, 0, workers))

    def batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1
    return batches()


def crops_per_second(batches, n_batches: int, batch: int) -> float:
    it = iter(batches)
    next(it)  # warm-up (workers start, first decode)
    started = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * batch / (time.perf_counter() - started)


# --------------------------------------------------------------------------- sections
def section_decode(folder: Path, png: Path) -> None:
    from PIL import Image
    import simplejpeg

    jpg = sorted(folder.iterdir())[0]
    data = jpg.read_bytes()

    def timed(fn, n=15):
        fn()
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - started) / n * 1000

    def pillow():
        with Image.open(jpg) as im:
            return np.asarray(im)

    def pillow_copy():
        with Image.open(jpg) as im:
            im.load()
            rgb = im.convert("RGB")
        return np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1))

    from lictrain.data.images import decode_hwc, read_image

    rows = [("Pillow decode", timed(pillow)), ("Pillow + CHW copy (old read_image)", timed(pillow_copy)),
            ("simplejpeg", timed(lambda: simplejpeg.decode_jpeg(data))),
            ("lictrain read_image (simplejpeg, CHW view)", timed(lambda: read_image(jpg))),
            ("PNG (Pillow)", timed(lambda: decode_hwc(sorted(png.iterdir())[0]), 5))]
    base = rows[0][1]
    print("\n## decode: one 2048x1365 photo (ms, ratio to Pillow)")
    print("| decoder | ms | x Pillow |\n|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")


def section_throughput(folder: Path, png: Path, shards: Path, tiles: Path, n_batches: int) -> None:
    torch.set_num_threads(1)
    b = 8
    rows = [
        ("in-memory (after decoding all)", in_memory_loader(folder, b)),
        ("compressai ImageFolder + RandomCrop", compressai_loader(folder, b)),
        ("lictrain folder, 1 crop/decode (default)", lictrain_loader(folder, b, 1)),
        ("lictrain folder, 2 crops/decode", lictrain_loader(folder, b, 2)),
        ("lictrain folder, 4 crops/decode", lictrain_loader(folder, b, 4)),
        ("lictrain shards, 4 crops/decode", lictrain_loader(shards, b, 4)),
        ("lictrain PNG folder, 1 crop/decode", lictrain_loader(png, b, 1)),
        ("lictrain PNG folder, 4 crops/decode", lictrain_loader(png, b, 4)),
        ("lictrain .npy 512 px tiles from PNG, 1 crop/tile", lictrain_loader(tiles, b, 1)),
    ]
    print(f"\n## throughput: random {PATCH}x{PATCH} crops/s on one core (num_workers=0, 1 torch thread)")
    print("| loader | crops/s per core | x compressai |\n|---|---|---|")
    results = []
    for name, batches in rows:
        n = n_batches if "PNG folder, 1" not in name else max(4, n_batches // 4)
        results.append((name, crops_per_second(batches, n, b)))
    base = results[1][1]
    for name, rate in results:
        print(f"| {name} | {rate:.0f} | {rate / base:.2f} |")


def section_startup(folders: dict[int, Path]) -> None:
    print("\n## start-up: seconds from nothing to the first batch of 8")
    print("| photos | in-memory | compressai | lictrain folder |\n|---|---|---|---|")
    for n, folder in folders.items():
        times = []
        for make in (lambda: in_memory_loader(folder, 8), lambda: compressai_loader(folder, 8),
                     lambda: lictrain_loader(folder, 8, 1)):
            started = time.perf_counter()
            next(iter(make()))
            times.append(time.perf_counter() - started)
        print(f"| {n} | {times[0]:.2f} | {times[1]:.2f} | {times[2]:.2f} |")


def _tree_memory(parent) -> int:  # type: ignore[no-untyped-def]
    """PSS of a process and its children: forked workers share the parent's pages, which RSS
    would count once per process (PSS splits each shared page between its sharers)."""
    import psutil

    total = 0
    for proc in [parent] + parent.children(recursive=True):
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return total


def _peak_rss(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """(peak MiB (PSS) of the process tree, wall seconds, exit code) of ``cmd``."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    parent = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, _tree_memory(parent))
            except psutil.Error:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode:
        print(err.decode()[-2000:], file=sys.stderr)
    return peak / 2**20, time.perf_counter() - started, proc.returncode


def _probe(kind: str, folder: str) -> None:
    """Child process of the loader-level memory rows: build a loader, take 16 batches of 8."""
    make = {"in-memory": lambda: in_memory_loader(Path(folder), 8),
            "compressai": lambda: compressai_loader(Path(folder), 8, workers=1),
            "lictrain": lambda: lictrain_loader(Path(folder), 8, 1, workers=1)}[kind]
    it = iter(make())
    for _ in range(16):
        next(it)


def section_memory(folders: dict[int, Path], tmp: Path) -> None:
    print("\n## memory, loader alone: peak memory MiB (PSS of process + workers) building a loader and taking 16 batches")
    kinds = ("in-memory", "compressai", "lictrain")
    print("| photos | " + " | ".join(kinds) + " |\n|---|---|---|---|")
    for n, folder in folders.items():
        peaks = [_peak_rss([sys.executable, __file__, "--probe", kind, str(folder)])[0] for kind in kinds]
        print(f"| {n} | " + " | ".join(f"{m:.0f}" for m in peaks) + " |")
    exe = str(Path(sys.executable).parent / "lictrain")
    # the defaults of `lictrain train` (128 px crops, batch 8) with a short epoch
    common = ["train", "--model", "bmshj2018-factorized", "--epochs", "1", "--epoch-size", "64", "--no-final-eval",
              "--wandb-mode", "disabled", "--num-workers", "1", "--device", "cpu"]
    base = _peak_rss([sys.executable, "-c", "import torch, compressai, lictrain.training.fit"])[0]
    print(f"\n## memory: peak PSS of `lictrain train` (process + its decoding worker; 8 steps of 8 crops of "
          f"128 px; importing torch + CompressAI + lictrain alone: {base:.0f} MiB)")
    print("| photos | ranks | peak MiB (all processes) | per rank MiB | wall s |\n|---|---|---|---|---|")
    rows = []
    for n, folder in folders.items():
        mib, wall, rc = _peak_rss([exe, *common, "--dataset", str(folder), "--save-path", str(tmp / f"mem{n}")])
        rows.append((n, 1, mib))
        print(f"| {n} | 1 | {mib:.0f} | {mib:.0f} | {wall:.1f}{'' if rc == 0 else f' (exit {rc})'} |")
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for n, folder in folders.items():
        mib, wall, rc = _peak_rss([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "lictrain", *common,
                                   "--dataset", str(folder), "--save-path", str(tmp / f"ddp{n}")], env)
        print(f"| {n} | 2 | {mib:.0f} | {mib / 2:.0f} | {wall:.1f}{'' if rc == 0 else f' (exit {rc})'} |")
    if len(rows) >= 2:
        print(f"\npeak memory at {rows[-1][0]} photos / at {rows[0][0]} photos: {rows[-1][2] / rows[0][2]:.3f}")


def section_listing(photos: list[Path], tmp: Path, count: int) -> None:
    folder = tmp / "many"
    folder.mkdir()
    started = time.perf_counter()
    for i in range(count):  # spread over the photos: a file may have at most 65,000 links (ext4)
        os.link(photos[i % len(photos)], folder / f"img{i:07d}.jpg")
    made = time.perf_counter() - started
    from lictrain.data.sources import resolve_files

    started = time.perf_counter()
    source = resolve_files(folder)
    listed = time.perf_counter() - started
    started = time.perf_counter()
    batch = next(iter(lictrain_loader(folder, 8, 1)))
    first = time.perf_counter() - started
    print(f"\n## listing: {count:,} files (hard links, made in {made:.1f} s)")
    print(f"index (list + split): {listed:.2f} s ({len(source.train):,} train, {len(source.test)} test); "
          f"from nothing to the first batch {tuple(batch.shape)}: {first:.2f} s")
    shutil.rmtree(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, nargs="+", default=[50, 800], help="photo counts for start-up and memory")
    p.add_argument("--sections", nargs="+", default=["decode", "throughput", "startup", "memory", "listing"])
    p.add_argument("--batches", type=int, default=24, help="timed batches per throughput row")
    p.add_argument("--listing-files", type=int, default=300_000)
    p.add_argument("--keep", type=Path, help="make the photos here and keep them (default: a temporary folder)")
    p.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        _probe(*args.probe)
        return
    tmp = Path(tempfile.mkdtemp(prefix="lictrain-bench-")) if args.keep is None else args.keep
    try:
        print(f"# data pipeline bench: {os.cpu_count()} CPU(s), torch {torch.__version__}, photos 2048x1365 JPEG q90")
        folders = {}
        for n in sorted(args.photos):
            folders[n] = tmp / f"jpg{n}"
            if not folders[n].exists():
                started = time.perf_counter()
                make_photos(folders[n], n, seed=n)
                print(f"made {n} photos in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        small = folders[min(folders)]
        png = tmp / "png"
        if not png.exists():
            make_photos(png, 16, fmt="png", seed=1)
        shards, tiles = tmp / "shards", tmp / "tiles"
        if not shards.exists():
            from lictrain.data.prepare import prepare_shards

            prepare_shards(small, shards, show_progress=False)
            prepare_shards(png, tiles, tile=512, show_progress=False)
        if "decode" in args.sections:
            section_decode(small, png)
        if "throughput" in args.sections:
            section_throughput(small, png, shards, tiles, args.batches)
        if "startup" in args.sections:
            section_startup(folders)
        if "memory" in args.sections:
            section_memory(folders, tmp)
        if "listing" in args.sections:
            section_listing(sorted(small.iterdir()), tmp, args.listing_files)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
