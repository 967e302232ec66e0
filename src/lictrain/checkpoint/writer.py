"""The background writer: one thread that writes queued checkpoints in save order.

``save_checkpoint`` queues the snapshot and returns; the writer thread writes it. At most
``_MAX_PENDING`` snapshots wait besides the one being written, then ``save_checkpoint``
blocks. A failed write is kept and raised as :class:`CheckpointError` by the manager's next
call (:meth:`BackgroundWriter.raise_errors`), once.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
from pathlib import Path
from typing import Any, Callable

import torch

from lictrain.errors import CheckpointError, StorageError

# The manager's logger: records keep the name they had before the split.
log = logging.getLogger("lictrain.checkpoint.manager")

_MAX_PENDING = 1  # queued writes (besides the one being written) before save_checkpoint waits


def write_error(path: Path, exc: BaseException) -> CheckpointError:
    """One line that names the cause (no space, read-only, no permission) and the fix."""
    cause = storage_cause(exc)
    if cause:
        return StorageError(f"saving checkpoint {path} failed: {cause}; the older checkpoints are intact: free "
                            f"space or fix the folder, then run the same command with --auto-resume")
    return CheckpointError(
        f"saving checkpoint {path} failed ({type(exc).__name__}: {exc}); check free disk "
        "space and permissions of the save directory"
    )


class _KeepWriteError:
    """A file wrapper that keeps the ``OSError`` of a failed write: torch's zip writer reports a full
    disk only as ``RuntimeError: unexpected pos``, which would hide the cause."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.file.flush()


def save_payload(payload: Any, file: Any) -> None:
    """``torch.save(payload, file)``; a write that failed raises its own ``OSError`` (ENOSPC, EROFS...)."""
    sink = _KeepWriteError(file)
    try:
        torch.save(payload, sink)
    except RuntimeError:
        if sink.error is not None:
            raise sink.error from None
        raise


def storage_cause(exc: BaseException) -> str:
    """What an ``OSError`` from writing a file means for the user ('' for other errors)."""
    if not isinstance(exc, OSError):
        return ""
    where = f" ({Path(exc.filename).parent})" if isinstance(exc.filename, str) else ""
    return {
        errno.ENOSPC: f"no space left on the device{where}",
        errno.EDQUOT: f"the disk quota is exceeded{where}",
        errno.EROFS: f"the folder is on a read-only file system{where}",
        errno.EACCES: f"permission denied{where}",
        errno.EPERM: f"operation not permitted{where}",
        errno.ENOENT: f"the folder was removed{where}",
        errno.EIO: f"an input/output error of the device{where}",
    }.get(exc.errno or 0, "")


class BackgroundWriter:
    """Write ``(payload, record)`` items on a daemon thread; keep failures for the caller.

    Args:
        write: Writes one payload durably (the manager's ``_write``).
        recycle: Called with every payload once its write is over, failed or not.
        path_of: The file a record is written to (named in the error of a failed write).
    """

    def __init__(
        self,
        write: Callable[[dict[str, Any], Any], None],
        recycle: Callable[[dict[str, Any]], None],
        path_of: Callable[[Any], Path],
    ) -> None:
        self._write = write
        self._recycle = recycle
        self._path_of = path_of
        self._queue: queue.Queue | None = None
        self._worker: threading.Thread | None = None
        self._errors: list[BaseException] = []
        self._errors_lock = threading.Lock()

    def put(self, payload: dict[str, Any], record: Any) -> None:
        """Queue a write (starting the thread if needed); blocks while the queue is full."""
        self._ensure_worker()
        assert self._queue is not None
        self._queue.put((payload, record))

    def join(self) -> None:
        """Block until every queued write is over (written or failed)."""
        if self._queue is not None and self._worker is not None and self._worker.is_alive():
            self._queue.join()

    def stop(self) -> None:
        """Finish the queued writes, then end the thread."""
        if self._queue is not None and self._worker is not None:
            if self._worker.is_alive():
                self._queue.join()
                self._queue.put(None)
                self._worker.join()

    def peek_error(self) -> CheckpointError | None:
        """The first failed write's error, if any, without raising or forgetting it."""
        with self._errors_lock:
            return self._errors[0] if self._errors else None  # type: ignore[return-value]

    def raise_errors(self) -> None:
        """Raise the first failed write's error (and count the later ones), then forget them."""
        with self._errors_lock:
            if not self._errors:
                return
            first, more = self._errors[0], len(self._errors) - 1
            self._errors.clear()
        if more:
            raise CheckpointError(f"{first} (and {more} later save(s) failed too)") from first
        raise first

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
                    path = self._path_of(record)
                    err = exc if isinstance(exc, CheckpointError) else write_error(path, exc)
                    if err is not exc:
                        err.__cause__ = exc
                    with self._errors_lock:
                        self._errors.append(err)
                    log.debug("background checkpoint save failed", exc_info=True)
                finally:
                    self._recycle(payload)
                    del item, payload
            finally:
                q.task_done()
