"""Whole-image splits decoded into memory, and the test split's centre crops.

Training never decodes a split up front (see :mod:`lictrain.data.stream`); :func:`load_splits`
is for small sets and tools that want every image as a tensor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from lictrain.data.builtin import load_builtin
from lictrain.data.images import NamedImage, load_images
from lictrain.data.sources import resolve_files
from lictrain.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSplits:
    """Decoded train and test images and where they came from."""

    train: list[NamedImage]
    test: list[NamedImage]
    source: str


def load_splits(dataset: str | Path | None) -> ImageSplits:
    """Decode the train and test images of ``dataset`` (``None``: the built-in photos).

    ``dataset`` is a folder (CompressAI's layout or flat, split 90/10) or a file list; see
    :func:`lictrain.data.sources.resolve_files`.

    Raises:
        DataError: missing folder, no images, or no readable image on a side.
    """
    if dataset is None:
        return ImageSplits(load_builtin("train"), load_builtin("test"), "built-in scikit-image photos")
    source = resolve_files(dataset)
    return ImageSplits(load_images(list(source.train), what="train"), load_images(list(source.test), what="test"),
                       source.description)


def keep_large_enough(images: list[NamedImage], size: int, *, what: str) -> list[NamedImage]:
    """Drop (with a warning) images smaller than ``size`` on either side.

    Raises:
        DataError: every image is smaller than the crop.
    """
    kept = [im for im in images if im.height >= size and im.width >= size]
    for im in images:
        if im not in kept:
            log.warning("%s image %s (%dx%d) is smaller than the %d px crop; not used", what, im.name, im.width, im.height, size)
    if not kept:
        largest = max(min(im.height, im.width) for im in images)
        raise DataError(
            f"the {size} px {what} crop is larger than every {what} image (largest short side {largest} px); "
            f"use a smaller --{'patch-size' if what == 'train' else 'test-patch-size'}"
        )
    return kept


class CenterCropDataset(Dataset):
    """The centre ``size``x``size`` crop of each image, as float in [0, 1] (test split)."""

    def __init__(self, images: list[NamedImage], size: int) -> None:
        self.images = keep_large_enough(images, size, what="test")
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        pixels = self.images[index].pixels
        _, height, width = pixels.shape
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return pixels[:, top : top + self.size, left : left + self.size].float().div_(255.0)
