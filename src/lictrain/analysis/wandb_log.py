"""The LevelDB-style log framing of a W&B ``.wandb`` file: read, write, and sort records by type.

A ``.wandb`` file is a 7-byte header (``:W&B`` + magic ``0xBEE1`` + version ``0``) followed by
32 KiB blocks of records, each ``crc32 | length | type`` then the payload, a record split across
blocks as FIRST/MIDDLE/LAST chunks; the CRC is IEEE CRC-32 seeded with the chunk-type byte.
Each payload is one serialized ``wandb_internal_pb2.Record``; decoding the records is
:mod:`lictrain.analysis.wandb_offline`'s job. Re-exported by :mod:`lictrain.analysis.readers`.
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterable, Iterator

from lictrain.analysis.run_data import CorruptRunError
from lictrain.varint import decode_varint

__all__ = ["iter_wandb_log", "encode_wandb_log", "record_type", "split_log"]

# -- the LevelDB-style log framing of a .wandb file -------------------------------------------
HEADER_IDENT = b":W&B"
HEADER_MAGIC = 0xBEE1
HEADER_VERSION = 0
HEADER = struct.Struct("<4sHB")  # 7 bytes
CHUNK = struct.Struct("<IHB")  # crc32, length, type: 7 bytes
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_TYPE_CRC = {t: zlib.crc32(bytes([t])) for t in (FULL, FIRST, MIDDLE, LAST)}

# Record oneof field numbers (wandb_internal_pb2.Record), checked against the descriptor on load.
HISTORY, SUMMARY, CONFIG, RUN, EXIT = 2, 3, 5, 17, 18
_WANTED = {SUMMARY, CONFIG, RUN, EXIT}


# -- .wandb framing ----------------------------------------------------------------------------
def _first_chunk(data: bytes, name: str) -> int:
    """Check the log's file header; return the offset of its first chunk.

    Raises:
        CorruptRunError: ``data`` is too short or does not start with a W&B log header.
    """
    if len(data) < HEADER.size:
        raise CorruptRunError(f"{name}: not a W&B run log (only {len(data)} bytes)")
    ident, magic, version = HEADER.unpack_from(data, 0)
    if ident != HEADER_IDENT or magic != HEADER_MAGIC or version != HEADER_VERSION:
        raise CorruptRunError(f"{name}: not a W&B run log (bad header {data[:7]!r})")
    return HEADER.size


def iter_wandb_log(data: bytes, name: str = "<bytes>") -> Iterator[bytes]:
    """Yield the payload of every record in a ``.wandb`` log (framing only, no protobuf).

    A log cut short (a run killed mid-write) ends quietly at its last complete record.

    Raises:
        CorruptRunError: For a bad file header, a checksum mismatch or an impossible chunk
            (after yielding every good record before it).
    """
    pos, end = _first_chunk(data, name), len(data)
    pending: list[bytes] | None = None
    unpack, crc32 = CHUNK.unpack_from, zlib.crc32
    while pos + CHUNK.size <= end:
        room = BLOCK_SIZE - pos % BLOCK_SIZE
        if room < CHUNK.size:  # block trailer: zero padding
            pos += room
            continue
        checksum, length, kind = unpack(data, pos)
        if checksum == 0 and length == 0 and kind == 0:  # zero padding to the block's end
            pos += room
            continue
        start = pos + CHUNK.size
        stop = start + length
        if stop > end:
            return  # truncated tail: the writer was killed mid-record
        if length > room - CHUNK.size or kind not in _TYPE_CRC:
            raise CorruptRunError(f"{name}: corrupt record at byte {pos} (type {kind}, length {length})")
        chunk = data[start:stop]
        if crc32(chunk, _TYPE_CRC[kind]) != checksum:
            raise CorruptRunError(f"{name}: checksum mismatch at byte {pos}")
        pos = stop
        if kind == FULL:
            pending = None
            yield chunk
        elif kind == FIRST:
            pending = [chunk]
        elif pending is not None:
            pending.append(chunk)
            if kind == LAST:
                yield b"".join(pending)
                pending = None


def encode_wandb_log(records: Iterable[bytes]) -> bytes:
    """The inverse of :func:`iter_wandb_log`: frame serialized ``Record`` payloads as a ``.wandb`` log.

    Byte-compatible with the files ``wandb-core`` writes (used by the benchmark and the tests to
    clone real runs with new values).
    """
    out = bytearray(HEADER.pack(HEADER_IDENT, HEADER_MAGIC, HEADER_VERSION))
    for payload in records:
        view = memoryview(payload)
        first = True
        while True:
            room = BLOCK_SIZE - len(out) % BLOCK_SIZE
            if room < CHUNK.size:
                out += b"\x00" * room
                continue
            take = min(len(view), room - CHUNK.size)
            last = take == len(view)
            kind = FULL if first and last else FIRST if first else LAST if last else MIDDLE
            chunk = bytes(view[:take])
            out += CHUNK.pack(zlib.crc32(chunk, _TYPE_CRC[kind]), take, kind) + chunk
            view = view[take:]
            first = False
            if last:
                break
    return bytes(out)


def record_type(payload: bytes) -> tuple[int, int, int]:
    """(oneof field number, start, end) of a serialized Record's record_type, by peeking at tags."""
    pos, end = 0, len(payload)
    while pos < end:
        tag, pos = decode_varint(payload, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = decode_varint(payload, pos)
        elif wire == 2:
            length, pos = decode_varint(payload, pos)
            if number not in (16, 19, 200):  # control, uuid, _info: not the record type
                return number, pos, pos + length
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            break
    return 0, 0, 0


def split_log(data: bytes, name: str, summaries: list[bytes], configs: list[bytes], runs: list[bytes],
               exits: list[bytes], histories: list[bytes] | None) -> None:
    """Sort the bodies of the wanted records of a ``.wandb`` log into the lists, in order.

    The record type is read from the first tags of each FULL chunk without copying it; split
    records (FIRST..LAST, over 32 KiB) are joined and peeked by :func:`record_type`.
    """
    targets = {SUMMARY: summaries, CONFIG: configs, RUN: runs, EXIT: exits}
    if histories is not None:
        targets[HISTORY] = histories
    pos, end = _first_chunk(data, name), len(data)
    unpack, crc32, type_crc, get = CHUNK.unpack_from, zlib.crc32, _TYPE_CRC, targets.get
    full_crc = type_crc[FULL]
    by_tag: list[list[bytes] | None] = [None] * 0x80  # one-byte tags of wanted length-delimited fields
    for number, target_list in targets.items():
        if (number << 3 | 2) < 0x80:
            by_tag[number << 3 | 2] = target_list
    pending: list[bytes] | None = None
    while pos + 7 <= end:
        offset = pos & (BLOCK_SIZE - 1)
        if offset > BLOCK_SIZE - 7:  # block trailer: too small for a chunk header
            pos += BLOCK_SIZE - offset
            continue
        checksum, length, kind = unpack(data, pos)
        start = pos + 7
        stop = start + length
        if kind == FULL and stop <= end and offset + 7 + length <= BLOCK_SIZE:
            pos = stop
            # peek: ``num`` (tag 0x08, a one-byte varint as W&B writes it), then the type's tag
            i = start
            tag = data[i] if length else 0
            if tag == 0x08 and length > 2 and data[i + 1] < 0x80:
                i += 2
                tag = data[i]
            if tag < 0x80:
                target = by_tag[tag]
                if target is None:
                    continue
                if crc32(data[start:stop], full_crc) != checksum:
                    raise CorruptRunError(f"{name}: checksum mismatch at byte {start - 7}")
                body_length = data[i + 1]
                if body_length < 0x80:
                    target.append(data[i + 2:i + 2 + body_length])
                else:
                    body_length, body_start = decode_varint(data, i + 1)
                    target.append(data[body_start:body_start + body_length])
                continue
            chunk = data[start:stop]  # a longer ``num`` or a multi-byte tag first: general peek
            number, body_start, body_stop = record_type(chunk)
            target = get(number)
            if target is None:
                continue
            if crc32(chunk, full_crc) != checksum:
                raise CorruptRunError(f"{name}: checksum mismatch at byte {start - 7}")
            target.append(chunk[body_start:body_stop])
            continue
        room = BLOCK_SIZE - offset
        if checksum == 0 and length == 0 and kind == 0:  # zero padding to the block's end
            pos += room
            continue
        if stop > end:
            return  # truncated tail: the writer was killed mid-record
        if length > room - 7 or kind not in type_crc:
            raise CorruptRunError(f"{name}: corrupt record at byte {pos} (type {kind}, length {length})")
        chunk = data[start:stop]
        if crc32(chunk, type_crc[kind]) != checksum:
            raise CorruptRunError(f"{name}: checksum mismatch at byte {pos}")
        pos = stop
        if kind == FIRST:
            pending = [chunk]
        elif pending is not None:
            pending.append(chunk)
            if kind == LAST:
                whole = b"".join(pending)
                pending = None
                number, body_start, body_stop = record_type(whole)
                target = get(number)
                if target is not None:
                    target.append(whole[body_start:body_stop])
