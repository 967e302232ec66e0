"""Is a checkpoint file the one that was written? CRC checks and non-finite weights.

``torch.save`` writes a zip archive whose central directory records a CRC32 of every entry,
but ``torch.load`` does not check them: a file with bytes flipped on disk or in a copy loads
silently and a run trains on garbage. :func:`verify_checkpoint_file` recomputes every entry's
CRC in one sequential read (torch stores entries uncompressed) and raises
:class:`CorruptCheckpointError` on the first mismatch; :func:`load_checkpoint` calls it before
every load.

Files it cannot check, and lets through to ``torch.load``:

* legacy (pre-1.6, ``_use_new_zipfile_serialization=False``) torch files: not zip archives, no
  checksums;
* archives written with ``torch.utils.serialization.config.save.compute_crc32 = False``: every
  entry records CRC 0.

:func:`nonfinite_tensors` names the floating tensors of a state dict holding NaN or inf, so a
diverged model is never resumed silently.
"""

from __future__ import annotations

import logging
import os
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch

from lictrain.errors import CheckpointError

__all__ = ["CorruptCheckpointError", "nonfinite_tensors", "verify_checkpoint_file"]

log = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER_SIZE = 30  # fixed part of a zip local file header
_NAME_EXTRA_LENGTHS = struct.Struct("<HH")  # at offset 26 of the local header
_CHUNK = 8 << 20  # large reads: the CRC, not Python, should be the cost


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file whose bytes do not match the checksums written with it.

    Attributes:
        path: The file.
        reason: What failed, e.g. ``CRC mismatch in entry 'archive/data/3'``.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"checkpoint {path} is corrupt ({reason}): it changed after it was written (disk or "
            "copy error); delete it and load an earlier checkpoint of the run (--resume with the "
            "run directory skips corrupt checkpoints)"
        )


def verify_checkpoint_file(path: str | os.PathLike[str]) -> bool:
    """Check every entry of a zip-format checkpoint against its recorded CRC32.

    One sequential read of the file. Returns ``True`` when the file was checked, ``False`` when
    it cannot be (not a zip archive: a legacy torch file; or saved without CRCs).

    Raises:
        CorruptCheckpointError: A CRC mismatch, a truncated entry or an unreadable zip directory.
        CheckpointError: The file cannot be opened or read.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            if f.read(4) != _ZIP_MAGIC:
                return False  # legacy torch format (or not torch at all): torch.load decides
            return _verify_zip(p, f)
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from exc


def _verify_zip(path: Path, f: IO[bytes]) -> bool:
    try:
        with zipfile.ZipFile(f) as zf:
            infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error) as exc:
        raise CorruptCheckpointError(path, f"unreadable zip directory: {exc}") from exc
    if all(i.CRC == 0 for i in infos if i.file_size):
        log.debug("%s was saved without CRCs (compute_crc32=False); not checked", path)
        return False
    buf = memoryview(bytearray(_CHUNK))
    for info in infos:
        crc = _entry_crc(path, f, info, buf)
        if crc != info.CRC:
            raise CorruptCheckpointError(path, f"CRC mismatch in entry {info.filename!r}")
    return True


def _entry_crc(path: Path, f: IO[bytes], info: zipfile.ZipInfo, buf: memoryview) -> int:
    """The CRC32 of one entry's stored bytes, read straight from the file."""
    if info.compress_type != zipfile.ZIP_STORED:  # not written by torch: let zipfile inflate it
        return _inflated_crc(path, f, info)
    f.seek(info.header_offset)
    header = f.read(_LOCAL_HEADER_SIZE)
    if len(header) < _LOCAL_HEADER_SIZE or header[:4] != _ZIP_MAGIC:
        raise CorruptCheckpointError(path, f"bad local header for entry {info.filename!r}")
    name_len, extra_len = _NAME_EXTRA_LENGTHS.unpack_from(header, 26)
    f.seek(name_len + extra_len, os.SEEK_CUR)
    crc, left = 0, info.compress_size
    while left:
        n = f.readinto(buf[: min(left, len(buf))])  # type: ignore[attr-defined]
        if not n:
            raise CorruptCheckpointError(path, f"entry {info.filename!r} is truncated")
        crc = zlib.crc32(buf[:n], crc)
        left -= n
    return crc


def _inflated_crc(path: Path, f: IO[bytes], info: zipfile.ZipInfo) -> int:
    crc = 0
    try:
        with zipfile.ZipFile(f) as zf, zf.open(info) as entry:
            while chunk := entry.read(_CHUNK):
                crc = zlib.crc32(chunk, crc)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        if "CRC" in str(exc):
            raise CorruptCheckpointError(path, f"CRC mismatch in entry {info.filename!r}") from exc
        raise CorruptCheckpointError(path, f"entry {info.filename!r} is unreadable: {exc}") from exc
    return crc


def nonfinite_tensors(state: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Names of the floating (or complex) tensors in ``state`` holding NaN or inf.

    Nested mappings are searched too; their names are joined with dots. Integer tensors and
    non-tensor values are ignored.
    """
    bad: list[str] = []
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            bad.extend(nonfinite_tensors(value, prefix=f"{name}."))
        elif isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                bad.append(name)
    return bad


_reported: set[tuple[str, int, int]] = set()


def warn_once(logger: logging.Logger, path: Path, message: str, *args: Any) -> None:
    """Warn about a bad checkpoint file once per process (while it stays the same file): the CLI,
    the resume and the checkpoint manager's scan all meet it, the user needs to read it once."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        key = (str(path), -1, -1)
    if key in _reported:
        logger.debug(message, *args)
        return
    _reported.add(key)
    logger.warning(message, *args)
