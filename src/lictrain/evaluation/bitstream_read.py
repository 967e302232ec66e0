"""Reading a ``.lic`` file: :func:`unpack` parses and checks its bytes into a :class:`Bitstream`.

Every way the bytes can be wrong -- too short, too long, another format, a newer version, a
flipped bit -- is a one-line :class:`~lictrain.errors.BitstreamError` (layout:
:mod:`lictrain.evaluation.bitstream_format`).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from typing import Any

from lictrain.errors import BitstreamError
from lictrain.evaluation.bitstream_format import (BASE_VERSION, FINGERPRINT_BYTES, FLAG_CENTRED, FLAG_CHECKPOINT,
                                                  FLAG_RATE, MAX_GAIN,
                                                  FLAG_RECON_CRC, FORMAT_VERSION, KNOWN_FLAGS, MAGIC,
                                                  MAX_CHECKPOINT_NAME, MAX_NAME, MAX_SIDE, MAX_STREAMS, SHAPE_FLAT,
                                                  SHAPE_JSON, Bitstream, Shape, storable_name)

__all__ = ["unpack"]


class _Reader:
    """A cursor over a file's bytes; its errors name the file and the field it was reading."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def truncated(self, field: str) -> BitstreamError:
        return BitstreamError(
            f"{self.what} is truncated ({len(self.data)} bytes, ends inside the {field}); "
            "re-encode the image or copy the whole file"
        )

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.truncated(field)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, field: str, limit: int) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data):
                raise self.truncated(field)
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 63:
                raise self.corrupt(f"an over-long {field}")
        if value > limit:
            raise self.corrupt(f"an impossible {field} ({value})")
        return value

    def corrupt(self, detail: str) -> BitstreamError:
        return BitstreamError(f"{self.what} is corrupt ({detail}); re-encode the image")


#: deepest nesting of a JSON shape (CompressAI models use at most two levels)
_MAX_SHAPE_DEPTH = 4


def _checked_shape(value: Any, depth: int = 0) -> Shape:
    """A JSON-decoded shape as nested tuples of bounded non-negative ints, or ValueError."""
    if depth > _MAX_SHAPE_DEPTH:
        raise ValueError("shape nested too deeply")
    if isinstance(value, list):
        if len(value) > 64:
            raise ValueError("shape too long")
        return tuple(_checked_shape(v, depth + 1) for v in value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIDE:
        raise ValueError(f"bad shape entry {str(value)[:20]!r}")
    return value


def _decode_shape(r: _Reader) -> Shape:
    kind = r.take(1, "shape")[0]
    if kind == SHAPE_FLAT:
        n = r.varint("shape", 16)
        return tuple(r.varint("shape", MAX_SIDE) for _ in range(n))
    if kind == SHAPE_JSON:
        n = r.varint("shape", 1 << 12)
        text = r.take(n, "shape")
        try:
            return _checked_shape(json.loads(text.decode("ascii")))
        except (UnicodeDecodeError, ValueError, RecursionError, OverflowError, TypeError):
            raise r.corrupt("unreadable shape") from None
    raise r.corrupt(f"unknown shape kind {kind}")

def unpack(data: bytes, what: str = "the bitstream") -> Bitstream:
    """Parse the bytes of a ``.lic`` file.

    Args:
        data: the whole file.
        what: how messages name the file (e.g. its path).

    Raises:
        BitstreamError: not a ``.lic`` file, a newer format version, truncated, trailing
            bytes, or a checksum mismatch (one-line message).
    """
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        start = data[:8]
        hint = f"it starts with {start!r}" if data else "it is empty"
        raise BitstreamError(
            f"{what} is not a lictrain bitstream ({hint}); pass a .lic file written by lictrain compress"
        )
    r = _Reader(data, what)
    r.pos = len(MAGIC)
    version = r.take(1, "header")[0]
    if version not in KNOWN_FLAGS:
        raise BitstreamError(
            f"{what} uses bitstream format version {version}; this lictrain reads versions {BASE_VERSION} to "
            f"{FORMAT_VERSION}: decode it with the lictrain version that wrote it"
        )
    # A cut-off file fails while parsing ("truncated"); a complete one with a flipped bit
    # fails the checksum after parsing ("corrupt").
    checksum_ok = len(data) >= 4 and zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "big")
    flags = r.take(1, "header")[0]
    try:
        name_len = r.varint("model name", MAX_NAME)
        model = r.take(name_len, "model name").decode("utf-8")
        quality = r.varint("quality", 1 << 16)
        fingerprint = r.take(FINGERPRINT_BYTES, "weights fingerprint")
        names = [b"", b""]
        if version >= 2 and flags & FLAG_CHECKPOINT:
            names = [r.take(r.varint(field, MAX_CHECKPOINT_NAME), field) for field in ("checkpoint name", "run name")]
        rate = struct.unpack(">ff", r.take(8, "rate")) if version >= 3 and flags & FLAG_RATE else None
        height = r.varint("image height", MAX_SIDE)
        width = r.varint("image width", MAX_SIDE)
        shape = _decode_shape(r)
        n_groups = r.varint("stream count", MAX_STREAMS)
        lengths: list[list[int]] = []
        for _ in range(n_groups):
            n = r.varint("stream count", MAX_STREAMS)
            lengths.append([r.varint("stream length", 1 << 40) for _ in range(n)])
        recon_crc = int.from_bytes(r.take(4, "reconstruction checksum"), "big") if flags & FLAG_RECON_CRC else None
        strings = [[r.take(n, "payload") for n in group] for group in lengths]
        r.take(4, "file checksum")
    except UnicodeDecodeError:
        raise r.corrupt("the model name is not UTF-8") from None
    if r.pos != len(data):
        raise BitstreamError(
            f"{what} has {len(data) - r.pos} unexpected bytes after the end of the bitstream; "
            "it was altered or concatenated with other data"
        )
    if not checksum_ok:
        raise r.corrupt("checksum mismatch: the file was altered or damaged")
    if flags & ~KNOWN_FLAGS[version]:
        raise r.corrupt(f"unknown flags {flags:#x}")
    if height == 0 or width == 0:
        raise r.corrupt(f"an empty image size {width}x{height}")
    if not model.isprintable():  # messages quote it: a newline would split them
        raise r.corrupt(f"an unprintable model name {model[:40]!r}")
    if rate is not None and not (math.isfinite(rate[0]) and 0 < rate[0] <= MAX_GAIN and math.isfinite(rate[1])):
        raise r.corrupt(f"a rate gain of {rate[0]!r} (a coded rate is a positive gain up to {MAX_GAIN:g})")
    checkpoint, run = (_checked_name(raw, r) for raw in names)
    if flags & FLAG_CHECKPOINT and checkpoint is None:
        raise r.corrupt("an empty checkpoint name")
    return Bitstream(model, quality, fingerprint, height, width, shape, strings, recon_crc, bool(flags & FLAG_CENTRED),
                     checkpoint, run, *(rate if rate is not None else (None, None)))


def _checked_name(raw: bytes, r: _Reader) -> str | None:
    """A stored checkpoint or run name, None when empty; corrupt unless :func:`storable_name` keeps it as is
    (a hostile file must not put a newline or a terminal escape into our messages)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise r.corrupt("a checkpoint or run name that is not UTF-8") from None
    if text and storable_name(text) != text:
        raise r.corrupt(f"an unprintable checkpoint or run name {text[:40]!r}")
    return text or None
