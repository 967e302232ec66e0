"""Finding and decoding image files into in-memory uint8 tensors.

Images are decoded once, up front, and kept as ``uint8`` CHW tensors: the data sets learned
codecs train on at CPU scale fit in memory, and decoding per step would dominate step time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lictrain.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm"})


@dataclass(frozen=True)
class NamedImage:
    """A decoded RGB image: ``pixels`` is a ``uint8`` tensor of shape ``(3, H, W)``."""

    name: str
    pixels: torch.Tensor

    @property
    def height(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[2])


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (deterministic order)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def array_to_chw(array: np.ndarray) -> torch.Tensor:
    """HWC (or HW grey) uint8 array -> contiguous (3, H, W) uint8 tensor."""
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.shape[-1] == 4:
        array = array[..., :3]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def read_image(path: Path) -> torch.Tensor:
    """Decode one image file to a (3, H, W) uint8 tensor (any mode converted to RGB).

    Raises:
        DataError: the file is missing, truncated or not an image.
    """
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError(f"image not found: {path}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image {path} ({exc}); remove or replace the file") from exc
    return array_to_chw(np.asarray(rgb, dtype=np.uint8))


def load_images(paths: list[Path], *, what: str) -> list[NamedImage]:
    """Decode ``paths``; an unreadable file among good ones is skipped with a warning.

    Raises:
        DataError: no path could be decoded.
    """
    images: list[NamedImage] = []
    for path in paths:
        try:
            images.append(NamedImage(path.name, read_image(path)))
        except DataError as exc:
            log.warning("skipping %s: %s", path, exc)
    if not images:
        raise DataError(f"no readable images in the {what} set ({len(paths)} file(s) failed to decode)")
    return images
