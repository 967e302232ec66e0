"""One run per checkpoint directory: a lock file holding the owner's pid.

:class:`RunDirLock` creates ``.lictrain.lock`` in the directory and holds an exclusive
``flock`` on it for as long as the run lives, so the kernel frees it even after ``kill -9``.
The file records ``pid``, ``host`` and start time, so a second run is refused with a message
that names the owner. A lock file left behind by a process that no longer runs (a crash) is
taken over with a warning. The lock is released by :meth:`RunDirLock.release`, which
:class:`~lictrain.checkpoint.CheckpointManager` calls on ``close()`` and at interpreter exit.

Where ``fcntl`` is unavailable (Windows) the lock falls back to an exclusively created file
whose pid is checked for liveness.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from lictrain.errors import CheckpointError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunDirLock", "lock_held", "pid_alive"]

LOCK_NAME = ".lictrain.lock"

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)
        if handle:
            ctypes.windll.kernel32.CloseHandle(handle)
            return True
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    try:
        info = json.loads(text)
    except ValueError:
        info = {}
        first = text.strip().split()
        if first and first[0].isdigit():
            info["pid"] = int(first[0])
    return info if isinstance(info, dict) else {}


def _owner_alive(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    host = info.get("host")
    if host and host != socket.gethostname():
        return True  # cannot check a pid on another machine: assume it lives
    return pid_alive(pid)


def lock_held(directory: str | os.PathLike[str], name: str = LOCK_NAME) -> bool:
    """Whether a live process holds ``directory``'s run lock (read-only; takes nothing).

    No lock file: ``False`` (a run removes it when it releases the lock). A lock file naming
    another host: ``True`` (its pid cannot be checked from here). A pid of this host that no
    longer runs: ``False``. Otherwise the ``flock`` decides (a live pid may be a reused one).
    """
    path = Path(directory) / name
    if not path.exists():
        return False
    info = _read_owner(path)
    host, pid = info.get("host"), info.get("pid")
    if host and host != socket.gethostname():
        return True
    if isinstance(pid, int) and not pid_alive(pid):
        return False  # checked without touching the flock, which a starting run may be taking
    held = _flock_held(path)
    if held is None:  # no flock here: the pid is all there is (unknown owner: assume alive)
        return pid_alive(pid) if isinstance(pid, int) else True
    return held


def _flock_held(path: Path) -> bool | None:
    """Whether some process holds an exclusive ``flock`` on ``path``; ``None`` if unknowable."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False  # released while we looked
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return True
        return None
    finally:
        os.close(fd)  # also drops our shared lock at once
    return False


def _describe(info: dict[str, Any]) -> str:
    pid = info.get("pid", "?")
    host = info.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    if pid == os.getpid():
        return f"another CheckpointManager of this process, pid {pid}, still open"
    return f"pid {pid}{where}"


class RunDirLock:
    """An exclusive, pid-stamped lock on a run directory.

    Args:
        directory: The directory to lock (must exist).
        name: The lock file's name inside it.

    Raises:
        CheckpointError: From :meth:`acquire` when another live process holds the lock.
    """

    def __init__(self, directory: str | os.PathLike[str], name: str = LOCK_NAME) -> None:
        self.path = Path(directory) / name
        self._fd: int | None = None
        self._pid: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (in this process)."""
        return self._fd is not None and self._pid == os.getpid()

    def acquire(self) -> RunDirLock:
        """Take the lock, or raise :class:`CheckpointError` naming the process that has it."""
        if self.held:
            return self
        if fcntl is None:  # pragma: no cover - Windows
            self._acquire_exclusive_file()
        else:
            self._acquire_flock()
        self._pid = os.getpid()
        return self

    def _busy(self, info: dict[str, Any]) -> CheckpointError:
        return CheckpointError(
            f"checkpoint directory {self.path.parent} is in use by another lictrain run "
            f"({_describe(info)}, lock file {self.path}); wait for that run to finish or use "
            "a different save directory"
        )

    def _acquire_flock(self) -> None:
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise self._busy(_read_owner(self.path)) from None
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    log.debug("flock unsupported on %s; falling back to pid lock", self.path)
                    self._acquire_exclusive_file()
                    return
                raise CheckpointError(f"cannot lock {self.path}: {exc}") from exc
            # The file may have been unlinked (released) between open and flock: retry then.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read_owner(self.path)
            if previous.get("pid") not in (None, os.getpid()):
                if _owner_alive(previous) and previous.get("host") not in (None, socket.gethostname()):
                    # Another host's process may hold it (flock does not cross NFS reliably).
                    os.close(fd)
                    raise self._busy(previous)
                log.warning(
                    "taking over stale lock %s left by pid %s, which no longer holds it",
                    self.path, previous.get("pid"),
                )
            self._write_owner(fd)
            self._fd = fd
            return
        raise CheckpointError(f"cannot lock {self.path}: it keeps being replaced; retry")

    def _acquire_exclusive_file(self) -> None:
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = _read_owner(self.path)
                if _owner_alive(info):
                    raise self._busy(info) from None
                log.warning(
                    "taking over stale lock %s left by pid %s, which no longer runs",
                    self.path, info.get("pid", "?"),
                )
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            self._write_owner(fd)
            self._fd = fd
            return
        raise CheckpointError(f"cannot lock {self.path}: it keeps being replaced; retry")

    @staticmethod
    def _write_owner(fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        data = (json.dumps(info) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)

    def release(self) -> None:
        """Give the lock up (remove the file). Safe to call twice; a no-op in a forked child.

        Never raises for the file: a folder that turned read-only (or vanished) mid-run keeps a
        lock file nobody holds, which the next run takes over; raising here would only bury the
        error that ended the run.
        """
        if self._fd is None:
            return
        if self._pid != os.getpid():  # forked child: the parent still owns it
            self._fd = None
            return
        try:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.debug("could not remove lock file %s (%s); the lock is released anyway", self.path, exc)
        finally:
            try:
                os.close(self._fd)  # closing drops the flock
            except OSError as exc:  # the flock goes with the descriptor whatever close says
                log.debug("closing lock file %s: %s", self.path, exc)
            finally:
                self._fd = None
                self._pid = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
