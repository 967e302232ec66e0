"""The order of an epoch: which photos each rank trains on, in which batches, with which crops.

Everything here is a pure function of ``(seed, epoch)`` and the rank, never of the worker
count or of global RNG state, so a resumed run -- mid-epoch included -- sees exactly the
crops the uninterrupted run would have seen.

* The **stream** of an epoch is permutation 0 of the ``n`` photos, then permutation 1, ...
  (each drawn from ``(seed, epoch, cycle)``): one pass over the data is one permutation.
* Rank ``r`` of ``w`` takes stream positions ``r, r + w, r + 2w, ...``: within one pass every
  photo goes to exactly one rank.
* A rank's photos are cut into **windows** of ``batch_size`` photos. Each photo of a window is
  decoded once and cut into ``crops_per_image`` (``K``) random crops, which make ``K``
  batches: batch ``j`` of a window holds crop ``j`` of each of its photos.
* Crop ``j`` of the photo at stream position ``p`` is drawn from ``(seed, epoch, p, j)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from lictrain.errors import ConfigError

log = logging.getLogger(__name__)

#: crops per epoch on the built-in photos when --epoch-size is not given (7 photos: one pass
#: would be less than one batch)
BUILTIN_EPOCH_CROPS = 192


@dataclass(frozen=True)
class Window:
    """One unit of loading work: decode ``positions``' photos, cut crops, return batches.

    ``first``/``count``: which of the window's batches to return (a resumed epoch skips some;
    the last window of an epoch may need fewer).
    """

    seed: int
    epoch: int
    photos: tuple[int, ...]  # indices into the source's index
    positions: tuple[int, ...]  # stream positions (crop seeds)
    crops_per_image: int
    batch_size: int
    first: int
    count: int


def permutation(n: int, seed: int, epoch: int, cycle: int) -> np.ndarray:
    """Permutation ``cycle`` of ``n`` photos in ``epoch`` (NumPy PCG64 from the three numbers)."""
    return np.random.default_rng([seed, epoch, cycle, 0x5EED]).permutation(n)


def stream_slice(n: int, seed: int, epoch: int, rank: int, world: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` (photo index, stream position) pairs of ``rank``'s share of the epoch."""
    positions = rank + world * np.arange(count, dtype=np.int64)
    photos = np.empty(count, dtype=np.int64)
    cycles = positions // n
    for cycle in np.unique(cycles):
        mask = cycles == cycle
        photos[mask] = permutation(n, seed, epoch, int(cycle))[positions[mask] % n]
    return photos, positions


def crop_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator of the crops of the photo at stream ``position``."""
    return np.random.default_rng([seed, epoch, position, 0xC209])


@dataclass(frozen=True)
class EpochShape:
    """How long an epoch is on each rank."""

    batches: int  # per rank
    photos: int  # per rank (decoded once each)
    full_pass: bool  # one pass over every photo (not a --epoch-size cap)
    what: str = "one pass over"

    def describe(self, n: int, world: int, crops_per_image: int, batch_size: int) -> str:
        what = self.what
        ranks = f" on each of {world} ranks" if world > 1 else ""
        return (f"epoch = {what} {n} photos -> {self.batches} batches of {batch_size}{ranks} "
                f"({crops_per_image} crop(s) per decoded photo)")


def epoch_shape(n: int, batch_size: int, crops_per_image: int, world: int, epoch_size: int | None) -> EpochShape:
    """Batches and photos per rank per epoch.

    ``epoch_size`` None: one pass (every photo once, ``crops_per_image`` crops each) -- or, for
    a set so small that one pass is less than a batch per rank, one batch per rank (photos
    cycle; logged). An integer: that many crops in all, across ranks (photos cycle when it
    exceeds one pass).

    Raises:
        ConfigError: an ``epoch_size`` of less than one batch per rank.
    """
    if epoch_size is None:
        batches = (n // world) * crops_per_image // batch_size
        if batches == 0:
            log.warning("one pass over %d training photos (%d crop(s) each) is less than one batch of %d%s: an epoch "
                        "is one batch per rank, cycling the photos; --epoch-size CROPS sets a longer one", n,
                        crops_per_image, batch_size, f" on each of {world} ranks" if world > 1 else "")
            return EpochShape(1, math.ceil(batch_size / crops_per_image), False, "one batch (cycling) of")
        return EpochShape(batches, math.ceil(batches * batch_size / crops_per_image), True)
    batches = (epoch_size // world) // batch_size
    if batches == 0:
        raise ConfigError(f"--epoch-size {epoch_size} is less than one batch of {batch_size}"
                          f"{f' for each of {world} processes' if world > 1 else ''}; raise it")
    return EpochShape(batches, math.ceil(batches * batch_size / crops_per_image), False,
                      f"--epoch-size {epoch_size} crops from")


def windows(n: int, shape: EpochShape, seed: int, epoch: int, rank: int, world: int, batch_size: int,
            crops_per_image: int, start_batch: int = 0) -> Iterator[Window]:
    """The windows of ``rank``'s epoch, starting at batch ``start_batch`` of it (lazily)."""
    photos, positions = stream_slice(n, seed, epoch, rank, world, shape.photos)
    per_window = crops_per_image  # batches of a full window
    for w, begin in enumerate(range(0, shape.photos, batch_size)):
        first_batch = w * per_window
        count = min(per_window, shape.batches - first_batch)
        if first_batch + count <= start_batch or count <= 0:
            continue
        skip = max(0, start_batch - first_batch)
        end = begin + batch_size
        yield Window(seed, epoch, tuple(int(p) for p in photos[begin:end]),
                     tuple(int(p) for p in positions[begin:end]), crops_per_image, batch_size, skip, count - skip)
