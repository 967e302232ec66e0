"""Train/test splits and crop datasets over in-memory images."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from lictrain.data.builtin import load_builtin
from lictrain.data.images import NamedImage, list_images, load_images
from lictrain.errors import DataError

log = logging.getLogger(__name__)

#: fraction of a flat folder that becomes the test split
FLAT_TEST_FRACTION = 0.1


@dataclass(frozen=True)
class ImageSplits:
    """Decoded train and test images and where they came from."""

    train: list[NamedImage]
    test: list[NamedImage]
    source: str


def split_flat(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Deterministic 90/10 split of a flat folder: every 10th file (by name) is a test image.

    Striding, rather than taking the tail, spreads the test set over the whole name range
    (folders are often named by scene or date). A folder with fewer than 2 images cannot be
    split and raises.
    """
    if len(paths) < 2:
        raise DataError(
            f"a flat image folder needs at least 2 images to split into train and test, found {len(paths)}; "
            "add images or use the DIR/train + DIR/test layout"
        )
    stride = round(1 / FLAT_TEST_FRACTION)
    test = [p for i, p in enumerate(paths) if i % stride == stride - 1] or [paths[-1]]
    train = [p for p in paths if p not in test]
    return train, test


def load_splits(dataset: str | Path | None) -> ImageSplits:
    """Load train/test images from ``dataset`` or, when it is ``None``, the built-in photos.

    ``dataset`` is either CompressAI's layout (``DIR/train/``, ``DIR/test/``) or a flat folder
    of images, split 90/10 by :func:`split_flat`.

    Raises:
        DataError: missing folder, no images, or no readable image on a side.
    """
    if dataset is None:
        return ImageSplits(load_builtin("train"), load_builtin("test"), "built-in scikit-image photos")
    root = Path(dataset).expanduser()
    if not root.exists():
        raise DataError(f"dataset folder not found: {root}; pass an existing folder to --dataset")
    if not root.is_dir():
        raise DataError(f"--dataset must be a folder of images, got a file: {root}")
    if (root / "train").is_dir():
        train_paths = list_images(root / "train")
        test_dir = root / "test"
        if not test_dir.is_dir():
            raise DataError(f"{root} has train/ but no test/ folder; add DIR/test/ with a few images")
        test_paths = list_images(test_dir)
        if not train_paths or not test_paths:
            empty = root / "train" if not train_paths else test_dir
            raise DataError(f"no images (png, jpg, webp, ...) in {empty}")
    else:
        paths = list_images(root)
        if not paths:
            raise DataError(f"no images (png, jpg, webp, ...) in {root}; point --dataset at a folder of images")
        train_paths, test_paths = split_flat(paths)
    return ImageSplits(load_images(train_paths, what="train"), load_images(test_paths, what="test"), str(root))


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


class RandomCropDataset(Dataset):
    """Random ``size``x``size`` crops with random horizontal/vertical flips, as float in [0, 1].

    An epoch holds ``samples_per_epoch`` crops; sample ``i`` uses image ``i mod n`` so each image
    is visited equally. The crop position and flips of sample ``i`` depend only on
    ``(seed, epoch, i)`` (see :meth:`set_epoch`), not on worker count or global RNG state, so
    a seeded run, and a resumed one, sees the same crops.
    """

    def __init__(self, images: list[NamedImage], size: int, samples_per_epoch: int) -> None:
        self.images = keep_large_enough(images, size, what="train")
        self.size = size
        self.samples_per_epoch = samples_per_epoch
        self._base_seed = 0

    def set_epoch(self, seed: int, epoch: int) -> None:
        """Fix the randomness of the coming epoch."""
        self._base_seed = (seed * 1_000_003 + epoch) * 10_000_019

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> torch.Tensor:
        pixels = self.images[index % len(self.images)].pixels
        _, height, width = pixels.shape
        rng = torch.Generator().manual_seed((self._base_seed + index) % 2**63)
        top = int(torch.randint(0, height - self.size + 1, (1,), generator=rng))
        left = int(torch.randint(0, width - self.size + 1, (1,), generator=rng))
        crop = pixels[:, top : top + self.size, left : left + self.size]
        flips = torch.rand(2, generator=rng)
        if flips[0] < 0.5:
            crop = crop.flip(-1)
        if flips[1] < 0.5:
            crop = crop.flip(-2)
        return crop.float().div_(255.0)


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
