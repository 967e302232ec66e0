"""Read a W&B offline run log (``offline-run-<time>-<id>/run-<id>.wandb``).

The framing is read by :mod:`lictrain.analysis.wandb_log`; each record is one
``wandb.proto.wandb_internal_pb2.Record`` -- wandb's own protobuf definition, which we use to
decode it. Only the records that matter (run, config, summary, exit) are decoded, located by
peeking at each record's field tags; history rows are skipped unless asked for. Summary values
stay raw bytes until the last update of each key is known. Re-exported by
:mod:`lictrain.analysis.readers`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Iterable

from lictrain.analysis.run_data import RUN_DIR_RE, CorruptRunError, PartialRun, RunData, clean_summary, flatten
from lictrain.analysis.wandb_log import CONFIG, EXIT, HISTORY, RUN, SUMMARY, split_log
from lictrain.errors import DataError
from lictrain.varint import decode_varint, encode_varint

__all__ = ["read_wandb_offline", "proto", "wandb_state", "TAIL_RECORDS"]

_pb: Any = None


def proto() -> Any:
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
        _set_path(target, tuple(item.nested_key) or (item.key,), _json(item.value_json))


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
        out += tag + encode_varint(len(raw)) + raw
    return out


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
        length, pos = decode_varint(region, pos + 1)
        parts.append(region[pos:pos + length].decode("utf-8", "replace"))
        pos += length
    return tuple(parts)


@dataclass
class _Records:
    """The bodies of a log's wanted records, by type, in log order."""

    summaries: list[bytes] = field(default_factory=list)
    configs: list[bytes] = field(default_factory=list)
    runs: list[bytes] = field(default_factory=list)
    exits: list[bytes] = field(default_factory=list)
    histories: list[bytes] | None = None  # None: history rows not wanted


@dataclass
class _Decoded:
    """What the records said, filled in place (a bad record keeps what came before it)."""

    config: dict[str, Any] = field(default_factory=dict)
    raw: dict[bytes, bytes] = field(default_factory=dict)  # summary: key part wire bytes -> value_json bytes
    run_id: str | None = None
    display: str | None = None
    exit_code: int | None = None
    rows: list[dict[str, Any]] | None = None


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
        PartialRun: When a record part-way is corrupt: carries the run read up to it.
    """
    name = os.fspath(path)
    data = _read_bytes(name)
    pb = proto()
    records = _Records(histories=[] if history else None)
    damage: CorruptRunError | None = None
    try:
        split_log(data, name, records.summaries, records.configs, records.runs, records.exits, records.histories)
    except CorruptRunError as exc:
        damage = exc
    if not records.runs:
        raise damage or CorruptRunError(f"{name}: no run record (not a W&B run log?)")
    decoded = _Decoded()
    try:
        _decode_records(pb, records, decoded, exact)
    except Exception as exc:  # a protobuf DecodeError
        damage = damage or CorruptRunError(f"{name}: undecodable record ({type(exc).__name__}: {exc})")
    run = _run_data(name, decoded, _decode_summary(decoded.raw, records.summaries))
    if damage is not None:
        run.status = f"{run.status}; {damage}"
        raise PartialRun(run, damage)
    return run


def _read_bytes(name: str) -> bytes:
    try:
        with open(name, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CorruptRunError(f"{name}: cannot read ({exc.strerror})") from exc


def _decode_records(pb: Any, records: _Records, out: _Decoded, exact: bool) -> None:
    """Decode the run, config, summary, exit and (when wanted) history records into ``out``."""
    for body in records.runs:
        msg = pb.RunRecord.FromString(body)
        out.run_id = msg.run_id or out.run_id
        out.display = msg.display_name or out.display
        found = None if exact else _fast_items(msg.config.SerializeToString())  # same item layout
        if found is not None:
            _set_paths(out.config, _decode_raw(dict(found)))
        else:
            _apply_items(out.config, msg.config.update)
        _fold_exact(out.raw, msg.summary)
    for body in records.configs:
        msg = pb.ConfigRecord.FromString(body)
        _apply_items(out.config, msg.update)
        _remove_items(out.config, msg.remove)
    _fold_summaries(pb, records, out.raw, exact)
    for body in records.exits:
        out.exit_code = pb.RunExitRecord.FromString(body).exit_code
    if records.histories is not None:
        out.rows = []
        for body in records.histories:
            row: dict[str, Any] = {}
            _apply_items(row, pb.HistoryRecord.FromString(body).item)
            out.rows.append(row)


def _fold_summaries(pb: Any, records: _Records, raw: dict[bytes, bytes], exact: bool) -> None:
    """Fold the summary records into ``raw``: the fast regex path where it is exact, else protobuf."""
    fast = not exact
    if fast:  # drop ``_wandb.runtime`` + ``_runtime``-only records: W&B's own clock, dropped anyway
        records.summaries = [b for b in records.summaries
                             if not (b[2:19] == _RUNTIME_KEY and b.count(b"\x82\x01") == 2 and _RUNTIME_ALIAS in b)]
    summaries = records.summaries
    items = (_tail_items(summaries) or _fast_items(b"".join(summaries))) if fast else None
    if items is not None:
        raw.update(items)
        return
    for body in summaries:
        found = _fast_items(body) if fast else None
        if found is not None:
            raw.update(found)
        else:
            _fold_exact(raw, pb.SummaryRecord.FromString(body))


def _run_data(name: str, decoded: _Decoded, summary: dict[str, Any]) -> RunData:
    """The :class:`RunData` of the log ``name``; the run id and start time fall back on its folder's name."""
    parent = os.path.dirname(name)
    match = RUN_DIR_RE.match(os.path.basename(parent))
    decoded.config.pop("_wandb", None)
    run = RunData(run_id=decoded.run_id or (match.group(2) if match else None), path=Path(parent),
                  source="wandb-offline", config=flatten(decoded.config), summary=clean_summary(summary),
                  name=decoded.display, exit_code=decoded.exit_code, history=decoded.rows,
                  started=match.group(1) if match else None)
    run.state, run.status = wandb_state(decoded.exit_code)
    return run


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


def _set_path(target: dict[str, Any], parts: tuple[str, ...], value: Any) -> None:
    """``target[p0][p1]...[pn] = value``, creating (or replacing non-dict) nodes on the way."""
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _set_paths(target: dict[str, Any], values: dict[tuple[str, ...], Any]) -> None:
    for parts, value in values.items():
        _set_path(target, parts, value)


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
        _set_path(out, parts, _value_of(value))
    return out


def wandb_state(exit_code: int | None) -> tuple[str, str]:
    """``(state, status)`` of a W&B run from its exit code (``None``: no exit record, still running)."""
    if exit_code is None:
        return "running", "running (no exit record)"
    if exit_code == 0:
        return "finished", "finished"
    if exit_code == 130:
        return "stopped", "interrupted (exit code 130)"
    return "failed", f"failed (exit code {exit_code})"
