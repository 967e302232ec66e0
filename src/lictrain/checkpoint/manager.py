"""CheckpointManager: the last N plus the best M checkpoints, crash-safe and safe to load.

Layout of a run directory written by :class:`CheckpointManager`::

    save_dir/
      checkpoint_epoch00042.pt      one file per kept checkpoint (torch.save, zip format)
      checkpoint_tracking.json      which files are the last N / best M (rewritten atomically)
      .lictrain.lock                held while a run writes here (pid inside)
      .tmp-lictrain-*               in-flight writes; swept when a manager opens the dir

Rules (see ``docs/checkpoints.md``):

* **Retention.** After every save the checkpoint files are exactly the union of the last
  ``keep_last_n`` saved (by save order) and the best ``keep_best`` by metric.
* **Ranking.** Finite metric values only; NaN/inf (or ``None``) is kept as a recent
  checkpoint but never ranked best, with a warning. ``is_best=None`` (default) or ``True``:
  ranked by its metric; ``is_best=False``: never ranked best (a recent checkpoint only). Ties go
  to the checkpoint saved first.
* **Crash safety.** Each file is written to a temporary in ``save_dir``, flushed, fsynced,
  renamed into place (``os.replace``) and the directory fsynced; only then is the tracking file
  rewritten (same way), and only then are dropped checkpoints deleted. ``kill -9`` at any
  moment leaves the latest checkpoint whole. A new manager trusts the files over the tracking
  file: files of ours missing from it are adopted (their metadata is inside them), a missing
  or corrupt tracking file is rebuilt from the files, with a warning.
* **Deletion.** Only ``checkpoint_epoch<digits>.pt`` files directly inside ``save_dir`` are
  ever deleted. Anything else a (tampered) tracking file names is ignored, with a warning.
* **Async.** ``save_checkpoint`` copies the state to CPU (tensors cloned, detached) and hands
  the write to one background thread, so training blocks only for the copy. ``wait()``,
  ``close()``, ``latest_checkpoint``, ``best_checkpoint``, ``load()`` and interpreter exit
  flush pending writes; a failed write is raised as :class:`CheckpointError` by the next call.
* **Safe loading.** Always ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import pickle
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from lictrain.checkpoint.lock import RunDirLock
from lictrain.errors import CheckpointError, ConfigError

__all__ = [
    "CHECKPOINT_PATTERN",
    "TRACKING_FILE",
    "CheckpointManager",
    "checkpoint_filename",
    "load_checkpoint",
    "resolve_checkpoint",
]

log = logging.getLogger(__name__)

TRACKING_FILE = "checkpoint_tracking.json"
TMP_PREFIX = ".tmp-lictrain-"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_epoch(\d{5,})\.pt$")
FORMAT_VERSION = 1
KIND_FULL = "full"
KIND_WEIGHTS = "weights"
_RESERVED_KEYS = frozenset(
    {"epoch", "model_state", "optimizer_state", "metric", "metric_value", "lictrain"}
)
_MAX_PENDING = 1  # queued writes (besides the one being written) before save_checkpoint waits
_LEAF_TYPES = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device)


def checkpoint_filename(epoch: int) -> str:
    """The file name the manager uses for ``epoch``: ``checkpoint_epoch{epoch:05d}.pt``."""
    return f"checkpoint_epoch{int(epoch):05d}.pt"


# --------------------------------------------------------------------------- loading


def load_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu", *, mmap: bool = False
) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); a directory means its latest.

    Args:
        path: A checkpoint file, or a run directory (its latest checkpoint is loaded).
        map_location: Passed to :func:`torch.load` (default ``"cpu"``).
        mmap: Memory-map the tensors instead of reading them (zip-format files only).

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: If the file is missing, truncated or corrupt, is not a dict, or needs
            arbitrary Python objects to load (such checkpoints are refused, never executed).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = resolve_checkpoint(p)
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint {p} does not exist; pass an existing checkpoint file or a run directory"
        )
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


def resolve_checkpoint(path_or_dir: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``path_or_dir`` names: the file itself, or a directory's latest.

    A directory's latest is the most recently *saved* checkpoint (not the highest epoch),
    read from its tracking file plus any checkpoint files the tracking file misses. Nothing is
    written or deleted, and the directory need not be unlocked.

    Raises:
        CheckpointError: If the path does not exist or the directory holds no checkpoint.
    """
    p = Path(path_or_dir).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        records, _ = _scan_directory(p, quiet=True)
        if records:
            latest = max(records.values(), key=_order_key)
            return p / latest.name
        raise CheckpointError(
            f"no lictrain checkpoint (checkpoint_epoch*.pt) in {p}; pass a checkpoint file or "
            "the save directory of a run that saved one"
        )
    raise CheckpointError(
        f"checkpoint {p} does not exist; pass a checkpoint file or a run directory"
    )


# --------------------------------------------------------------------------- records


@dataclass
class _Record:
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
    def from_json(cls, name: str, d: Any) -> _Record | None:
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
    def from_checkpoint(cls, name: str, ckpt: Mapping[str, Any]) -> _Record:
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


def _order_key(r: _Record) -> tuple[int, int]:
    return (r.seq, r.epoch)


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


def _scan_directory(save_dir: Path, *, quiet: bool = False) -> tuple[dict[str, _Record], dict]:
    """Reconcile the tracking file with the checkpoint files present (read-only).

    Returns:
        ``(records by file name, parsed tracking dict or {})``.
    """
    warn = log.debug if quiet else log.warning
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

    tracking: dict[str, Any] = {}
    tracking_path = save_dir / TRACKING_FILE
    if tracking_path.exists():
        try:
            tracking = json.loads(tracking_path.read_text(encoding="utf-8"))
            if not isinstance(tracking, dict):
                raise ValueError("top level is not an object")
        except (OSError, ValueError) as exc:
            warn(
                "checkpoint tracking file %s is unreadable (%s); rebuilding it from the %d "
                "checkpoint file(s) present", tracking_path, exc, len(present),
            )
            tracking = {}
    elif present:
        warn(
            "no checkpoint tracking file in %s; rebuilding it from the %d checkpoint file(s) "
            "present", save_dir, len(present),
        )

    # Which names does the tracking file mention, and are they ours?
    mentioned: list[Any] = []
    last = tracking.get("last_checkpoints", [])
    if isinstance(last, list):
        mentioned.extend(last)
    best = tracking.get("best_checkpoints", [])
    if isinstance(best, list):
        mentioned.extend(b.get("path") if isinstance(b, dict) else b for b in best)
    meta = tracking.get("checkpoints", {})
    if not isinstance(meta, dict):
        meta = {}
    mentioned.extend(meta.keys())
    present_set = set(present)
    for entry in mentioned:
        name = _tracked_name(save_dir, entry)
        if name is None:
            warn(
                "checkpoint tracking file in %s names %r, which is not a checkpoint of this "
                "directory; ignoring it (it will never be deleted)", save_dir, entry,
            )
        elif name not in present_set:
            warn("checkpoint %s listed in the tracking file is missing; forgetting it", name)

    untracked = sorted(set(present) - set(meta))
    if untracked and tracking:
        log.info(
            "adopting %d checkpoint file(s) the tracking file in %s does not list (an earlier "
            "run stopped mid-save): %s", len(untracked), save_dir, ", ".join(untracked),
        )
    records: dict[str, _Record] = {}
    for name in present:
        # Trust the tracking file's metadata only while the file is the one it described
        # (a crash after os.replace but before the tracking update leaves a newer file).
        rec = _Record.from_json(name, meta.get(name)) if name in meta else None
        if rec is not None and not rec.matches(save_dir / name):
            rec = None
        if rec is None:
            try:
                ckpt = load_checkpoint(save_dir / name, mmap=True)
            except CheckpointError as exc:
                warn("skipping unreadable checkpoint: %s", exc)
                continue
            rec = _Record.from_checkpoint(name, ckpt)
            rec.stamp(save_dir / name)
            del ckpt
        records[name] = rec
    return records, tracking


# --------------------------------------------------------------------------- snapshots


class _BufferPool:
    """CPU tensors of the last written checkpoint, reused by the next snapshot.

    Copying into memory that is already mapped avoids the page faults of fresh allocations,
    which dominate the copy on many machines (several times a plain memcpy). Buffers for GPU
    tensors are pinned, so the device-to-host copies run asynchronously. The pool holds at
    most one checkpoint's worth of tensors; a buffer is handed out only after the write that
    used it finished, and never twice.
    """

    def __init__(self) -> None:
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(t: torch.Tensor, pinned: bool) -> tuple:
        return (t.dtype, tuple(t.shape), pinned)

    def take(self, t: torch.Tensor, pinned: bool) -> torch.Tensor | None:
        with self._lock:
            free = self._free.get(self._key(t, pinned))
            return free.pop() if free else None

    def refill(self, payload: Any) -> None:
        """Offer the tensors of a payload that has been written (replacing the old pool)."""
        fresh: dict[tuple, list[torch.Tensor]] = {}
        stack = [payload]
        while stack:
            obj = stack.pop()
            if isinstance(obj, torch.Tensor):
                if obj.device.type == "cpu" and obj.numel() > 0 and obj._base is None:
                    fresh.setdefault(self._key(obj, obj.is_pinned()), []).append(obj)
            elif isinstance(obj, Mapping):
                stack.extend(obj.values())
            elif isinstance(obj, (list, tuple, set)):
                stack.extend(obj)
        with self._lock:
            self._free = fresh

    def clear(self) -> None:
        with self._lock:
            self._free = {}


class _SnapshotContext:
    def __init__(self, pool: _BufferPool | None) -> None:
        self.pool = pool
        self.cuda = False


def _snapshot(obj: Any, where: str, ctx: _SnapshotContext) -> Any:
    """Deep-copy ``obj`` to CPU: tensors detached and copied, containers rebuilt.

    Raises:
        CheckpointError: For a value ``torch.load(weights_only=True)`` could not load back.
    """
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        on_cuda = t.device.type == "cuda"
        if t.device.type != "cpu" and not on_cuda:
            return t.to("cpu")  # other accelerators: a plain synchronous copy
        buf = ctx.pool.take(t, on_cuda) if ctx.pool is not None else None
        if buf is None:
            if not on_cuda:
                return t.clone()
            buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        buf.copy_(t, non_blocking=on_cuda)
        ctx.cuda = ctx.cuda or on_cuda
        return buf
    if type(obj) in _LEAF_TYPES or isinstance(obj, torch.Size):
        return obj
    if isinstance(obj, Mapping):
        out: dict = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            if type(k) not in (str, int, float, bool, type(None)):
                raise _unsafe(f"{where} key {k!r}", k)
            out[k] = _snapshot(v, f"{where}[{k!r}]", ctx)
        return out
    if type(obj) in (list, tuple):
        items = [_snapshot(v, f"{where}[{i}]", ctx) for i, v in enumerate(obj)]
        return items if type(obj) is list else tuple(items)
    if type(obj) is set:
        return {_snapshot(v, where, ctx) for v in obj}
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()  # numpy scalar -> python scalar
    raise _unsafe(where, obj)


def _unsafe(where: str, obj: Any) -> CheckpointError:
    t = type(obj)
    hint = (
        "convert it with torch.from_numpy()" if t.__module__ == "numpy"
        else "store tensors, numbers, strings, lists and dicts only (RNG states: "
        "lictrain.checkpoint.capture_rng_state())"
    )
    return CheckpointError(
        f"cannot checkpoint {where}: a {t.__module__}.{t.__qualname__} could not be loaded "
        f"back with weights_only=True; {hint}"
    )


def _has_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, Mapping):
        return any(_has_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return any(_has_tensor(v) for v in obj)
    return False


def _weights_only_payload(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """Strip a full checkpoint to what evaluation needs: model weights plus metadata.

    Kept: ``model_state``, ``epoch``, ``metric``, ``metric_value`` and every other entry that
    holds no tensor (config, names, run ids); dropped: ``optimizer_state`` and every other
    entry holding tensors (other optimisers, RNG states, ...).
    """
    out: dict[str, Any] = {}
    for k, v in ckpt.items():
        if k == "model_state" or (k != "optimizer_state" and not _has_tensor(v)):
            out[k] = v
    meta = dict(ckpt.get("lictrain") or {})
    meta["kind"] = KIND_WEIGHTS
    out["lictrain"] = meta
    return out


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


def _atomic_write(final: Path, write: Callable[[Any], None], *, fsync: bool) -> None:
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


# --------------------------------------------------------------------------- manager


class CheckpointManager:
    """Keep the last ``keep_last_n`` and the best ``keep_best`` checkpoints of a run.

    Args:
        save_dir: The run's checkpoint directory (created if missing). Locked for this
            manager's lifetime: a second manager on it raises :class:`CheckpointError`.
        keep_last_n: Most recent checkpoints kept for resuming (at least 1).
        keep_best: Best checkpoints by ``metric`` kept for evaluation (0 disables).
        metric: Name of the ranked metric (recorded in each checkpoint as ``"metric"``).
        higher_is_better: Rank higher values first (PSNR) instead of lower (loss).
        async_save: Write in a background thread; ``save_checkpoint`` blocks only for the
            copy of the state to CPU. With ``False`` every save is durable on return.
        best_weights_only: Keep best checkpoints that dropped out of the last N as weights
            only (model state plus tensor-free metadata, no optimiser state): about a third of
            the disk of a full checkpoint with Adam state. They can be evaluated, not resumed.
        fsync: fsync files and the directory (crash safety against power loss, not just
            ``kill -9``). Leave on outside tests and benchmarks.
        reuse_buffers: Copy each snapshot into the CPU tensors of the previous, already
            written one (pinned for GPU tensors) instead of fresh memory: the copy, which is
            all training waits for, gets several times faster, at the price of keeping one
            copy of the state in host memory between saves.

    Raises:
        ConfigError: For a bad argument.
        CheckpointError: If ``save_dir`` cannot be created or another run holds it.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        keep_last_n: int = 5,
        keep_best: int = 3,
        metric: str = "loss",
        higher_is_better: bool = False,
        async_save: bool = True,
        best_weights_only: bool = False,
        *,
        fsync: bool = True,
        reuse_buffers: bool = True,
    ) -> None:
        if isinstance(keep_last_n, bool) or not isinstance(keep_last_n, int) or keep_last_n < 1:
            raise ConfigError(
                f"keep_last_n must be an integer >= 1 (the latest checkpoint is needed to "
                f"resume), got {keep_last_n!r}"
            )
        if isinstance(keep_best, bool) or not isinstance(keep_best, int) or keep_best < 0:
            raise ConfigError(f"keep_best must be an integer >= 0, got {keep_best!r}")
        if not isinstance(metric, str) or not metric:
            raise ConfigError(f"metric must be a non-empty name such as 'loss', got {metric!r}")
        self.save_dir = Path(save_dir).expanduser()
        self.keep_last_n = keep_last_n
        self.keep_best = keep_best
        self.metric = metric
        self.higher_is_better = bool(higher_is_better)
        self.async_save = bool(async_save)
        self.best_weights_only = bool(best_weights_only)
        self.fsync = bool(fsync)
        self._pool = _BufferPool() if reuse_buffers else None
        self.tracking_file = self.save_dir / TRACKING_FILE

        if self.save_dir.exists() and not self.save_dir.is_dir():
            raise CheckpointError(
                f"checkpoint directory {self.save_dir} is a file; choose a directory path"
            )
        try:
            self.save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"cannot create checkpoint directory {self.save_dir}: {exc}; choose a writable path"
            ) from exc

        self._lock = RunDirLock(self.save_dir).acquire()
        self._state_lock = threading.RLock()
        self._errors: list[BaseException] = []
        self._queue: queue.Queue | None = None
        self._worker: threading.Thread | None = None
        self._closed = False
        try:
            self._sweep_temporaries()
            self._records, tracking = _scan_directory(self.save_dir)
            self._next_seq = max(
                [r.seq + 1 for r in self._records.values()]
                + [_int_or(tracking.get("next_seq"), 0)]
            )
            self._check_tracking_settings(tracking)
        except BaseException:
            self._lock.release()
            raise
        atexit.register(self._atexit)

    # ------------------------------------------------------------------ public API

    def save_checkpoint(
        self,
        epoch: int,
        model_state: Mapping[str, Any],
        optimizer_state: Mapping[str, Any] | None = None,
        metric_value: float | None = None,
        is_best: bool | None = None,
        **extra: Any,
    ) -> Path:
        """Save a checkpoint for ``epoch`` and apply retention.

        Args:
            epoch: Epoch number (>= 0); names the file ``checkpoint_epoch{epoch:05d}.pt``.
                Saving an epoch again replaces its file.
            model_state: ``model.state_dict()``.
            optimizer_state: ``optimizer.state_dict()`` (or ``None``).
            metric_value: Value of ``self.metric`` for ranking; ``None``, NaN or inf: never
                ranked best (a warning is logged for NaN/inf).
            is_best: ``None`` or ``True``: rank by ``metric_value``; ``False``: never rank
                this checkpoint best (it is kept only while among the last N).
            **extra: Anything else to store (scheduler/aux optimiser states, RNG states, a
                W&B run id, ...): tensors, numbers, strings, lists, dicts.

        Returns:
            The checkpoint's path. With ``async_save`` it is durable after :meth:`wait`
            (``latest_checkpoint`` and :meth:`load` wait by themselves).

        Raises:
            CheckpointError: If an earlier background save failed, the manager is closed, a
                value cannot be stored weights-only, or (synchronous mode) the write fails.
        """
        self._raise_errors()
        if self._closed:
            raise CheckpointError(
                f"CheckpointManager for {self.save_dir} is closed; create a new one to save"
            )
        if isinstance(epoch, bool) or not isinstance(epoch, int) and not _is_int_like(epoch):
            raise ConfigError(f"epoch must be an integer, got {epoch!r}")
        epoch = int(epoch)
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        clash = _RESERVED_KEYS.intersection(extra)
        if clash:
            raise ConfigError(
                f"extra checkpoint entries {sorted(clash)} clash with reserved keys; rename them"
            )
        value = _metric_float(metric_value, self.metric)
        finite = value is not None and math.isfinite(value)
        if value is not None and not finite:
            log.warning(
                "%s=%s at epoch %d is not finite; checkpoint kept as a recent one but never "
                "ranked best", self.metric, value, epoch,
            )
        if is_best is not None and not is_best:
            eligible = False
        else:
            eligible = finite
            if is_best and not finite:
                log.warning(
                    "is_best=True at epoch %d but %s=%s cannot be ranked; not ranked best",
                    epoch, self.metric, value,
                )

        ctx = _SnapshotContext(self._pool)
        payload: dict[str, Any] = {
            "epoch": epoch,
            "model_state": _snapshot(model_state, "model_state", ctx),
            "optimizer_state": _snapshot(optimizer_state, "optimizer_state", ctx),
            "metric": self.metric,
            "metric_value": value,
        }
        for k, v in extra.items():
            payload[k] = _snapshot(v, k, ctx)
        if ctx.cuda:
            torch.cuda.synchronize()

        with self._state_lock:
            seq = self._next_seq
            self._next_seq += 1
        payload["lictrain"] = {
            "format": FORMAT_VERSION,
            "seq": seq,
            "best_eligible": eligible,
            "kind": KIND_FULL,
            "saved_at": time.time(),
        }
        record = _Record(
            name=checkpoint_filename(epoch),
            epoch=epoch,
            metric=value if finite else None,
            metric_name=self.metric,
            seq=seq,
            best_eligible=eligible,
        )
        path = self.save_dir / record.name
        if self.async_save:
            self._ensure_worker()
            assert self._queue is not None
            self._queue.put((payload, record))
        else:
            try:
                self._write(payload, record)
            except CheckpointError:
                raise
            except Exception as exc:
                raise self._write_error(path, exc) from exc
            finally:
                self._recycle(payload)
        return path

    def wait(self) -> None:
        """Block until every pending save is durable; raise a failed one's error."""
        if self._queue is not None and self._worker is not None and self._worker.is_alive():
            self._queue.join()
        self._raise_errors()

    @property
    def latest_checkpoint(self) -> Path | None:
        """The most recently saved checkpoint (waits for pending saves), or ``None``."""
        self.wait()
        with self._state_lock:
            if not self._records:
                return None
            return self.save_dir / max(self._records.values(), key=_order_key).name

    @property
    def best_checkpoint(self) -> Path | None:
        """The best checkpoint by metric (waits for pending saves), or ``None``."""
        best = self.best_checkpoints
        return best[0] if best else None

    @property
    def last_checkpoints(self) -> list[Path]:
        """The kept recent checkpoints, oldest first (waits for pending saves)."""
        self.wait()
        with self._state_lock:
            return [self.save_dir / r.name for r in self._last_records()]

    @property
    def best_checkpoints(self) -> list[Path]:
        """The kept best checkpoints, best first (waits for pending saves)."""
        self.wait()
        with self._state_lock:
            return [self.save_dir / r.name for r in self._best_records()[: self.keep_best]]

    def load(
        self, path: str | os.PathLike[str] | None = None, map_location: Any = "cpu"
    ) -> dict[str, Any]:
        """Load a checkpoint safely (``weights_only=True``).

        Args:
            path: ``None`` for the latest checkpoint; a file; a file name inside ``save_dir``;
                or a directory (its latest).
            map_location: Passed to :func:`torch.load`.

        Returns:
            The checkpoint dict: ``epoch``, ``model_state``, ``optimizer_state``, ``metric``
            (the metric's name), ``metric_value``, ``lictrain`` (bookkeeping) and the extras.
            Weights-only best checkpoints lack ``optimizer_state`` and tensor extras.

        Raises:
            CheckpointError: Nothing saved yet, a missing/corrupt file, or an unsafe one.
        """
        self.wait()
        if path is None:
            latest = self.latest_checkpoint
            if latest is None:
                raise CheckpointError(
                    f"no checkpoint saved in {self.save_dir} yet; save one first or pass a path"
                )
            return load_checkpoint(latest, map_location)
        p = Path(path).expanduser()
        if p.is_dir():
            if _same_dir(p, self.save_dir):
                return self.load(None, map_location)
            return load_checkpoint(resolve_checkpoint(p), map_location)
        if not p.exists() and not p.is_absolute() and (self.save_dir / p).is_file():
            p = self.save_dir / p
        return load_checkpoint(p, map_location)

    def close(self) -> None:
        """Flush pending saves, stop the writer thread and release the directory lock.

        Raises:
            CheckpointError: If a pending save failed (the lock is released regardless).
        """
        if self._closed:
            self._raise_errors()
            return
        self._closed = True
        try:
            if self._queue is not None and self._worker is not None:
                if self._worker.is_alive():
                    self._queue.join()
                    self._queue.put(None)
                    self._worker.join()
        finally:
            self._lock.release()
            atexit.unregister(self._atexit)
            if self._pool is not None:
                self._pool.clear()
        self._raise_errors()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except CheckpointError as err:  # do not mask the exception already propagating
            log.error("%s", err)

    def __repr__(self) -> str:
        return (
            f"CheckpointManager({str(self.save_dir)!r}, keep_last_n={self.keep_last_n}, "
            f"keep_best={self.keep_best}, metric={self.metric!r}, "
            f"higher_is_better={self.higher_is_better})"
        )

    # ------------------------------------------------------------------ internals

    def _atexit(self) -> None:
        try:
            self.close()
        except Exception as exc:  # at exit nobody can catch it: say it loudly
            log.error("checkpoint save did not complete before exit: %s", exc)

    def _ensure_worker(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            return
        self._queue = queue.Queue(maxsize=_MAX_PENDING)
        self._worker = threading.Thread(
            target=self._worker_loop, args=(self._queue,), name="lictrain-checkpoint-writer",
            daemon=True,
        )
        self._worker.start()

    def _worker_loop(self, q: queue.Queue) -> None:
        while True:
            item = q.get()
            try:
                if item is None:
                    return
                payload, record = item
                try:
                    self._write(payload, record)
                except BaseException as exc:
                    path = self.save_dir / record.name
                    err = exc if isinstance(exc, CheckpointError) else self._write_error(path, exc)
                    if err is not exc:
                        err.__cause__ = exc
                    with self._state_lock:
                        self._errors.append(err)
                    log.debug("background checkpoint save failed", exc_info=True)
                finally:
                    self._recycle(payload)
                    del item, payload
            finally:
                q.task_done()

    def _recycle(self, payload: dict[str, Any]) -> None:
        if self._pool is not None and not self._closed:
            self._pool.refill(payload)

    def _write_error(self, path: Path, exc: BaseException) -> CheckpointError:
        return CheckpointError(
            f"saving checkpoint {path} failed ({type(exc).__name__}: {exc}); check free disk "
            "space and permissions of the save directory"
        )

    def _raise_errors(self) -> None:
        with self._state_lock:
            if not self._errors:
                return
            first, more = self._errors[0], len(self._errors) - 1
            self._errors.clear()
        if more:
            raise CheckpointError(f"{first} (and {more} later save(s) failed too)") from first
        raise first

    def _write(self, payload: dict[str, Any], record: _Record) -> None:
        """Write one checkpoint durably, then the tracking file, then apply retention."""
        final = self.save_dir / record.name
        _atomic_write(final, lambda f: torch.save(payload, f), fsync=self.fsync)
        record.stamp(final)
        with self._state_lock:
            self._records[record.name] = record
            keep, drop = self._retention()
            if self.best_weights_only:
                last = {r.name for r in self._last_records()}
                for r in keep:
                    if r.kind == KIND_FULL and r.name not in last:
                        self._convert_to_weights(r)
            for r in drop:
                del self._records[r.name]
            self._write_tracking()
        for r in drop:
            self._delete(r.name)

    def _last_records(self) -> list[_Record]:
        ordered = sorted(self._records.values(), key=_order_key)
        return ordered[-self.keep_last_n :]

    def _best_records(self) -> list[_Record]:
        sign = -1.0 if self.higher_is_better else 1.0
        ranked = [
            r
            for r in self._records.values()
            if r.best_eligible and r.metric is not None and r.metric_name == self.metric
        ]
        return sorted(ranked, key=lambda r: (sign * r.metric, r.seq, r.epoch))  # type: ignore[operator]

    def _retention(self) -> tuple[list[_Record], list[_Record]]:
        keep_names = {r.name for r in self._last_records()}
        keep_names.update(r.name for r in self._best_records()[: self.keep_best])
        keep = [r for r in self._records.values() if r.name in keep_names]
        drop = [r for r in self._records.values() if r.name not in keep_names]
        return keep, drop

    def _convert_to_weights(self, r: _Record) -> None:
        path = self.save_dir / r.name
        try:
            ckpt = load_checkpoint(path, mmap=True)
            slim = _weights_only_payload(ckpt)
            _atomic_write(path, lambda f: torch.save(slim, f), fsync=self.fsync)
            del ckpt, slim
        except (CheckpointError, OSError) as exc:
            log.warning("could not shrink best checkpoint %s to weights only: %s", path, exc)
            return
        r.kind = KIND_WEIGHTS
        r.stamp(path)

    def _write_tracking(self) -> None:
        last = self._last_records()
        best = self._best_records()[: self.keep_best]
        data = {
            "version": FORMAT_VERSION,
            "metric_name": self.metric,
            "higher_is_better": self.higher_is_better,
            "keep_last_n": self.keep_last_n,
            "keep_best": self.keep_best,
            "latest": last[-1].name if last else None,
            "last_checkpoints": [r.name for r in last],
            "best_checkpoints": [
                {"path": r.name, "metric": r.metric, "epoch": r.epoch} for r in best
            ],
            "checkpoints": {
                r.name: r.to_json() for r in sorted(self._records.values(), key=_order_key)
            },
            "next_seq": self._next_seq,
        }
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        _atomic_write(
            self.tracking_file, lambda f: f.write(text.encode("utf-8")), fsync=self.fsync
        )

    def _delete(self, name: str) -> None:
        """Delete one of our checkpoint files: pattern-matched and directly in save_dir."""
        path = self.save_dir / name
        if not CHECKPOINT_PATTERN.match(name) or not _inside(self.save_dir, path):
            log.warning("refusing to delete %s: not a checkpoint file of %s", path, self.save_dir)
            return
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete old checkpoint %s: %s", path, exc)

    def _sweep_temporaries(self) -> None:
        swept = 0
        for e in os.scandir(self.save_dir):
            if e.name.startswith(TMP_PREFIX) and e.is_file(follow_symlinks=False):
                try:
                    os.unlink(e.path)
                    swept += 1
                except OSError as exc:
                    log.warning("could not remove stale temporary %s: %s", e.path, exc)
        if swept:
            log.info("removed %d stale temporary file(s) from %s", swept, self.save_dir)

    def _check_tracking_settings(self, tracking: Mapping[str, Any]) -> None:
        old_metric = tracking.get("metric_name")
        if isinstance(old_metric, str) and old_metric != self.metric:
            log.warning(
                "checkpoints in %s were ranked by %r; this manager ranks by %r, so existing "
                "checkpoints stay only while among the last %d",
                self.save_dir, old_metric, self.metric, self.keep_last_n,
            )
        old_hib = tracking.get("higher_is_better")
        if isinstance(old_hib, bool) and old_hib != self.higher_is_better:
            log.warning(
                "checkpoints in %s were ranked with higher_is_better=%s; re-ranking with %s",
                self.save_dir, old_hib, self.higher_is_better,
            )


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _is_int_like(value: Any) -> bool:
    try:
        return int(value) == value and not isinstance(value, float)
    except (TypeError, ValueError):
        return False


def _metric_float(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ConfigError(f"metric_value for {name!r} must be a scalar, got shape {tuple(value.shape)}")
        return float(value.detach().cpu().item())
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metric_value for {name!r} must be a number, got {value!r}") from exc


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
