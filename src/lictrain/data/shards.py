"""Prepared shards: WebDataset tar files for data that outgrows one disk or lives in object storage.

Why WebDataset: a shard is a plain POSIX tar of the original files (``tar tf`` lists it, any
tool writes it), read strictly sequentially, so it streams from local disk, HTTP(S), or object
stores through ``pipe:`` commands (``pipe:aws s3 cp s3://bucket/train-000000.tar -``) with
no server, cache directory or shared memory; and its unit of distribution, the shard, matches
how we split an epoch over ranks and workers. (MosaicML Streaming and litdata add resumable
sample-level shuffles, but bring their own formats, local caches and shared-memory state; our
epoch order is already deterministic and resumable, so we need only the reader.)

Layout written by ``lictrain data prepare SRC OUT`` (:func:`prepare_shards`)::

    OUT/index.json          {"format": "lictrain-shards", "train": [{"url", "samples"}...], ...}
    OUT/train-000000.tar    samples: <key>.<jpg|png|webp|...> (the original bytes) or, with
    OUT/train-000001.tar    --tile S, <key>.npy / <key>.png tiles of S x S pixels
    OUT/test/               the test photos as files (small; the test split and the closing
                            evaluation read them whole)

An epoch (:class:`ShardStream`): the shards are permuted from ``(seed, epoch)``; rank ``r``
takes every ``world``-th, worker ``w`` of it every ``workers``-th; a worker reads one shard at
a time, visits its samples in a seeded order, and cuts ``crops_per_image`` crops from each.
Every sample is on exactly one rank and worker per epoch; each rank stops at the same number of
batches (the smallest share), so DDP ranks stay in step.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lictrain.data.images import decode_hwc
from lictrain.data.order import crop_rng, permutation
from lictrain.data.stream import cut_crops, end_workers_at_exit, from_worker, ignore_stop_signals
from lictrain.errors import ConfigError, DataError

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
FORMAT = "lictrain-shards"
#: file extensions a shard sample may hold its image under
SAMPLE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm", "npy")


@dataclass(frozen=True)
class Shard:
    url: str
    samples: int


@dataclass(frozen=True)
class ShardIndex:
    """What ``index.json`` says: the training shards and where the test photos are."""

    base: str  # folder or URL prefix of the shards
    shards: tuple[Shard, ...]
    test: str | None  # folder (or URL prefix) of the test photos
    tile: int | None
    test_shard: str | None = None  # the test photos as one tar (read when the folder is remote)

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)


def _join(base: str, name: str) -> str:
    if "://" in name or name.startswith(("/", "pipe:")):
        return name
    return base.rstrip("/") + "/" + name if "://" in base else os.path.join(base, name)


def read_index(dataset: str) -> ShardIndex:
    """Read ``<dataset>/index.json`` (a local folder, or a URL that webdataset can open).

    Raises:
        DataError: missing, unreadable or malformed index.
    """
    text = str(dataset)
    if text.endswith(INDEX_NAME):
        text = text[: -len(INDEX_NAME)].rstrip("/") or "."
    base = text if "://" in text else str(Path(text).expanduser())
    where = _join(base, INDEX_NAME)
    try:
        if "://" in base:
            from webdataset.gopen import gopen

            with gopen(where, "rb") as fh:
                raw = fh.read()
        else:
            raw = Path(where).read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the shard index {where} ({exc}); write shards with `lictrain data prepare SRC OUT`") from exc
    try:
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {FORMAT!r}")
        shards = tuple(Shard(_join(base, str(s["url"])), int(s["samples"])) for s in data["train"])
        if not shards or any(s.samples < 0 for s in shards):
            raise ValueError("no training shards")
        test, test_shard, tile = data.get("test"), data.get("test_shard"), data.get("tile")
        return ShardIndex(base, shards, _join(base, str(test)) if test else None, int(tile) if tile else None,
                          _join(base, str(test_shard)) if test_shard else None)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where} is not a lictrain shard index ({exc}); rewrite it with `lictrain data prepare`") from exc


def decode_sample(sample: dict[str, Any]) -> np.ndarray:
    """The image of a shard sample as an (H, W, 3) uint8 array.

    Raises:
        DataError: no image field, or one that does not decode.
    """
    key = sample.get("__key__", "?")
    for ext in SAMPLE_EXTS:
        if ext in sample:
            data = sample[ext]
            if ext == "npy":
                try:
                    array = np.load(io.BytesIO(data), allow_pickle=False)
                except (ValueError, OSError) as exc:
                    raise DataError(f"cannot decode tile {key}.npy ({exc})") from exc
                if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                    raise DataError(f"tile {key}.npy is {array.dtype} {array.shape}, not (H, W, 3) uint8")
                return array
            return decode_hwc(data, name=f"{key}.{ext}")
    raise DataError(f"shard sample {key} holds no image ({', '.join(k for k in sample if not k.startswith('__'))})")


def shard_samples(url: str) -> Iterator[dict[str, Any]]:
    """The samples (``{"__key__": ..., "<ext>": bytes}``) of one tar shard, local or URL.

    Raises:
        DataError: a shard that cannot be opened or read.
    """
    from webdataset.tariterators import tarfile_samples

    try:
        yield from tarfile_samples([{"url": url}])
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read shard {url} ({exc}); check the path/URL or rewrite the shards") from exc


def worker_shards(index: ShardIndex, seed: int, epoch: int, rank: int, world: int, worker: int,
                  workers: int) -> list[int]:
    """Shard numbers read by ``worker`` of ``rank`` in ``epoch``."""
    order = permutation(len(index.shards), seed, epoch, 0)
    return [int(s) for s in order[rank::world][worker::workers]]


def worker_batches(index: ShardIndex, shards: list[int], crops_per_image: int, batch_size: int) -> int:
    return sum(index.shards[s].samples for s in shards) * crops_per_image // batch_size


def round_robin_skips(counts: list[int], start: int) -> list[int]:
    """Batches each worker has delivered after ``start`` batches of DataLoader's in-order round
    robin (worker 0, 1, ..., skipping workers that have run out)."""
    return _round_robin(counts, start)[0]


def _round_robin(counts: list[int], start: int) -> tuple[list[int], int]:
    """(batches per worker after ``start`` deliveries, the worker that delivers next)."""
    done = [0] * len(counts)
    delivered, last = 0, -1
    while delivered < start:
        progressed = False
        for w, count in enumerate(counts):
            if delivered == start:
                break
            if done[w] < count:
                done[w] += 1
                delivered, last, progressed = delivered + 1, w, True
        if not progressed:
            break
    return done, (last + 1) % max(1, len(counts))


class ShardStream(IterableDataset):
    """Batches of random crops from shards; the epoch, start batch and limits are set by
    :class:`ShardLoader` before each iteration (workers are started anew each epoch)."""

    def __init__(self, index: ShardIndex, patch_size: int, batch_size: int, crops_per_image: int, seed: int,
                 rank: int, world: int) -> None:
        self.index, self.patch_size, self.batch_size = index, patch_size, batch_size
        self.crops_per_image, self.seed, self.rank, self.world = crops_per_image, seed, rank, world
        self.epoch = 0
        self.skips: list[int] = [0]
        self.limits: list[int] = [0]
        # DataLoader always asks worker 0 first; a resumed epoch may be due at another worker, so
        # DataLoader worker i plays the role of worker (i + rotation) mod workers
        self.rotation = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (worker + self.rotation) % workers
        shards = worker_shards(self.index, self.seed, self.epoch, self.rank, self.world, worker, workers)
        skip_crops = self.skips[worker] * self.batch_size
        limit = self.limits[worker] - self.skips[worker]  # batches still to deliver this epoch
        size, k, b = self.patch_size, self.crops_per_image, self.batch_size
        batch = np.empty((b, 3, size, size), dtype=np.uint8)
        filled = produced = crop_number = 0
        last_good: np.ndarray | None = None
        for shard in shards:
            if produced >= limit:
                return
            samples = list(shard_samples(self.index.shards[shard].url))
            order = np.random.default_rng([self.seed, self.epoch, shard, 0x5A3D]).permutation(len(samples))
            for position in order:
                if produced >= limit:
                    return
                if crop_number + k <= skip_crops:  # resumed mid-epoch: nothing to decode before the restart point
                    crop_number += k
                    continue
                sample = samples[position]
                try:
                    array = decode_sample(sample)
                    if min(array.shape[:2]) < size:
                        raise DataError(f"{array.shape[1]}x{array.shape[0]} is smaller than the {size} px crop")
                    last_good = array
                except DataError as exc:
                    log.warning("skipping shard sample %s: %s", sample.get("__key__"), exc)
                    if last_good is None:
                        continue  # nothing to stand in yet: the worker ends a batch short of its share
                    array = last_good
                rng = crop_rng(self.seed, self.epoch, shard * 1_000_003 + int(position))
                for crop in cut_crops(array, size, rng, k):
                    crop_number += 1
                    if crop_number <= skip_crops:
                        continue
                    batch[filled] = crop
                    filled += 1
                    if filled == b:
                        yield torch.from_numpy(batch.copy())
                        filled, produced = 0, produced + 1
                        if produced >= limit:
                            return
            del samples


class ShardLoader:
    """The :class:`~lictrain.data.stream.CropLoader` of shards: same interface (``set_epoch``,
    ``len``, iteration over uint8 batches), exact resume for the same number of workers."""

    def __init__(self, index: ShardIndex, patch_size: int, batch_size: int, crops_per_image: int,
                 epoch_size: int | None, seed: int, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        self.index, self.batch_size, self.crops_per_image = index, batch_size, crops_per_image
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.workers = max(1, num_workers)
        self.epoch_size = epoch_size
        self.stream = ShardStream(index, patch_size, batch_size, crops_per_image, seed, rank, world_size)
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.epoch, self.start_batch = 0, 0
        if len(index.shards) < world_size * self.workers:
            log.warning("%d shard(s) for %d rank(s) x %d worker(s): some workers get none; write more, smaller shards "
                        "(lictrain data prepare --shard-samples)", len(index.shards), world_size, self.workers)
        self._counts = self._worker_counts(0)
        if len(self) == 0:
            raise ConfigError(f"the shards hold {index.samples} samples: less than one batch of {batch_size} per rank "
                              f"and epoch; use a smaller --batch-size or more data")

    def _worker_counts(self, epoch: int) -> list[list[int]]:
        return [[worker_batches(self.index, worker_shards(self.index, self.seed, epoch, r, self.world_size, w,
                                                           self.workers), self.crops_per_image, self.batch_size)
                 for w in range(self.workers)] for r in range(self.world_size)]

    def __len__(self) -> int:
        # every rank stops at the smallest share, so DDP ranks take the same number of steps
        batches = min(sum(c) for c in self._counts)
        if self.epoch_size is not None:
            batches = min(batches, self.epoch_size // self.world_size // self.batch_size)
        return batches

    def close(self) -> None:
        """Nothing to do: each epoch's workers end with its iteration."""

    def describe(self) -> str:
        what = "one pass over" if self.epoch_size is None else "capped by --epoch-size:"
        return (f"epoch = {what} {self.index.samples} samples in {len(self.index.shards)} shard(s) -> {len(self)} "
                f"batches of {self.batch_size}{f' on each of {self.world_size} ranks' if self.world_size > 1 else ''}, "
                f"{self.crops_per_image} crop(s) per sample, {self.num_workers or 'no'} decoding worker(s)")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch
        self._counts = self._worker_counts(epoch)

    def __iter__(self) -> Iterator[torch.Tensor]:
        limits = round_robin_skips(self._counts[self.rank], len(self))  # what each worker delivers this epoch
        skips, rotation = _round_robin(limits, self.start_batch)
        self.stream.epoch, self.stream.skips, self.stream.limits = self.epoch, skips, limits
        self.stream.rotation = rotation if self.start_batch else 0
        if self.num_workers > 0:
            end_workers_at_exit()
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                            prefetch_factor=2 if self.num_workers > 0 else None,
                            generator=torch.Generator(),  # not the global RNG (see CropLoader)
                            worker_init_fn=ignore_stop_signals if self.num_workers > 0 else None)
        try:
            yield from loader
        except DataError as exc:
            raise from_worker(exc) from None


def shard_test_folder(index: ShardIndex) -> Path | None:
    """The local folder of the test photos, when the index names one that exists."""
    if index.test and "://" not in index.test and Path(index.test).is_dir():
        return Path(index.test)
    return None
