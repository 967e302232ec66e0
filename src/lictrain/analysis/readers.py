"""Run readers: W&B offline runs, W&B synced runs and lictrain ``run.json``, offline and fast.

Three sources describe a training run, and a results folder may hold any mix of them:

* **W&B offline runs** -- ``offline-run-<time>-<id>/run-<id>.wandb``. The run's config, history,
  summary and exit code live only in this binary transaction log: a LevelDB-style log
  (7-byte file header ``:W&B`` + magic ``0xBEE1`` + version ``0``; 32 KiB blocks of records, each
  ``crc32 | length | type`` then the payload, a record split across blocks as FIRST/MIDDLE/LAST
  chunks; the CRC is IEEE CRC-32 seeded with the chunk-type byte). Each payload is one
  ``wandb.proto.wandb_internal_pb2.Record`` -- wandb's own protobuf definition, which we use
  to decode it. (wandb <= 0.22 shipped a Python reader, ``wandb.sdk.internal.datastore``;
  newer versions moved it into the Go ``wandb-core`` binary, so :func:`iter_wandb_log` reads the
  framing here and leaves every field to wandb's protobuf classes.)
* **W&B synced runs** -- ``run-<time>-<id>/files/config.yaml`` (each key wrapped as
  ``{value: ...}``) and ``files/wandb-summary.json``.
* **lictrain runs** -- ``run.json`` (config, status, summary, W&B run id) next to
  ``metrics.jsonl``.

:func:`scan_runs` walks a folder once, reads every source, and merges what belongs to one run
into one :class:`RunData`: W&B runs sharing a run id (a resumed offline run writes a new
``offline-run-*`` folder with the same id) are folded in time order, and a lictrain run
directory's ``run.json`` is merged with its own W&B run -- ``run.json`` wins, W&B fills gaps.
W&B's ``latest-run`` symlink is never followed, so no run is counted twice.

Speed: only the records that matter (run, config, summary, exit) are decoded, located by
peeking at each record's field tags; history rows are skipped unless asked for. Summary values
stay raw bytes until the last update of each key is known. Many files are read by forked
worker processes (the work is CPU-bound Python, which threads would serialise).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator

from lictrain.errors import DataError

__all__ = [
    "RunData", "CorruptRunError", "iter_wandb_log", "encode_wandb_log", "read_wandb_offline",
    "read_wandb_synced", "read_lictrain_run", "scan_runs", "flatten",
]

log = logging.getLogger(__name__)

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

_RUN_DIR_RE = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-([A-Za-z0-9]+)$")

#: run.json status -> row state
STATE_OF_STATUS = {"finished": "finished", "failed": "failed", "running": "running",
                   "interrupted": "stopped", "stopped": "stopped", "crashed": "failed"}


class CorruptRunError(DataError):
    """A run file that cannot be decoded (bad header, checksum, record or JSON)."""


@dataclass
class RunData:
    """One run as read from disk: flat config and summary, state, where it came from."""

    run_id: str | None
    path: Path
    source: str  # "run.json", "wandb-offline", "wandb-synced", or "+"-joined for merged runs
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    state: str = "running"  # finished | failed | running | stopped
    status: str | None = None  # run.json's own status or W&B's exit description
    name: str | None = None
    exit_code: int | None = None
    history: list[dict[str, Any]] | None = None
    started: str | None = None  # sort key for folding resumed W&B runs

    def fill_from(self, other: RunData) -> None:
        """Take ``other``'s values where this run has none (this run's values win)."""
        for key, value in other.config.items():
            self.config.setdefault(key, value)
        for key, value in other.summary.items():
            if _missing(self.summary.get(key)):
                self.summary[key] = value
        self.run_id = self.run_id or other.run_id
        self.name = self.name or other.name
        if self.exit_code is None:
            self.exit_code = other.exit_code
        if self.history is None:
            self.history = other.history
        self.source = "+".join(dict.fromkeys(self.source.split("+") + other.source.split("+")))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# -- .wandb framing ----------------------------------------------------------------------------
def iter_wandb_log(data: bytes, name: str = "<bytes>") -> Iterator[bytes]:
    """Yield the payload of every record in a ``.wandb`` log (framing only, no protobuf).

    A log cut short (a run killed mid-write) ends quietly at its last complete record.

    Raises:
        CorruptRunError: For a bad file header, a checksum mismatch or an impossible chunk
            (after yielding every good record before it).
    """
    if len(data) < HEADER.size:
        raise CorruptRunError(f"{name}: not a W&B run log (only {len(data)} bytes)")
    ident, magic, version = HEADER.unpack_from(data, 0)
    if ident != HEADER_IDENT or magic != HEADER_MAGIC or version != HEADER_VERSION:
        raise CorruptRunError(f"{name}: not a W&B run log (bad header {data[:7]!r})")
    pos, end = HEADER.size, len(data)
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


def _record_type(payload: bytes) -> tuple[int, int, int]:
    """(oneof field number, start, end) of a serialized Record's record_type, by peeking at tags."""
    pos, end = 0, len(payload)
    while pos < end:
        tag, pos = _varint(payload, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(payload, pos)
        elif wire == 2:
            length, pos = _varint(payload, pos)
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


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


_pb: Any = None


def _proto() -> Any:
    """wandb's protobuf module (imported on first use: importing wandb takes ~1 s)."""
    global _pb
    if _pb is None:
        os.environ.setdefault("WANDB_SILENT", "true")
        from wandb.proto import wandb_internal_pb2

        numbers = {f.name: f.number for f in wandb_internal_pb2.Record.DESCRIPTOR.fields}
        expected = {"history": HISTORY, "summary": SUMMARY, "config": CONFIG, "run": RUN, "exit": EXIT}
        if any(numbers.get(k) != v for k, v in expected.items()):  # pragma: no cover - future wandb
            raise DataError(f"this wandb version's Record layout is unknown to lictrain: {numbers}")
        _pb = wandb_internal_pb2
    return _pb


def _json(text: str) -> Any:
    """Decode a ``value_json``; numbers take the fast path (``int``/``float`` parse JSON numbers,
    ``NaN`` and ``Infinity`` alike), anything else goes through :func:`json.loads`."""
    if text.isdigit() or (text[:1] == "-" and text[1:].isdigit()):
        return int(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def _apply_items(target: dict[str, Any], items: Iterable[Any]) -> None:
    """Apply ConfigItem/SummaryItem updates (``key`` or ``nested_key`` path) to ``target``."""
    for item in items:
        path = list(item.nested_key) or [item.key]
        value = _json(item.value_json)
        if len(path) == 1:
            target[path[0]] = value
            continue
        node = target
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value


def _remove_items(target: dict[str, Any], items: Iterable[Any]) -> None:
    for item in items:
        path = list(item.nested_key) or [item.key]
        node = target
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)


# A SummaryItem as wandb-core writes it: ``update { key|nested_key...: K  value_json: V }`` with
# every length below 128 and no control byte in keys or JSON values. Records that match this
# shape exactly (checked with a full match) are folded with two C-level regex passes; any other
# record (longer values, removals, odd keys) takes the exact path through wandb's protobufs.
_KEY_PART = rb"[\x0a\x12][\x00-\x7f][^\x00-\x1f\x82]*"
_VALUE_PART = rb"\x82\x01[\x00-\x7f]"
# one key part only: a path of several parts (``nested_key: "a" nested_key: "b"``) breaks the
# coverage check below and takes the exact path (W&B writes those only for its own ``_wandb.*``).
_ITEM_RE = re.compile(rb"\x0a[\x00-\x7f](" + _KEY_PART + rb")" + _VALUE_PART + rb"([^\x00-\x1f]*)")
_RUNTIME_KEY = b"\x12\x06_wandb\x12\x07runtime"
_RUNTIME_ALIAS = b"\x0a\x08_runtime\x82\x01"


def _fast_items(body: bytes) -> list[tuple[bytes, bytes]] | None:
    """All (key part, value_json) pairs of concatenated Summary/ConfigRecord bodies, in order, or
    ``None`` when any byte falls outside the fast shape (then decode with protobuf).

    The matches are disjoint and in order, and every item has exactly 5 bytes outside its two
    groups (item tag + length, value tag + length), so the body is fully covered -- nothing
    skipped -- exactly when the lengths add up.
    """
    items = _ITEM_RE.findall(body)
    if len(body) != 5 * len(items) + sum(map(len, chain.from_iterable(items))):
        return None
    return items


#: the key part of every item, anchored on the item's tag (no value captured: cheaper)
_KEY_RE = re.compile(rb"\x0a[\x00-\x7f](" + _KEY_PART + rb")\x82\x01")
#: summary records folded in full at the end of a log; the ones before are only checked for new keys
TAIL_RECORDS = 3


def _tail_items(bodies: list[bytes]) -> list[tuple[bytes, bytes]] | None:
    """The folded summary from the last :data:`TAIL_RECORDS` records alone, when that is exact.

    It is exact when every earlier record only updates keys the tail updates again (a training
    run logs the same metrics each epoch): then the tail holds each key's last value. The check
    finds every earlier item's key without decoding values, and counts them against the value
    tags (``\x82\x01``, which no key or JSON value of the fast shape contains) so no item is
    missed. Returns ``None`` (fold everything) otherwise.
    """
    if len(bodies) <= TAIL_RECORDS:
        return None
    tail = _fast_items(b"".join(bodies[-TAIL_RECORDS:]))
    if tail is None:
        return None
    head = b"".join(bodies[:-TAIL_RECORDS])
    keys = _KEY_RE.findall(head)
    if len(keys) != head.count(b"\x82\x01") or not {region for region, _ in tail}.issuperset(keys):
        return None
    return tail


def _region(path: list[str], keyed: bool) -> bytes:
    """The wire bytes of a SummaryItem's key part (``key`` or ``nested_key`` fields)."""
    tag = b"\x0a" if keyed else b"\x12"
    out = b""
    for part in path:
        raw = part.encode()
        out += tag + _encode_varint(len(raw)) + raw
    return out


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_PATHS: dict[bytes, tuple[str, ...]] = {}
_VALUES: dict[bytes, Any] = {}
_MISS = object()
_CACHE_LIMIT = 200_000


def _path_of(region: bytes) -> tuple[str, ...]:
    path = _PATHS.get(region)
    if path is None:
        if len(_PATHS) > _CACHE_LIMIT:
            _PATHS.clear()
        path = _PATHS[region] = _region_path(region)
    return path


def _value_of(value: bytes) -> Any:
    """Decoded ``value_json``, memoised (config values repeat across runs). Lists and dicts are
    not cached: they are mutable."""
    hit = _VALUES.get(value, _MISS)
    if hit is not _MISS:
        return hit
    decoded = _json(value.decode("utf-8", "replace"))
    if decoded is None or isinstance(decoded, (int, float, str, bool)):
        if len(_VALUES) > _CACHE_LIMIT:
            _VALUES.clear()
        _VALUES[value] = decoded
    return decoded


def _region_path(region: bytes) -> tuple[str, ...]:
    parts, pos = [], 0
    while pos < len(region):
        length, pos = _varint(region, pos + 1)
        parts.append(region[pos:pos + length].decode("utf-8", "replace"))
        pos += length
    return tuple(parts)


def read_wandb_offline(path: str | os.PathLike[str], history: bool = False, exact: bool = False) -> RunData:
    """Read one ``run-<id>.wandb`` log: config, summary (last value of each key), exit code.

    Only the run, config, summary and exit records are decoded (and their checksums checked);
    the others are skipped by their tag.

    Args:
        path: The ``.wandb`` file.
        history: Also decode every history row into :attr:`RunData.history`.
        exact: Decode every summary record with wandb's protobuf classes (slower; the fast path
            gives the same result, which the tests check).

    Raises:
        CorruptRunError: When the file is not a W&B log or holds no run record.
        _PartialRun: When a record part-way is corrupt: carries the run read up to it.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise CorruptRunError(f"{name}: cannot read ({exc.strerror})") from exc
    pb = _proto()
    summaries: list[bytes] = []
    configs: list[bytes] = []
    runs: list[bytes] = []
    exits: list[bytes] = []
    histories: list[bytes] | None = [] if history else None
    damage: CorruptRunError | None = None
    try:
        _split_log(data, name, summaries, configs, runs, exits, histories)
    except CorruptRunError as exc:
        damage = exc
    if not runs:
        raise damage or CorruptRunError(f"{name}: no run record (not a W&B run log?)")
    config: dict[str, Any] = {}
    raw: dict[bytes, bytes] = {}
    run_id = display = None
    exit_code = None
    rows: list[dict[str, Any]] | None = None
    try:
        for body in runs:
            msg = pb.RunRecord.FromString(body)
            run_id = msg.run_id or run_id
            display = msg.display_name or display
            found = None if exact else _fast_items(msg.config.SerializeToString())  # same item layout
            if found is not None:
                _set_paths(config, _decode_raw(dict(found)))
            else:
                _apply_items(config, msg.config.update)
            _fold_exact(raw, msg.summary)
        for body in configs:
            msg = pb.ConfigRecord.FromString(body)
            _apply_items(config, msg.update)
            _remove_items(config, msg.remove)
        fast = not exact
        if fast:  # drop ``_wandb.runtime`` + ``_runtime``-only records: W&B's own clock, dropped anyway
            summaries = [b for b in summaries
                         if not (b[2:19] == _RUNTIME_KEY and b.count(b"\x82\x01") == 2 and _RUNTIME_ALIAS in b)]
        items = (_tail_items(summaries) or _fast_items(b"".join(summaries))) if fast else None
        if items is not None:
            raw.update(items)
        else:
            for body in summaries:
                found = _fast_items(body) if fast else None
                if found is not None:
                    raw.update(found)
                else:
                    _fold_exact(raw, pb.SummaryRecord.FromString(body))
        for body in exits:
            exit_code = pb.RunExitRecord.FromString(body).exit_code
        if histories is not None:
            rows = []
            for body in histories:
                row: dict[str, Any] = {}
                _apply_items(row, pb.HistoryRecord.FromString(body).item)
                rows.append(row)
    except Exception as exc:  # a protobuf DecodeError
        damage = damage or CorruptRunError(f"{name}: undecodable record ({type(exc).__name__}: {exc})")
    summary = _decode_summary(raw, summaries)
    parent = os.path.dirname(name)
    match = _RUN_DIR_RE.match(os.path.basename(parent))
    config.pop("_wandb", None)
    run = RunData(run_id=run_id or (match.group(2) if match else None), path=Path(parent), source="wandb-offline",
                  config=flatten(config), summary=_clean_summary(summary), name=display, exit_code=exit_code,
                  history=rows, started=match.group(1) if match else None)
    run.state, run.status = _wandb_state(exit_code)
    if damage is not None:
        run.status = f"{run.status}; {damage}"
        raise _PartialRun(run, damage)
    return run


def _split_log(data: bytes, name: str, summaries: list[bytes], configs: list[bytes], runs: list[bytes],
               exits: list[bytes], histories: list[bytes] | None) -> None:
    """Sort the bodies of the wanted records of a ``.wandb`` log into the lists, in order.

    The record type is read from the first tags of each FULL chunk without copying it; split
    records (FIRST..LAST, over 32 KiB) are joined and peeked by :func:`_record_type`.
    """
    targets = {SUMMARY: summaries, CONFIG: configs, RUN: runs, EXIT: exits}
    if histories is not None:
        targets[HISTORY] = histories
    if len(data) < HEADER.size:
        raise CorruptRunError(f"{name}: not a W&B run log (only {len(data)} bytes)")
    ident, magic, version = HEADER.unpack_from(data, 0)
    if ident != HEADER_IDENT or magic != HEADER_MAGIC or version != HEADER_VERSION:
        raise CorruptRunError(f"{name}: not a W&B run log (bad header {data[:7]!r})")
    pos, end = HEADER.size, len(data)
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
                    body_length, body_start = _varint(data, i + 1)
                    target.append(data[body_start:body_start + body_length])
                continue
            chunk = data[start:stop]  # a longer ``num`` or a multi-byte tag first: general peek
            number, body_start, body_stop = _record_type(chunk)
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
                number, body_start, body_stop = _record_type(whole)
                target = get(number)
                if target is not None:
                    target.append(whole[body_start:body_stop])


def _fold_exact(raw: dict[bytes, bytes], msg: Any) -> None:
    """Fold a decoded SummaryRecord into ``raw`` (key part wire bytes -> value_json bytes)."""
    for item in msg.update:
        nested = list(item.nested_key)
        for keyed in (True, False):  # one key, two spellings: drop the other so order holds
            raw.pop(_region(nested or [item.key], keyed), None)
        raw[_region(nested or [item.key], not nested)] = item.value_json.encode()
    for item in msg.remove:
        for keyed in (True, False):
            raw.pop(_region(list(item.nested_key) or [item.key], keyed), None)


def _decode_raw(raw: dict[bytes, bytes]) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    paths, values = _PATHS, _VALUES
    for region, value in raw.items():
        path = paths.get(region)
        decoded = values.get(value, _MISS)
        out[path if path is not None else _path_of(region)] = decoded if decoded is not _MISS else _value_of(value)
    return out


def _set_paths(target: dict[str, Any], values: dict[tuple[str, ...], Any]) -> None:
    for parts, value in values.items():
        node = target
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value


def _decode_summary(raw: dict[bytes, bytes], bodies: list[bytes]) -> dict[str, Any]:
    """Turn the folded wire-level summary into a nested dict of decoded JSON values.

    A key written in both spellings (``key`` and a one-element ``nested_key``) by records on
    the fast path keeps the value of whichever record wrote it last.
    """
    paths: dict[tuple[str, ...], list[bytes]] = {}
    for region in raw:
        paths.setdefault(_path_of(region), []).append(region)
    out: dict[str, Any] = {}
    for parts, regions in paths.items():
        if len(regions) == 1:
            value = raw[regions[0]]
        else:  # rare: find the last record that wrote any spelling of this key
            value = raw[regions[0]]
            for body in reversed(bodies):
                hit = next((v for r, v in reversed(_ITEM_RE.findall(body)) if r in regions), None)
                if hit is not None:
                    value = hit
                    break
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = _value_of(value)
    return out


class _PartialRun(Exception):
    """A run read up to a corrupt record: the good part and the damage, for :func:`scan_runs`."""

    def __init__(self, run: RunData, damage: CorruptRunError) -> None:
        super().__init__(str(damage))
        self.run, self.damage = run, damage


def _wandb_state(exit_code: int | None) -> tuple[str, str]:
    if exit_code is None:
        return "running", "running (no exit record)"
    if exit_code == 0:
        return "finished", "finished"
    if exit_code == 130:
        return "stopped", "interrupted (exit code 130)"
    return "failed", f"failed (exit code {exit_code})"


def _clean_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat metrics without W&B's own ``_step``/``_runtime``/``_wandb`` keys."""
    return {k: v for k, v in flatten(summary).items() if not k.startswith("_")}


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are kept as they are."""
    if not prefix and not any(type(v) is dict for v in values.values()):
        return values  # already flat (the common case)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def read_wandb_synced(run_dir: str | os.PathLike[str]) -> RunData:
    """Read a synced W&B run folder's ``files/config.yaml`` and ``files/wandb-summary.json``.

    Without a transaction log to say how the run ended, a synced folder is taken as finished.

    Raises:
        CorruptRunError: For unreadable YAML or JSON.
    """
    run_dir = Path(run_dir)
    files = run_dir / "files"
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    config_file, summary_file = files / "config.yaml", files / "wandb-summary.json"
    if config_file.is_file():
        import yaml

        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CorruptRunError(f"{config_file}: unreadable ({exc})") from exc
        if not isinstance(loaded, dict):
            raise CorruptRunError(f"{config_file}: not a mapping")
        for key, wrapped in loaded.items():
            if key == "_wandb" or str(key).startswith("wandb_version"):
                continue
            config[str(key)] = wrapped.get("value") if isinstance(wrapped, dict) and "value" in wrapped else wrapped
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
        except (OSError, ValueError) as exc:
            raise CorruptRunError(f"{summary_file}: unreadable ({exc})") from exc
        if not isinstance(summary, dict):
            raise CorruptRunError(f"{summary_file}: not a JSON object")
    match = _RUN_DIR_RE.match(run_dir.name)
    return RunData(run_id=match.group(2) if match else run_dir.name, path=run_dir, source="wandb-synced",
                   config=flatten(config), summary=_clean_summary(summary), state="finished", status="synced",
                   started=match.group(1) if match else None)


def read_lictrain_run(run_dir: str | os.PathLike[str], history: bool = False) -> RunData:
    """Read a lictrain run directory's ``run.json`` (and ``metrics.jsonl`` when ``history``).

    ``lmbda`` becomes ``lambda`` (the W&B name). A ``running`` run whose lock file names a
    process of this machine that no longer exists is reported as ``failed`` (status ``crashed``).

    Raises:
        CorruptRunError: For unreadable JSON.
    """
    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise CorruptRunError(f"{run_dir / 'run.json'}: unreadable ({exc})") from exc
    if not isinstance(record, dict):
        raise CorruptRunError(f"{run_dir / 'run.json'}: not a JSON object")
    config = dict(record.get("config") or {})
    if "lmbda" in config:
        config["lambda"] = config.pop("lmbda")
    status = str(record.get("status") or "running")
    if status == "running" and _crashed(run_dir):
        status = "crashed"
    rows = None
    if history:
        path = run_dir / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return RunData(run_id=record.get("wandb_run_id"), path=run_dir, source="run.json", config=flatten(config),
                   summary={k: v for k, v in flatten(record.get("summary") or {}).items()},
                   state=STATE_OF_STATUS.get(status, "failed"), status=status, name=run_dir.name,
                   history=rows, started=record.get("started"))


def _crashed(run_dir: Path) -> bool:
    """Whether ``run_dir``'s lock file names a dead process on this machine."""
    lock = run_dir / ".lictrain.lock"
    try:
        info = json.loads(lock.read_text())
    except (OSError, ValueError):
        return False
    import socket

    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int) or info.get("host") not in (None, socket.gethostname()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


# -- the folder walk ---------------------------------------------------------------------------
@dataclass
class _Found:
    lictrain: list[Path] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)  # .wandb files
    synced: list[str] = field(default_factory=list)  # run dirs with files/ but no .wandb


def _walk(root: Path) -> _Found:
    """Find run files below ``root`` without following links or entering W&B run folders twice."""
    found = _Found()
    stack = [str(root)]
    while stack:
        top = stack.pop()
        try:
            entries = list(os.scandir(top))
        except OSError as exc:
            log.warning("cannot read %s (%s); skipped", top, exc.strerror)
            continue
        names = {e.name for e in entries}
        base = os.path.basename(top)
        match = _RUN_DIR_RE.match(base)
        if match:  # a W&B run folder: its .wandb log and/or files/, nothing deeper
            log_name = f"run-{match.group(2)}.wandb"
            if log_name in names:
                found.offline.append(os.path.join(top, log_name))
            elif "files" in names and (os.path.isfile(os.path.join(top, "files", "config.yaml"))
                                       or os.path.isfile(os.path.join(top, "files", "wandb-summary.json"))):
                found.synced.append(top)
            continue
        if "run.json" in names:
            found.lictrain.append(Path(top))
        for entry in entries:
            if entry.name.startswith(".") or entry.name in ("__pycache__", "files", "logs", "tmp"):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
            except OSError:
                continue
    return found


def scan_runs(root: str | os.PathLike[str], history: bool = False, workers: int | None = None,
              ) -> tuple[list[RunData], list[str]]:
    """Read every run below ``root``; return (runs, warnings).

    Each run appears once: W&B folders with the same run id are folded (later ones win), and a
    lictrain run directory's ``run.json`` is merged with the W&B run it names. W&B runs inside a
    lictrain run directory that ``run.json`` does not name are earlier, discarded attempts of
    that directory and are dropped. Unreadable files become warnings naming them.

    Raises:
        DataError: If ``root`` does not exist or is not a folder.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"results folder {root} does not exist; pass the --out folder of a sweep or a runs folder")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass the folder that holds the runs")
    found = _walk(root)
    jobs = ([("offline", p) for p in found.offline] + [("synced", p) for p in found.synced]
            + [("lictrain", p) for p in found.lictrain])
    if workers is None:  # processes pay off only with spare cores (forking and pickling cost ~0.1 s)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = 1 if cpus <= 2 else min(cpus, 8)
    results: list[tuple[RunData | None, str | None]] = []
    if workers > 1 and len(jobs) >= PARALLEL_MIN_RUNS and _can_fork():
        _proto()  # imported before the fork, so every worker has it for free
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        chunks = [jobs[i::workers] for i in range(workers)]
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                for part in pool.map(_read_jobs, chunks, [history] * workers):
                    results.extend(part)
        except (OSError, RuntimeError) as exc:  # no processes here (a sandbox): read in this one
            log.debug("parallel read failed (%s); reading serially", exc)
            results = _read_jobs(jobs, history)
    else:
        results = _read_jobs(jobs, history)
    runs = [run for run, _ in results if run is not None]
    warnings = [w for _, w in results if w]
    wandb_runs = [r for r in runs if r.source != "run.json"]
    ours = [r for r in runs if r.source == "run.json"]
    return _merge(wandb_runs, ours), warnings


#: below this many run files, one process reads them all (forking costs more than it saves)
PARALLEL_MIN_RUNS = 200


def _can_fork() -> bool:
    """Fork only where it is the platform's cheap default and no other thread could hold a lock."""
    import threading

    return hasattr(os, "fork") and os.name == "posix" and threading.active_count() == 1


def _read_jobs(jobs: list[tuple[str, Path]], history: bool) -> list[tuple[RunData | None, str | None]]:
    """Read each (kind, path) job; a problem becomes a warning line instead of an exception."""
    out: list[tuple[RunData | None, str | None]] = []
    for kind, path in jobs:
        try:
            if kind == "offline":
                out.append((read_wandb_offline(path, history=history), None))
            elif kind == "synced":
                out.append((read_wandb_synced(path), None))
            else:
                out.append((read_lictrain_run(path, history=history), None))
        except _PartialRun as partial:
            out.append((partial.run, f"{partial.damage}; kept the records before it"))
        except CorruptRunError as exc:
            out.append((None, f"{exc}; skipped"))
    return out


def _merge(wandb_runs: list[RunData], ours: list[RunData]) -> list[RunData]:
    by_id: dict[str, RunData] = {}
    anonymous: list[RunData] = []
    # Fold W&B folders of one run id in time order (a resumed run continues in a new folder).
    for run in sorted(wandb_runs, key=lambda r: (r.started or "", str(r.path))):
        if not run.run_id:
            anonymous.append(run)
            continue
        if run.run_id in by_id:
            earlier = by_id[run.run_id]
            merged = RunData(run_id=run.run_id, path=run.path, source=run.source,
                             config={**earlier.config, **run.config}, summary={**earlier.summary, **run.summary},
                             state=run.state, status=run.status, name=run.name or earlier.name,
                             exit_code=run.exit_code, started=earlier.started,
                             history=(earlier.history or []) + (run.history or [])
                             if earlier.history is not None or run.history is not None else None)
            if run.source != earlier.source:  # offline log + files/ of the same run
                merged.source = "+".join(dict.fromkeys(earlier.source.split("+") + run.source.split("+")))
            by_id[run.run_id] = merged
        else:
            by_id[run.run_id] = run
    rows: list[RunData] = []
    lictrain_dirs = {str(r.path) for r in ours}
    for run in ours:
        mine = by_id.pop(run.run_id, None) if run.run_id else None
        if mine is not None:
            run.fill_from(mine)
        rows.append(run)
    for run in list(by_id.values()) + anonymous:
        owner = _owner(str(run.path), lictrain_dirs) if lictrain_dirs else None
        if owner is not None:
            log.debug("dropping W&B run %s in %s: run.json names another W&B run", run.run_id, owner)
            continue
        rows.append(run)
    return rows


def _owner(path: str, dirs: set[str]) -> str | None:
    """The folder of ``dirs`` that contains ``path`` (string walk up: no pathlib per run)."""
    parent = os.path.dirname(path)
    while parent and parent != path:
        if parent in dirs:
            return parent
        path, parent = parent, os.path.dirname(parent)
    return None
