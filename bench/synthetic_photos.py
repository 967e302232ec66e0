"""Synthetic "2K photos" for data-pipeline tests and benchmarks (no download).

Each photo is a mosaic of tiles cut from scikit-image's bundled colour photographs, shifted per
photo, plus Gaussian grain, saved as JPEG q90 (or PNG): content and entropy like a real camera
photo, so decode costs are realistic.

    python bench/synthetic_photos.py OUT --count 800 [--width 2048 --height 1365 --format jpg]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _pool() -> list[np.ndarray]:
    import skimage.data as sk

    photos = [sk.astronaut(), sk.coffee(), sk.chelsea(), sk.rocket(), sk.immunohistochemistry()]
    return [p[..., :3] for p in photos]


def make_photos(folder: Path, count: int, width: int = 2048, height: int = 1365, fmt: str = "jpg",
                seed: int = 0, quality: int = 90) -> list[Path]:
    """Write ``count`` photos ``photo{i:06d}.{fmt}`` into ``folder``; return their paths."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pool = _pool()
    rng = np.random.default_rng(seed)
    paths = []
    tile = 256
    for i in range(count):
        canvas = np.empty((height, width, 3), dtype=np.uint8)
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                src = pool[int(rng.integers(len(pool)))]
                y = int(rng.integers(0, src.shape[0] - tile + 1))
                x = int(rng.integers(0, src.shape[1] - tile + 1))
                h, w = min(tile, height - top), min(tile, width - left)
                canvas[top : top + h, left : left + w] = src[y : y + h, x : x + w]
        grain = rng.normal(0, 4, size=(height, width, 1)).astype(np.int16)
        canvas = np.clip(canvas.astype(np.int16) + grain, 0, 255).astype(np.uint8)
        path = folder / f"photo{i:06d}.{fmt}"
        if fmt == "jpg":
            Image.fromarray(canvas).save(path, quality=quality)
        else:
            Image.fromarray(canvas).save(path, compress_level=6)
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--height", type=int, default=1365)
    p.add_argument("--format", default="jpg", choices=("jpg", "png"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    make_photos(a.out, a.count, a.width, a.height, a.format, a.seed)


if __name__ == "__main__":
    main()
