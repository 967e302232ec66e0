"""Checkpoint file I/O: atomic, fsynced writes and safe (``weights_only``) loading.

* **Crash safety.** :func:`atomic_write` writes to a temporary in the target's directory,
  flushes, fsyncs, renames it into place (``os.replace``) and fsyncs the directory, so
  ``kill -9`` at any moment leaves either the old file or the new one, never half of one.
  Temporaries left by a crash (``.tmp-lictrain-*``) are swept by :func:`sweep_temporaries`.
* **Safe loading.** Always ``torch.load(..., weights_only=True)``, after every entry of the
  zip archive has been checked against its CRC32 (:mod:`lictrain.checkpoint.integrity`).

One file at a time: which file a run directory means is :mod:`lictrain.checkpoint.locate`'s
concern (it reads the tracking file, which reads checkpoints with this module).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

from lictrain.checkpoint.integrity import verify_checkpoint_file
from lictrain.errors import CheckpointError

# The manager's logger: records keep the name they had before the split.
log = logging.getLogger("lictrain.checkpoint.manager")

TMP_PREFIX = ".tmp-lictrain-"


# --------------------------------------------------------------------------- loading


def load_checkpoint_file(
    path: str | os.PathLike[str], map_location: Any = "cpu", *, mmap: bool = False
) -> dict[str, Any]:
    """Load one checkpoint file safely (``weights_only=True``).

    :func:`lictrain.checkpoint.locate.load_checkpoint` also accepts a run directory.

    The file's CRC32s are checked first (one sequential read), with ``mmap`` too: bytes that
    changed on disk raise instead of loading as garbage weights. Legacy (non-zip) torch files
    carry no checksums and are loaded unchecked.

    Args:
        path: A checkpoint file.
        map_location: Passed to :func:`torch.load` (default ``"cpu"``).
        mmap: Memory-map the tensors instead of reading them (zip-format files only).

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: If the file is missing, truncated or corrupt (a CRC mismatch raises
            its subclass :class:`~lictrain.checkpoint.integrity.CorruptCheckpointError`), is not
            a dict, or needs arbitrary Python objects to load (refused, never executed).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint {p} does not exist; pass an existing checkpoint file or a run directory"
        )
    verify_checkpoint_file(p)  # torch.load does not check the CRCs it wrote
    try:
        try:
            obj = torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if mmap and "mmap can only be used" in str(exc):
                obj = torch.load(p, map_location=map_location, weights_only=True)
            else:
                raise
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        found = re.search(r"GLOBAL (\S+)", msg)
        if "Weights only load failed" in msg and found:
            raise CheckpointError(
                f"checkpoint {p} was saved with arbitrary Python objects ({found.group(1)}); "
                "lictrain loads only weights-only checkpoints (tensors, numbers, strings, "
                "lists, dicts): re-save it from trusted code with plain state_dicts"
            ) from exc
        raise CheckpointError(
            f"checkpoint {p} is corrupt or not a weights-only torch checkpoint "
            f"({_first_line(msg)}); delete it or load another checkpoint"
        ) from exc
    except (PermissionError, IsADirectoryError, FileNotFoundError) as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from exc
    except Exception as exc:  # truncated zip, garbage bytes, ... (torch raises many types)
        raise CheckpointError(
            f"checkpoint {p} is corrupt or truncated ({type(exc).__name__}: "
            f"{_first_line(str(exc))}); delete it or load another checkpoint"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{p} holds a {type(obj).__name__}, not a checkpoint dict; "
            "pass a checkpoint written by lictrain"
        )
    return obj


def _first_line(text: str, limit: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --------------------------------------------------------------------------- file writes


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(final: Path, write: Callable[[Any], None], *, fsync: bool) -> None:
    """Write via a temporary in the same directory, fsync, rename into place, fsync the dir."""
    tmp = final.parent / f"{TMP_PREFIX}{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if fsync:
        _fsync_dir(final.parent)


def sweep_temporaries(save_dir: Path) -> None:
    """Remove the temporaries of writes a crash interrupted (``.tmp-lictrain-*``)."""
    swept = 0
    for e in os.scandir(save_dir):
        if e.name.startswith(TMP_PREFIX) and e.is_file(follow_symlinks=False):
            try:
                os.unlink(e.path)
                swept += 1
            except OSError as exc:
                log.warning("could not remove stale temporary %s: %s", e.path, exc)
    if swept:
        log.info("removed %d stale temporary file(s) from %s", swept, save_dir)


def same_dir(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` resolve to the same directory (``False`` if either cannot)."""
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def make_save_dir(save_dir: Path) -> None:
    """Create the checkpoint directory ``save_dir`` (and its parents) if missing.

    Raises:
        CheckpointError: If ``save_dir`` is a file or cannot be created.
    """
    if save_dir.exists() and not save_dir.is_dir():
        raise CheckpointError(
            f"checkpoint directory {save_dir} is a file; choose a directory path"
        )
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(
            f"cannot create checkpoint directory {save_dir}: {exc}; choose a writable path"
        ) from exc
