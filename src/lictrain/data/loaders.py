"""``--dataset`` to loaders: the training stream, the test centre crops, the evaluation photos.

One entry point per use, all reading the same sources (:mod:`lictrain.data.sources`,
:mod:`lictrain.data.shards`), so nothing is decoded twice for one purpose: the training set is
never decoded up front (workers decode per window), the test split is decoded once and only its
centre crops are kept, and the closing evaluation reads the test photos alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from lictrain.data.builtin import load_builtin
from lictrain.data.images import NamedImage, decode_hwc, hwc_to_chw, list_images
from lictrain.data.order import BUILTIN_EPOCH_CROPS
from lictrain.data.shards import ShardLoader, decode_sample, read_index, shard_samples, shard_test_folder
from lictrain.data.sources import is_shard_dataset, resolve_files
from lictrain.data.stream import CropLoader, FilePhotos, MemoryPhotos, first_usable
from lictrain.errors import DataError

log = logging.getLogger(__name__)

#: decoding processes per rank with --num-workers auto (files and shards; 0 for the built-in set)
MAX_AUTO_WORKERS = 4


@dataclass(frozen=True)
class LoaderSettings:
    """How the training stream is cut (the data flags of ``lictrain train``)."""

    patch_size: int
    batch_size: int
    crops_per_image: int = 1
    epoch_size: int | None = None
    seed: int = 0
    num_workers: int | None = None  # None: auto
    pin_memory: bool = False


def auto_workers(dataset: str | None, local_world_size: int = 1) -> int:
    """Decoding workers per rank: 0 for the in-memory built-in photos, else the cores left per
    rank after its training process (at most :data:`MAX_AUTO_WORKERS`)."""
    if dataset is None:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_AUTO_WORKERS, cores // max(1, local_world_size) - 1))


def train_loader(dataset: str | None, settings: LoaderSettings, rank: int = 0, world_size: int = 1,
                 local_world_size: int = 1) -> CropLoader | ShardLoader:
    """The training stream of ``dataset`` for this rank.

    Raises:
        DataError: missing or unusable data (no usable photo at all).
        ConfigError: an epoch of less than one batch.
    """
    workers = settings.num_workers if settings.num_workers is not None else auto_workers(dataset, local_world_size)
    common = dict(patch_size=settings.patch_size, batch_size=settings.batch_size,
                  crops_per_image=settings.crops_per_image, seed=settings.seed, rank=rank, world_size=world_size,
                  num_workers=workers, pin_memory=settings.pin_memory)
    if dataset is None:
        photos = MemoryPhotos(load_builtin("train"))
        first_usable(photos, settings.patch_size)
        epoch = settings.epoch_size if settings.epoch_size is not None else BUILTIN_EPOCH_CROPS
        return CropLoader(photos, epoch_size=epoch, **common)  # type: ignore[arg-type]
    if is_shard_dataset(dataset):
        return ShardLoader(read_index(str(dataset)), epoch_size=settings.epoch_size, **common)  # type: ignore[arg-type]
    source = resolve_files(dataset)
    photos = FilePhotos(source.train)
    first_usable(photos, settings.patch_size)
    return CropLoader(photos, epoch_size=settings.epoch_size, **common)  # type: ignore[arg-type]


def test_photos(dataset: str | os.PathLike[str] | None) -> Iterator[tuple[str, np.ndarray]]:
    """The test photos of ``dataset`` as (name, HWC uint8 array), decoded one at a time.

    Built-in: chelsea and coffee. Files: the test split. Shards: their local ``test/`` folder,
    or (a URL) the ``test.tar`` shard next to ``index.json``. Unreadable photos are skipped
    with a warning.

    Raises:
        DataError: missing data or no test photos.
    """
    if dataset is None:
        for im in load_builtin("test"):
            yield im.name, im.pixels.permute(1, 2, 0).numpy()
        return
    if is_shard_dataset(dataset):
        index = read_index(str(dataset))
        folder = shard_test_folder(index)
        if folder is not None:
            yield from _decoded(list_images(folder))
            return
        if index.test_shard is None:
            raise DataError(f"the shards at {dataset} have no test photos; rewrite them with `lictrain data prepare`")
        for sample in shard_samples(index.test_shard):
            try:
                name = sample.get("name.txt", sample.get("__key__"))
                name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
                yield name, decode_sample(sample)
            except DataError as exc:
                log.warning("skipping test photo %s: %s", sample.get("__key__"), exc)
        return
    yield from _decoded(resolve_files(dataset).test)


def load_test_images(dataset: str | None) -> list[NamedImage]:
    """The whole test photos (for the closing evaluation and ``eval``).

    Raises:
        DataError: no readable test photo.
    """
    images = [NamedImage(name, hwc_to_chw(array)) for name, array in test_photos(dataset)]
    if not images:
        raise DataError(f"no readable test photo in {dataset}; add readable images to its test split")
    return images


def load_test_crops(dataset: str | None, size: int) -> list[NamedImage]:
    """Centre ``size`` x ``size`` crops of the test photos, decoded once (the photos themselves
    are not kept). Photos smaller than the crop are left out with a warning.

    Raises:
        DataError: no readable test photo, or none as large as the crop.
    """
    key = _crops_key(dataset, size)
    if key in _TEST_CROPS:  # sweep trials in one process share the test split's decode
        return list(_TEST_CROPS[key][0])
    kept, pixels = _centre_crops(dataset, size)
    _TEST_CROPS.clear()  # one data set at a time: a bounded cache
    _TEST_CROPS[key] = (tuple(kept), pixels)
    return kept


def test_photo_pixels(dataset: str | None, size: int) -> int:
    """Pixels of all the (whole) test photos, noted while :func:`load_test_crops` decoded them:
    what the closing evaluation will code."""
    load_test_crops(dataset, size)
    return _TEST_CROPS[_crops_key(dataset, size)][1]


def _crops_key(dataset: str | None, size: int) -> tuple[str, int]:
    return (str(Path(dataset).expanduser().resolve()) if dataset is not None and "://" not in str(dataset)
            else str(dataset), size)


_TEST_CROPS: dict[tuple[str, int], tuple[tuple[NamedImage, ...], int]] = {}


def _centre_crops(dataset: str | None, size: int) -> tuple[list[NamedImage], int]:
    kept, short_sides, pixels = [], [], 0
    for name, array in test_photos(dataset):
        height, width = array.shape[:2]
        short_sides.append(min(height, width))
        pixels += height * width
        if min(height, width) < size:
            log.warning("test photo %s (%dx%d) is smaller than the %d px test crop; not used", name, width, height, size)
            continue
        top, left = (height - size) // 2, (width - size) // 2
        crop = np.ascontiguousarray(array[top : top + size, left : left + size])  # a copy: the photo is freed
        kept.append(NamedImage(name, hwc_to_chw(crop).contiguous()))
    if not short_sides:
        raise DataError(f"no readable test photo in {dataset}; add readable images to its test split")
    if not kept:
        raise DataError(f"the {size} px test crop is larger than every test photo (largest short side "
                        f"{max(short_sides)} px); use a smaller --test-patch-size")
    return kept, pixels


def _decoded(paths: Sequence[str | Path]) -> Iterator[tuple[str, np.ndarray]]:
    for path in paths:
        try:
            yield Path(path).name, decode_hwc(path)
        except DataError as exc:
            log.warning("skipping test photo %s: %s", path, exc)
