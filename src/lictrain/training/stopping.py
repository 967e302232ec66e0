"""Stop only at safe points: stop signals set a flag that the loop reads between steps.

A cluster stops a job by signalling every process of it (``scancel``, pre-emption, a job's
time limit: SIGTERM to the whole process group; ``sbatch --signal=USR1@120``: SIGUSR1 a while
before; a closed terminal: SIGHUP; Ctrl-C: SIGINT). :class:`StopSignals` turns each of
``--stop-signals`` into a flag; :class:`StopCallback` reads it after every complete step
(forward, backward, both optimisers, the RNG draws), so a checkpoint saved then is exactly the
state the next step needs. Under DDP the ranks agree (one small all-reduce per step) and all
stop after the same step. A second signal while stopping is noted, never fatal.

Exit codes a scheduler can act on (``docs/cluster.md``): :data:`EXIT_REQUEUE` (75, sysexits'
``EX_TEMPFAIL``: stopped by a signal with a resumable checkpoint, run it again),
:data:`EXIT_CTRL_C` (130, SIGINT), 74 (a file could not be written: free space, then rerun),
2 (bad input) and 1 (a bug).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from lictrain.errors import CheckpointError
from lictrain.training.callbacks import Callback
from lictrain.training.distributed import DistInfo, all_reduce_max

log = logging.getLogger(__name__)

#: stopped by a signal, checkpoint saved: requeue me (sysexits' EX_TEMPFAIL)
EXIT_REQUEUE = 75
#: stopped by Ctrl-C (SIGINT), checkpoint saved: the shell's convention for SIGINT
EXIT_CTRL_C = 130


class StoppedInSetup(BaseException):
    """A stop signal arrived while the run was being set up: nothing trained, nothing to save.

    A BaseException (as KeyboardInterrupt), so that no ``except Exception`` of the setup swallows it.
    """

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        return EXIT_CTRL_C if self.signal_name == "SIGINT" else EXIT_REQUEUE


class StopSignals:
    """Install handlers for ``names`` (a context manager; restores the old ones).

    Until :meth:`defer` is called (the training loop begins) a signal raises
    :class:`StoppedInSetup` at once: a run still loading data or waiting for its peers has
    nothing to save and must not outlive its scheduler's grace period. After it, a signal only
    sets a flag. Outside the main thread Python cannot install handlers: the object then only
    reports :attr:`received` as ``None`` (the caller's own handlers stay in force).
    """

    def __init__(self, names: list[str] | tuple[str, ...]) -> None:
        self.names = tuple(names)
        self.received: str | None = None  # the first stop signal's name
        self.repeats = 0  # further signals while stopping (logged, harmless)
        self.deferred = False
        self._previous: dict[int, Any] = {}

    def defer(self) -> None:
        """From now on a signal only sets the flag that the loop reads between steps."""
        self.deferred = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self.deferred:
            raise StoppedInSetup(name)
        # Only set a flag: the step running now finishes, the loop stops after it.
        if self.received is None:
            self.received = name
        else:
            self.repeats += 1

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            log.debug("not in the main thread: stop signals keep their current handlers")
            return self
        for name in self.names:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()


class StopCallback(Callback):
    """The loop's stop point: a stop signal, or a checkpoint save that failed in the background.

    ``on_step`` returns True when the run must stop after the step just done; :attr:`reason`
    then says why (``"signal"`` with :attr:`signal_name`, or ``"save_failed"`` with
    :attr:`error`). Under DDP every rank learns of a stop of any rank in the same step.
    """

    name = "stop"

    def __init__(self, signals: StopSignals, save_error: Any, dist: DistInfo, device: Any) -> None:
        self.signals = signals
        self.save_error = save_error  # () -> CheckpointError | None (rank 0's background writer)
        self.dist = dist
        self.device = device
        self.reason: str | None = None
        self.signal_name: str | None = None
        self.error: CheckpointError | None = None

    def check(self) -> bool:
        """Poll the flags (a collective under DDP: call it on every rank at the same point)."""
        if self.reason is not None:
            return True
        error = self.save_error()
        local = 2 if error is not None else (1 if self.signals.received else 0)
        agreed = local
        if self.dist.enabled:
            agreed = all_reduce_max(local, self.dist, self.device)
        if agreed == 0:
            return False
        if agreed == 2:
            self.reason, self.error = "save_failed", error
        else:
            self.reason = "signal"
            self.signal_name = self.signals.received or "a stop signal on another rank"
        return True

    def on_step(self, run: Any, outcome: Any) -> bool:
        return self.check()

    def exit_code(self) -> int:
        """What the CLI exits with after this stop."""
        if self.reason == "save_failed":
            return 74
        return EXIT_CTRL_C if self.signal_name == "SIGINT" else EXIT_REQUEUE
