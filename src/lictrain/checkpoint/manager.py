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

The pieces live beside this module: ``io`` (atomic writes, fsync, safe loading of a file),
``locate`` (which file a run directory means), ``tracking`` (records, the tracking file,
directory scans), ``retention`` (the last N / best M rule), ``snapshot`` (the copy to CPU),
``writer`` (the background thread) and ``arguments`` (argument checks).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lictrain.checkpoint.arguments import check_settings, save_arguments
from lictrain.checkpoint.io import atomic_write, make_save_dir, same_dir, sweep_temporaries
from lictrain.checkpoint.locate import load_checkpoint, resolve_checkpoint
from lictrain.checkpoint.lock import RunDirLock
from lictrain.checkpoint.retention import RetentionPolicy, shrink_to_weights
from lictrain.checkpoint.snapshot import BufferPool, snapshot_payload
from lictrain.checkpoint.tracking import (
    CHECKPOINT_PATTERN,
    FORMAT_VERSION,
    KIND_FULL,
    TRACKING_FILE,
    Record,
    check_tracking_settings,
    checkpoint_filename,
    delete_checkpoint,
    int_or,
    order_key,
    scan_directory,
)
from lictrain.checkpoint.writer import BackgroundWriter, save_payload, write_error
from lictrain.errors import CheckpointError

__all__ = [
    "CHECKPOINT_PATTERN",
    "TRACKING_FILE",
    "CheckpointManager",
    "checkpoint_filename",
    "load_checkpoint",
    "resolve_checkpoint",
]

log = logging.getLogger(__name__)


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
        check_settings(keep_last_n, keep_best, metric)
        self.save_dir = Path(save_dir).expanduser()
        self.keep_last_n = keep_last_n
        self.keep_best = keep_best
        self.metric = metric
        self.higher_is_better = bool(higher_is_better)
        self.async_save = bool(async_save)
        self.best_weights_only = bool(best_weights_only)
        self.fsync = bool(fsync)
        self._pool = BufferPool() if reuse_buffers else None
        self.tracking_file = self.save_dir / TRACKING_FILE

        make_save_dir(self.save_dir)

        self._lock = RunDirLock(self.save_dir).acquire()
        self._state_lock = threading.RLock()
        self._writer = BackgroundWriter(
            self._write, self._recycle, lambda record: self.save_dir / record.name
        )
        self._closed = False
        try:
            sweep_temporaries(self.save_dir)
            self._records, tracking = scan_directory(self.save_dir)
            self._next_seq = max(
                [r.seq + 1 for r in self._records.values()]
                + [int_or(tracking.get("next_seq"), 0)]
            )
            check_tracking_settings(
                tracking, self.save_dir, self.metric, self.higher_is_better, self.keep_last_n
            )
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
        epoch, value, finite, eligible = save_arguments(
            epoch, metric_value, is_best, extra, self.metric
        )
        payload = snapshot_payload(
            self._pool, epoch, model_state, optimizer_state, self.metric, value, extra
        )

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
        record = Record(
            name=checkpoint_filename(epoch),
            epoch=epoch,
            metric=value if finite else None,
            metric_name=self.metric,
            seq=seq,
            best_eligible=eligible,
        )
        path = self.save_dir / record.name
        if self.async_save:
            self._writer.put(payload, record)
        else:
            try:
                self._write(payload, record)
            except CheckpointError:
                raise
            except Exception as exc:
                raise write_error(path, exc) from exc
            finally:
                self._recycle(payload)
        return path

    def save_error(self) -> CheckpointError | None:
        """The error of a background save that failed, without raising it (polled between steps,
        so that a full disk stops the run at once rather than at the next save)."""
        return self._writer.peek_error()

    def wait(self) -> None:
        """Block until every pending save is durable; raise a failed one's error."""
        self._writer.join()
        self._raise_errors()

    @property
    def latest_checkpoint(self) -> Path | None:
        """The most recently saved checkpoint (waits for pending saves), or ``None``."""
        self.wait()
        with self._state_lock:
            if not self._records:
                return None
            return self.save_dir / max(self._records.values(), key=order_key).name

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
            return [self.save_dir / r.name for r in self._policy.last(self._records)]

    @property
    def best_checkpoints(self) -> list[Path]:
        """The kept best checkpoints, best first (waits for pending saves)."""
        self.wait()
        with self._state_lock:
            return [self.save_dir / r.name for r in self._policy.best(self._records)]

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
            if same_dir(p, self.save_dir):
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
            self._writer.stop()
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

    def _recycle(self, payload: dict[str, Any]) -> None:
        if self._pool is not None and not self._closed:
            self._pool.refill(payload)

    def _raise_errors(self) -> None:
        self._writer.raise_errors()

    @property
    def _policy(self) -> RetentionPolicy:
        # Built on demand from the public attributes, which callers may still change.
        return RetentionPolicy(self.keep_last_n, self.keep_best, self.metric, self.higher_is_better)

    def _write(self, payload: dict[str, Any], record: Record) -> None:
        """Write one checkpoint durably, then the tracking file, then apply retention."""
        final = self.save_dir / record.name
        atomic_write(final, lambda f: save_payload(payload, f), fsync=self.fsync)
        record.stamp(final)
        with self._state_lock:
            self._records[record.name] = record
            policy = self._policy
            keep, drop = policy.split(self._records)
            if self.best_weights_only:
                last = {r.name for r in policy.last(self._records)}
                for r in keep:
                    if r.kind == KIND_FULL and r.name not in last:
                        shrink_to_weights(self.save_dir, r, fsync=self.fsync)
            for r in drop:
                del self._records[r.name]
            text = policy.tracking_text(self._records, self._next_seq)
            atomic_write(
                self.tracking_file, lambda f: f.write(text.encode("utf-8")), fsync=self.fsync
            )
        for r in drop:
            delete_checkpoint(self.save_dir, r.name)
