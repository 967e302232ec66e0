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

    if tile is not None and tile < 16:
        raise ConfigError(f"--tile must be at least 16 pixels, got {tile}")
    if tile_format not in TILE_FORMATS:
        raise ConfigError(f"--tile-format must be one of {', '.join(TILE_FORMATS)}, got {tile_format!r}")
    if shard_samples < 1 or not shard_megabytes > 0:
        raise ConfigError("--shard-samples and --shard-megabytes must be positive")
    out = Path(out).expanduser()
    _check_out(out)
    source = resolve_files(src)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "index.json.partial"
    shards: list[dict[str, object]] = []
    skipped = written = total_bytes = 0
    state = {"count": 0, "bytes": 0, "writer": None}

    def start_shard() -> wds.TarWriter:
        name = f"train-{len(shards):06d}.tar"
        shards.append({"url": name, "samples": 0})
        return wds.TarWriter(str(out / name))

    def write(sample: dict[str, object], size: int) -> None:
        nonlocal written, total_bytes
        writer = state["writer"]
        if writer is None or state["count"] >= shard_samples or state["bytes"] + size > shard_megabytes * 2**20:
            if writer is not None:
                writer.close()
            state["writer"], state["count"], state["bytes"] = start_shard(), 0, 0
        state["writer"].write(sample)
        state["count"] += 1
        state["bytes"] += size
        shards[-1]["samples"] = int(shards[-1]["samples"]) + 1
        written += 1
        total_bytes += size

    try:
        bar = tqdm(range(len(source.train)), desc="prepare", unit="photo", dynamic_ncols=True,
                   disable=None if show_progress is None else not show_progress)
        for i in bar:
            path, name = source.train[i], source.train.name(i)
            key = f"{i:09d}"
            try:
                if tile is None:
                    data = Path(path).read_bytes()
                    decode_hwc(data, name=name)  # a file that will not decode is left out now, not at train time
                    ext = Path(name).suffix.lower().lstrip(".")
                    write({"__key__": key, ext: data, "name.txt": name}, len(data))
                    continue
                array = decode_hwc(path)
            except (DataError, OSError) as exc:
                log.warning("skipping %s: %s", path, exc)
                skipped += 1
                continue
            height, width = array.shape[:2]
            if min(height, width) < tile:
                log.warning("skipping %s: %dx%d is smaller than a %d px tile", path, width, height, tile)
                skipped += 1
                continue
            for t, (top, left) in enumerate((r, c) for r in range(0, height - tile + 1, tile)
                                            for c in range(0, width - tile + 1, tile)):
                data = _tile_bytes(array[top : top + tile, left : left + tile], tile_format)
                write({"__key__": f"{key}_{t:04d}", tile_format: data, "name.txt": f"{name}@{top},{left}"}, len(data))
        if state["writer"] is not None:
            state["writer"].close()
        if written == 0:
            raise DataError(f"no training photo of {src} could be written ({skipped} skipped); check the source")
        # the test photos twice: as files (local training, `eval`) and as one tar (training from a URL)
        test_dir = out / "test"
        test_dir.mkdir()
        with wds.TarWriter(str(out / "test.tar")) as test_tar:
            for i in range(len(source.test)):
                name = source.test.name(i).replace("/", "__")
                shutil.copyfile(source.test[i], test_dir / name)
                stem, ext = os.path.splitext(name)
                test_tar.write({"__key__": f"{i:09d}", ext.lower().lstrip("."): (test_dir / name).read_bytes(),
                                "name.txt": name})
        partial.write_text(json.dumps({
            "format": FORMAT, "version": 1, "source": str(src), "tile": tile,
            "tile_format": tile_format if tile else None, "train": shards, "test": "test", "test_shard": "test.tar",
        }, indent=1))
        os.replace(partial, out / INDEX_NAME)  # the index appears last: a half-written OUT is never trained on
    except BaseException:
        if state["writer"] is not None:
            try:
                state["writer"].close()
            except Exception:  # pragma: no cover - closing a broken tar after another error
                pass
        raise
    log.info("wrote %d samples in %d shard(s) (%.1f MB) and %d test photo(s) to %s%s", written, len(shards),
             total_bytes / 1e6, len(source.test), out, f"; skipped {skipped} photo(s)" if skipped else "")
    return PrepareSummary(len(shards), written, skipped, len(source.test), total_bytes)
