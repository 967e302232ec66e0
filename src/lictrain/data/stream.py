"""Training crops streamed from photos decoded on demand: memory independent of the data's size.

The main process only orders the epoch (:mod:`lictrain.data.order`) and hands each DataLoader
worker a :class:`~lictrain.data.order.Window`; the worker decodes the window's photos one at a
time, cuts ``crops_per_image`` random crops (+ flips) from each and returns the window's
batches as one uint8 tensor. Batches travel as uint8 (a quarter of float32's bytes) and become
float on the training device.

A photo that cannot be used (corrupt, truncated, smaller than the crop) is reported once per
process with a one-line warning and replaced by another photo drawn from the same seeds, so a
run with good photos never stops; only a source with no usable photo is an error.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import signal
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lictrain.data.images import NamedImage, decode_hwc
from lictrain.data.order import EpochShape, Window, crop_rng, epoch_shape, windows
from lictrain.errors import DataError

log = logging.getLogger(__name__)

#: draws for a replacement photo before the window fails
MAX_REPLACEMENTS = 32


class PhotoSet(Protocol):
    """Random access to decoded photos (a worker-side view of a source)."""

    def __len__(self) -> int: ...

    def name(self, index: int) -> str: ...

    def decode(self, index: int) -> np.ndarray: ...  # (H, W, 3) uint8


class FilePhotos:
    """Photos decoded from files on demand (paths from a :class:`~lictrain.data.sources.PathIndex`)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return self.paths[index]

    def decode(self, index: int) -> np.ndarray:
        return decode_hwc(self.paths[index])


class MemoryPhotos:
    """Photos already decoded (the built-in set): no decode, crops cut from memory."""

    def __init__(self, images: Sequence[NamedImage]) -> None:
        self.images = list(images)

    def __len__(self) -> int:
        return len(self.images)

    def name(self, index: int) -> str:
        return self.images[index].name

    def decode(self, index: int) -> np.ndarray:
        return self.images[index].pixels.permute(1, 2, 0).numpy()  # HWC view, no copy


_warned: set[str] = set()


def _warn_once(name: str, reason: str) -> None:
    if name not in _warned:
        _warned.add(name)
        log.warning("skipping training photo %s: %s", name, reason)


def cut_crops(array: np.ndarray, size: int, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """``count`` random ``size`` x ``size`` crops (random horizontal/vertical flips) of an HWC
    array, each as a (3, size, size) strided view."""
    height, width = array.shape[:2]
    tops = rng.integers(0, height - size + 1, count)
    lefts = rng.integers(0, width - size + 1, count)
    flips = rng.random((count, 2)) < 0.5
    crops = []
    for top, left, (flip_h, flip_v) in zip(tops, lefts, flips):
        crop = array[top : top + size, left : left + size]
        if flip_h:
            crop = crop[:, ::-1]
        if flip_v:
            crop = crop[::-1]
        crops.append(crop.transpose(2, 0, 1))
    return crops


class WindowCrops(Dataset):
    """Maps a :class:`Window` to its batches: a ``(count, batch_size, 3, P, P)`` uint8 tensor."""

    def __init__(self, photos: PhotoSet, patch_size: int) -> None:
        self.photos = photos
        self.patch_size = patch_size

    def __len__(self) -> int:  # pragma: no cover - addressed by windows, never by length
        return len(self.photos)

    def usable(self, index: int) -> np.ndarray | None:
        """The decoded photo ``index``, or ``None`` (warned once) when it cannot give crops."""
        name = self.photos.name(index)
        try:
            array = self.photos.decode(index)
        except DataError as exc:
            _warn_once(name, str(exc))
            return None
        if min(array.shape[:2]) < self.patch_size:
            _warn_once(name, f"{array.shape[1]}x{array.shape[0]} is smaller than the {self.patch_size} px crop")
            return None
        return array

    def _photo(self, window: Window, slot: int) -> np.ndarray:
        index = window.photos[slot]
        array = self.usable(index)
        draws = np.random.default_rng([window.seed, window.epoch, window.positions[slot], 0xBAD])
        for _ in range(MAX_REPLACEMENTS):
            if array is not None:
                return array
            array = self.usable(int(draws.integers(len(self.photos))))
        raise DataError(f"no usable training photo in {MAX_REPLACEMENTS} draws (the last: {self.photos.name(index)}); "
                        "check the data set: most photos are unreadable or smaller than --patch-size")

    def __getitem__(self, window: Window) -> torch.Tensor:  # type: ignore[override]
        k, m, size = window.crops_per_image, len(window.photos), self.patch_size
        flat = np.empty((k * m, 3, size, size), dtype=np.uint8)
        for slot in range(m):
            array = self._photo(window, slot)
            rng = crop_rng(window.seed, window.epoch, window.positions[slot])
            for j, crop in enumerate(cut_crops(array, size, rng, k)):
                flat[j * m + slot] = crop  # batch b of the window = flat[b*B:(b+1)*B]
            del array  # one decoded photo alive at a time
        b = window.batch_size
        chosen = flat[window.first * b : (window.first + window.count) * b]
        return torch.from_numpy(chosen).view(window.count, b, 3, size, size)


class _WindowSampler:
    """Yields the current epoch's windows (iterated in the main process, so ``set_epoch`` reaches
    persistent workers)."""

    def __init__(self, loader: "CropLoader") -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[Window]:
        return self.loader._windows()

    def __len__(self) -> int:
        return self.loader.shape.batches


def _identity(item: Any) -> Any:
    return item


class CropLoader:
    """Batches of random training crops, one epoch at a time, exactly resumable.

    Call :meth:`set_epoch` before iterating; iterating yields ``(batch_size, 3, P, P)`` uint8
    tensors (``len()`` of them, fewer when the epoch starts mid-way).

    Args:
        photos: The training photos (decoded in workers on demand).
        patch_size: Crop size in pixels.
        batch_size: Crops per batch (per rank).
        crops_per_image: Crops cut from each decoded photo (1: a random crop of each photo).
        epoch_size: ``None`` for one pass over the photos per epoch, else crops per epoch in all.
        seed: Run seed.
        rank, world_size: This process's share under DDP.
        num_workers: Decoding processes (0: decode in the training process).
        pin_memory: Pin batches for a fast copy to CUDA.
    """

    def __init__(self, photos: PhotoSet, patch_size: int, batch_size: int, crops_per_image: int,
                 epoch_size: int | None, seed: int, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        self.photos = photos
        self.patch_size, self.batch_size, self.crops_per_image = patch_size, batch_size, crops_per_image
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shape: EpochShape = epoch_shape(len(photos), batch_size, crops_per_image, world_size, epoch_size)
        self.epoch, self.start_batch = 0, 0
        self.dataset = WindowCrops(photos, patch_size)
        # A private generator: DataLoader draws a worker base seed per iteration, which must not
        # come from (and so shift) the global RNG that the training's quantisation noise uses.
        self.loader = DataLoader(self.dataset, batch_size=None, sampler=_WindowSampler(self), collate_fn=_identity,
                                 num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=pin_memory,
                                 prefetch_factor=2 if num_workers > 0 else None, generator=torch.Generator(),
                                 worker_init_fn=ignore_stop_signals if num_workers > 0 else None)
        if num_workers > 0:
            end_workers_at_exit()

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Fix the coming epoch; start it at batch ``start_batch`` (a resumed, interrupted epoch)."""
        self.epoch, self.start_batch = epoch, start_batch

    def close(self) -> None:
        """Shut the persistent decoding workers down now.

        They ignore stop signals (:func:`ignore_stop_signals`), so the SIGTERM that
        ``multiprocessing`` sends its daemon children at interpreter exit would not end them:
        the run closes them when it ends (and :func:`end_workers_at_exit` ends any left open).
        """
        iterator = getattr(self.loader, "_iterator", None)  # DataLoader keeps persistent workers' iterator there
        if iterator is not None:
            self.loader._iterator = None
            iterator._shutdown_workers()

    def describe(self) -> str:
        workers = self.loader.num_workers
        return (self.shape.describe(len(self.photos), self.world_size, self.crops_per_image, self.batch_size)
                + f", {workers or 'no'} decoding worker{'s' if workers != 1 else ''}")

    def _windows(self) -> Iterator[Window]:
        return windows(len(self.photos), self.shape, self.seed, self.epoch, self.rank, self.world_size,
                       self.batch_size, self.crops_per_image, self.start_batch)

    def __len__(self) -> int:
        return self.shape.batches

    def __iter__(self) -> Iterator[torch.Tensor]:
        try:
            for chunk in self.loader:
                yield from chunk
        except DataError as exc:
            raise from_worker(exc) from None


#: signals a training process stops on (lictrain.config.STOP_SIGNALS, plus SIGUSR2 for a custom
#: --stop-signals): its decoding workers ignore them
WORKER_IGNORED_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP")


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: let the training process alone decide when to stop.

    A cluster signals every process of a job (SIGTERM to the process group); a worker that died
    of it would make PyTorch abort the parent while it saves its checkpoint. Ignoring it is safe:
    the parent shuts its workers down when it exits, and they also exit when the parent dies.
    """
    for name in WORKER_IGNORED_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


_exit_hook: list[bool] = []


def end_workers_at_exit() -> None:
    """Make sure this process's decoding workers end when it exits (call before starting any).

    ``multiprocessing``'s own exit hook ends daemon children with SIGTERM, which these workers
    ignore, then waits for them: forever, for a loader nobody closed (a suspended iterator, a
    loader in a test). This hook, registered after it, runs first (atexit is LIFO) and ends the
    daemon children still alive, killing those that ignore SIGTERM. Registered once per process.
    """
    if not _exit_hook:
        _exit_hook.append(True)
        import multiprocessing.util  # noqa: F401 - its exit hook must be registered first, to run last

        atexit.register(_kill_loader_workers)


def _kill_loader_workers() -> None:
    """What multiprocessing's exit hook does to daemon children (SIGTERM), plus SIGKILL for those
    that ignore it after a second: our decoding workers."""
    daemons = [child for child in multiprocessing.active_children() if child.daemon]
    if daemons and hasattr(signal, "SIGCHLD"):
        # torch's SIGCHLD handler raises when a worker dies: at exit that is what we want
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in daemons:
        child.terminate()
    for child in daemons:
        child.join(timeout=1)
        if child.is_alive():
            child.kill()
            child.join(timeout=5)


def from_worker(exc: DataError) -> DataError:
    """A DataError re-raised by DataLoader from a worker carries the worker's traceback text;
    keep only the original one-line message."""
    lines = [ln for ln in str(exc).splitlines() if "DataError: " in ln]
    return DataError(lines[-1].split("DataError: ", 1)[1] if lines else str(exc))


def first_usable(photos: PhotoSet, patch_size: int, what: str = "training") -> int:
    """Index of the first photo that decodes and fits a crop, checked at start-up so that a data set
    with no usable photo fails before any training, with one line (later bad photos are skipped).

    Raises:
        DataError: no photo is usable.
    """
    probe = WindowCrops(photos, patch_size)
    for index in range(len(photos)):
        if probe.usable(index) is not None:
            return index
    raise DataError(f"no usable {what} photo among {len(photos)} file(s): every one is unreadable or smaller than "
                    f"the {patch_size} px crop; check the files or use a smaller --patch-size")
