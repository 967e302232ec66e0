"""The tracking file and the records it holds: which checkpoints a run directory keeps.

``checkpoint_tracking.json`` lists the last N / best M checkpoints of a run directory plus
per-file metadata (:class:`Record`). A manager (or ``resolve_checkpoint``) trusts the files
over it: files of ours missing from it are adopted (their metadata is inside them), a
missing or corrupt tracking file is rebuilt from the files, with a warning
(:func:`scan_directory`). Only ``checkpoint_epoch<digits>.pt`` files directly inside
``save_dir`` are ever deleted (:func:`delete_checkpoint`); anything else a (tampered)
tracking file names is ignored, with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from lictrain.checkpoint.integrity import warn_once
from lictrain.checkpoint.io import load_checkpoint_file
from lictrain.errors import CheckpointError

# The manager's logger: records keep the name they had before the split.
log = logging.getLogger("lictrain.checkpoint.manager")

TRACKING_FILE = "checkpoint_tracking.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_epoch(\d{5,})\.pt$")
FORMAT_VERSION = 1
KIND_FULL = "full"
KIND_WEIGHTS = "weights"


def checkpoint_filename(epoch: int) -> str:
    """The file name the manager uses for ``epoch``: ``checkpoint_epoch{epoch:05d}.pt``."""
    return f"checkpoint_epoch{int(epoch):05d}.pt"


# --------------------------------------------------------------------------- records


@dataclass
class Record:
    """One checkpoint file as the tracking file records it (name, epoch, metric, save order)."""

    name: str
    epoch: int
    metric: float | None  # None when missing or not finite
    metric_name: str
    seq: int
    best_eligible: bool
    kind: str = KIND_FULL
    size: int = -1  # file size and mtime when recorded: a mismatch means "read the file"
    mtime_ns: int = -1

    def stamp(self, path: Path) -> None:
        try:
            st = path.stat()
        except OSError:
            return
        self.size, self.mtime_ns = st.st_size, st.st_mtime_ns

    def matches(self, path: Path) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        return (self.size, self.mtime_ns) == (st.st_size, st.st_mtime_ns)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("name")
        return d

    @classmethod
    def from_json(cls, name: str, d: Any) -> Record | None:
        if not isinstance(d, dict):
            return None
        try:
            metric = d.get("metric")
            metric = None if metric is None else float(metric)
            if metric is not None and not math.isfinite(metric):
                metric = None
            kind = d.get("kind", KIND_FULL)
            return cls(
                name=name,
                epoch=int(d["epoch"]),
                metric=metric,
                metric_name=str(d.get("metric_name", "")),
                seq=int(d["seq"]),
                best_eligible=bool(d.get("best_eligible", True)),
                kind=kind if kind in (KIND_FULL, KIND_WEIGHTS) else KIND_FULL,
                size=int(d.get("size", -1)),
                mtime_ns=int(d.get("mtime_ns", -1)),
            )
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def from_checkpoint(cls, name: str, ckpt: Mapping[str, Any]) -> Record:
        meta = ckpt.get("lictrain") if isinstance(ckpt.get("lictrain"), Mapping) else {}
        m = CHECKPOINT_PATTERN.match(name)
        epoch = ckpt.get("epoch", int(m.group(1)) if m else -1)
        value = ckpt.get("metric_value")
        try:
            metric = None if value is None else float(value)
        except (TypeError, ValueError):
            metric = None
        if metric is not None and not math.isfinite(metric):
            metric = None
        kind = meta.get("kind", KIND_FULL)
        return cls(
            name=name,
            epoch=int(epoch),
            metric=metric,
            metric_name=str(ckpt.get("metric", "")),
            seq=int(meta.get("seq", int(epoch))),
            best_eligible=bool(meta.get("best_eligible", True)),
            kind=kind if kind in (KIND_FULL, KIND_WEIGHTS) else KIND_FULL,
        )


def order_key(r: Record) -> tuple[int, int]:
    """Sort key putting records in save order (``seq``, then epoch)."""
    return (r.seq, r.epoch)


def select_last(records: Mapping[str, Record], keep_last_n: int) -> list[Record]:
    """The ``keep_last_n`` most recently saved records, oldest first."""
    ordered = sorted(records.values(), key=order_key)
    return ordered[-keep_last_n:]


def rank_best(
    records: Mapping[str, Record], metric: str, higher_is_better: bool
) -> list[Record]:
    """The records rankable by ``metric``, best first (ties: the one saved first)."""
    sign = -1.0 if higher_is_better else 1.0
    ranked = [
        r
        for r in records.values()
        if r.best_eligible and r.metric is not None and r.metric_name == metric
    ]
    return sorted(ranked, key=lambda r: (sign * r.metric, r.seq, r.epoch))  # type: ignore[operator]


def _inside(save_dir: Path, candidate: Path) -> bool:
    try:
        return candidate.resolve().parent == save_dir.resolve()
    except OSError:
        return False


def _tracked_name(save_dir: Path, entry: Any) -> str | None:
    """The file name a tracking entry refers to, if it is one of ours inside ``save_dir``."""
    if not isinstance(entry, str) or not entry:
        return None
    p = Path(entry)
    if not p.is_absolute():
        p = save_dir / p
    if not CHECKPOINT_PATTERN.match(p.name) or not _inside(save_dir, p):
        return None
    return p.name


def scan_directory(save_dir: Path, *, quiet: bool = False) -> tuple[dict[str, Record], dict]:
    """Reconcile the tracking file with the checkpoint files present (read-only).

    Returns:
        ``(records by file name, parsed tracking dict or {})``.
    """
    warn = log.debug if quiet else log.warning
    present = _present_checkpoints(save_dir, warn)
    tracking = _read_tracking(save_dir, len(present), warn)
    meta = tracking.get("checkpoints", {})
    if not isinstance(meta, dict):
        meta = {}
    _warn_about_mentions(save_dir, tracking, meta, set(present), warn)
    untracked = sorted(set(present) - set(meta))
    if untracked and tracking:
        log.info(
            "adopting %d checkpoint file(s) the tracking file in %s does not list (an earlier "
            "run stopped mid-save): %s", len(untracked), save_dir, ", ".join(untracked),
        )
    return _load_records(save_dir, present, meta, quiet=quiet, warn=warn), tracking


def _present_checkpoints(save_dir: Path, warn: Callable[..., None]) -> list[str]:
    """The names of our checkpoint files directly inside ``save_dir`` (links out are skipped)."""
    present: list[str] = []
    try:
        entries = list(os.scandir(save_dir))
    except OSError as exc:
        raise CheckpointError(f"cannot list checkpoint directory {save_dir}: {exc}") from exc
    for e in entries:
        if CHECKPOINT_PATTERN.match(e.name) and e.is_file():
            if _inside(save_dir, Path(e.path)):
                present.append(e.name)
            else:
                warn("ignoring %s: it links outside %s", e.path, save_dir)
    return present


def _read_tracking(save_dir: Path, num_present: int, warn: Callable[..., None]) -> dict[str, Any]:
    """The parsed tracking file, or ``{}`` (with a warning) when missing or unreadable."""
    tracking_path = save_dir / TRACKING_FILE
    if tracking_path.exists():
        try:
            tracking = json.loads(tracking_path.read_text(encoding="utf-8"))
            if not isinstance(tracking, dict):
                raise ValueError("top level is not an object")
            return tracking
        except (OSError, ValueError) as exc:
            warn(
                "checkpoint tracking file %s is unreadable (%s); rebuilding it from the %d "
                "checkpoint file(s) present", tracking_path, exc, num_present,
            )
    elif num_present:
        warn(
            "no checkpoint tracking file in %s; rebuilding it from the %d checkpoint file(s) "
            "present", save_dir, num_present,
        )
    return {}


def _warn_about_mentions(
    save_dir: Path, tracking: Mapping[str, Any], meta: Mapping[str, Any], present: set[str],
    warn: Callable[..., None],
) -> None:
    """Warn about names the tracking file mentions that are not ours or are missing."""
    mentioned: list[Any] = []
    last = tracking.get("last_checkpoints", [])
    if isinstance(last, list):
        mentioned.extend(last)
    best = tracking.get("best_checkpoints", [])
    if isinstance(best, list):
        mentioned.extend(b.get("path") if isinstance(b, dict) else b for b in best)
    mentioned.extend(meta.keys())
    for entry in mentioned:
        name = _tracked_name(save_dir, entry)
        if name is None:
            warn(
                "checkpoint tracking file in %s names %r, which is not a checkpoint of this "
                "directory; ignoring it (it will never be deleted)", save_dir, entry,
            )
        elif name not in present:
            warn("checkpoint %s listed in the tracking file is missing; forgetting it", name)


def _load_records(
    save_dir: Path, present: list[str], meta: Mapping[str, Any], *, quiet: bool,
    warn: Callable[..., None],
) -> dict[str, Record]:
    """One record per present file: the tracking file's, else read from the file itself."""
    records: dict[str, Record] = {}
    for name in present:
        # Trust the tracking file's metadata only while the file is the one it described
        # (a crash after os.replace but before the tracking update leaves a newer file).
        rec = Record.from_json(name, meta.get(name)) if name in meta else None
        if rec is not None and not rec.matches(save_dir / name):
            rec = None
        if rec is None:
            try:
                ckpt = load_checkpoint_file(save_dir / name, mmap=True)
            except CheckpointError as exc:
                if quiet:
                    warn("skipping unreadable checkpoint: %s", exc)
                else:
                    warn_once(log, save_dir / name, "skipping unreadable checkpoint: %s", exc)
                continue
            rec = Record.from_checkpoint(name, ckpt)
            rec.stamp(save_dir / name)
            del ckpt
        records[name] = rec
    return records


def tracking_text(
    records: Mapping[str, Record],
    last: list[Record],
    best: list[Record],
    *,
    metric: str,
    higher_is_better: bool,
    keep_last_n: int,
    keep_best: int,
    next_seq: int,
) -> str:
    """The tracking file's JSON text: the settings, the kept last N / best M and every record."""
    data = {
        "version": FORMAT_VERSION,
        "metric_name": metric,
        "higher_is_better": higher_is_better,
        "keep_last_n": keep_last_n,
        "keep_best": keep_best,
        "latest": last[-1].name if last else None,
        "last_checkpoints": [r.name for r in last],
        "best_checkpoints": [
            {"path": r.name, "metric": r.metric, "epoch": r.epoch} for r in best
        ],
        "checkpoints": {
            r.name: r.to_json() for r in sorted(records.values(), key=order_key)
        },
        "next_seq": next_seq,
    }
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def check_tracking_settings(
    tracking: Mapping[str, Any],
    save_dir: Path,
    metric: str,
    higher_is_better: bool,
    keep_last_n: int,
) -> None:
    """Warn when the tracking file was written with another metric or ranking direction."""
    old_metric = tracking.get("metric_name")
    if isinstance(old_metric, str) and old_metric != metric:
        log.warning(
            "checkpoints in %s were ranked by %r; this manager ranks by %r, so existing "
            "checkpoints stay only while among the last %d",
            save_dir, old_metric, metric, keep_last_n,
        )
    old_hib = tracking.get("higher_is_better")
    if isinstance(old_hib, bool) and old_hib != higher_is_better:
        log.warning(
            "checkpoints in %s were ranked with higher_is_better=%s; re-ranking with %s",
            save_dir, old_hib, higher_is_better,
        )


def delete_checkpoint(save_dir: Path, name: str) -> None:
    """Delete one of our checkpoint files: pattern-matched and directly in save_dir."""
    path = save_dir / name
    if not CHECKPOINT_PATTERN.match(name) or not _inside(save_dir, path):
        log.warning("refusing to delete %s: not a checkpoint file of %s", path, save_dir)
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not delete old checkpoint %s: %s", path, exc)


def int_or(value: Any, default: int) -> int:
    """``int(value)``, or ``default`` when that fails (a tampered tracking file)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default

