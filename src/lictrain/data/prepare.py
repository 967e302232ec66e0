"""``lictrain data prepare SRC OUT``: write a folder or file list as WebDataset shards.

Without ``--tile`` a sample is the photo's original bytes (no re-encoding: training decodes
exactly what the source held). With ``--tile S`` each photo is cut into non-overlapping S x S
tiles (edges that do not fill a tile are dropped), stored losslessly as raw ``.npy`` (no
decode at all when training: the remedy for PNG sources, whose decode costs ~5-7x a JPEG's)
or ``.png``. The test photos are copied as files into ``OUT/test/``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lictrain.data.images import decode_hwc
from lictrain.data.shards import FORMAT, INDEX_NAME
from lictrain.data.sources import resolve_files
from lictrain.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TILE_FORMATS = ("npy", "png")


@dataclass
class PrepareSummary:
    """What :func:`prepare_shards` wrote."""

    shards: int
    samples: int
    skipped: int
    test_photos: int
    bytes: int


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty folder; name a new folder for the shards "
                          "(prepare never overwrites)")


def _tile_bytes(tile: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, np.ascontiguousarray(tile), allow_pickle=False)
    else:
        from PIL import Image

        Image.fromarray(tile).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _check_options(tile: int | None, tile_format: str, shard_samples: int, shard_megabytes: float) -> None:
    if tile is not None and tile < 16:
        raise ConfigError(f"--tile must be at least 16 pixels, got {tile}")
    if tile_format not in TILE_FORMATS:
        raise ConfigError(f"--tile-format must be one of {', '.join(TILE_FORMATS)}, got {tile_format!r}")
    if shard_samples < 1 or not shard_megabytes > 0:
        raise ConfigError("--shard-samples and --shard-megabytes must be positive")


class _ShardWriter:
    """Samples into ``train-NNNNNN.tar`` shards, starting a new one when the current is full."""

    def __init__(self, out: Path, tar_writer: Callable[[str], Any], shard_samples: int,
                 shard_megabytes: float) -> None:
        self.out, self._tar_writer = out, tar_writer
        self.max_samples, self.max_bytes = shard_samples, shard_megabytes * 2**20
        self.shards: list[dict[str, object]] = []
        self.written = self.total_bytes = 0
        self._writer: Any = None
        self._count = self._bytes = 0

    def write(self, sample: dict[str, object], size: int) -> None:
        """Add one sample of ``size`` bytes to the current shard (or to a new one)."""
        if self._writer is None or self._count >= self.max_samples or self._bytes + size > self.max_bytes:
            if self._writer is not None:
                self._writer.close()
            name = f"train-{len(self.shards):06d}.tar"
            self.shards.append({"url": name, "samples": 0})
            self._writer, self._count, self._bytes = self._tar_writer(str(self.out / name)), 0, 0
        self._writer.write(sample)
        self._count += 1
        self._bytes += size
        self.shards[-1]["samples"] = int(self.shards[-1]["samples"]) + 1  # type: ignore[call-overload]
        self.written += 1
        self.total_bytes += size

    def close(self) -> None:
        """Finish the current shard."""
        if self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        """Close the current shard after another error, which is the one worth raising."""
        try:
            self.close()
        except Exception:  # pragma: no cover - closing a broken tar after another error
            pass


def _write_photo(shards: _ShardWriter, path: Any, name: str, key: str, tile: int | None,
                 tile_format: str) -> bool:
    """Write one training photo (whole, or as tiles); ``False``: skipped, with a warning."""
    try:
        if tile is None:
            data = Path(path).read_bytes()
            decode_hwc(data, name=name)  # a file that will not decode is left out now, not at train time
            ext = Path(name).suffix.lower().lstrip(".")
            shards.write({"__key__": key, ext: data, "name.txt": name}, len(data))
            return True
        array = decode_hwc(path)
    except (DataError, OSError) as exc:
        log.warning("skipping %s: %s", path, exc)
        return False
    height, width = array.shape[:2]
    if min(height, width) < tile:
        log.warning("skipping %s: %dx%d is smaller than a %d px tile", path, width, height, tile)
        return False
    for t, (top, left) in enumerate((r, c) for r in range(0, height - tile + 1, tile)
                                    for c in range(0, width - tile + 1, tile)):
        data = _tile_bytes(array[top : top + tile, left : left + tile], tile_format)
        shards.write({"__key__": f"{key}_{t:04d}", tile_format: data, "name.txt": f"{name}@{top},{left}"}, len(data))
    return True


def _write_test(out: Path, test: Any, tar_writer: Callable[[str], Any]) -> None:
    """The test photos twice: as files (local training, `eval`) and as one tar (training from a URL)."""
    test_dir = out / "test"
    test_dir.mkdir()
    with tar_writer(str(out / "test.tar")) as test_tar:
        for i in range(len(test)):
            name = test.name(i).replace("/", "__")
            shutil.copyfile(test[i], test_dir / name)
            stem, ext = os.path.splitext(name)
            test_tar.write({"__key__": f"{i:09d}", ext.lower().lstrip("."): (test_dir / name).read_bytes(),
                            "name.txt": name})


def _write_index(out: Path, src: str | os.PathLike[str], tile: int | None, tile_format: str,
                 shards: list[dict[str, object]]) -> None:
    """Write ``index.json`` last, atomically: a half-written OUT is never trained on."""
    partial = out / "index.json.partial"
    partial.write_text(json.dumps({
        "format": FORMAT, "version": 1, "source": str(src), "tile": tile,
        "tile_format": tile_format if tile else None, "train": shards, "test": "test", "test_shard": "test.tar",
    }, indent=1))
    os.replace(partial, out / INDEX_NAME)


def prepare_shards(src: str | os.PathLike[str], out: str | os.PathLike[str], *, tile: int | None = None,
                   tile_format: str = "npy", shard_samples: int = 1000, shard_megabytes: float = 512,
                   show_progress: bool | None = None) -> PrepareSummary:
    """Write ``src``'s training photos as tar shards in ``out`` (with ``index.json``), and its
    test photos as files in ``out/test``.

    Raises:
        ConfigError: bad options, or ``out`` exists and is not empty.
        DataError: unusable ``src``, or no photo could be written.
    """
    import webdataset as wds
    from tqdm import tqdm

    _check_options(tile, tile_format, shard_samples, shard_megabytes)
    out = Path(out).expanduser()
    _check_out(out)
    source = resolve_files(src)
    out.mkdir(parents=True, exist_ok=True)
    shards = _ShardWriter(out, wds.TarWriter, shard_samples, shard_megabytes)
    skipped = 0
    try:
        bar = tqdm(range(len(source.train)), desc="prepare", unit="photo", dynamic_ncols=True,
                   disable=None if show_progress is None else not show_progress)
        for i in bar:
            if not _write_photo(shards, source.train[i], source.train.name(i), f"{i:09d}", tile, tile_format):
                skipped += 1
        shards.close()
        if shards.written == 0:
            raise DataError(f"no training photo of {src} could be written ({skipped} skipped); check the source")
        _write_test(out, source.test, wds.TarWriter)
        _write_index(out, src, tile, tile_format, shards.shards)
    except BaseException:
        shards.abort()
        raise
    log.info("wrote %d samples in %d shard(s) (%.1f MB) and %d test photo(s) to %s%s", shards.written,
             len(shards.shards), shards.total_bytes / 1e6, len(source.test), out,
             f"; skipped {skipped} photo(s)" if skipped else "")
    return PrepareSummary(len(shards.shards), shards.written, skipped, len(source.test), shards.total_bytes)
