"""The gamma schedulers themselves: :class:`AdaptiveGammaScheduler` and :class:`HPCMGammaScheduler`.

One concern: compute gamma per epoch for one strategy, write it into the optimiser, and save
or restore the running state. The strategies' formulas are described in
:mod:`lictrain.schedules.gamma` (the public entry point, which re-exports these classes);
setting checks live in :mod:`lictrain.schedules.gamma_settings`.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from lictrain.errors import CheckpointError
from lictrain.schedules.gamma_settings import STATE_VERSION, check_settings, make_setter

__all__ = ["AdaptiveGammaScheduler", "HPCMGammaScheduler"]

# Named after the public module, not this one: users (and the tests) filter these messages by
# the name ``lictrain.schedules.gamma``, which they had before the split.
logger = logging.getLogger("lictrain.schedules.gamma")


class AdaptiveGammaScheduler:
    """Schedule the balanced optimiser's ``gamma`` by epoch (and, for ``adaptive``, by loss).

    Call :meth:`step` once per epoch, in order; it returns the gamma for that epoch and writes
    it into the optimiser. The guide's loop calls it after the epoch's test pass with the test
    loss, so the value takes effect for the next epoch's training.

    Args:
        optimizer: An object with a writable ``gamma`` attribute, a torch optimiser whose param
            groups carry ``"gamma"``, or ``None`` to only compute values.
        strategy: One of ``linear``, ``cosine``, ``step``, ``adaptive``, ``hpcm``.
        initial_gamma: ``g0``, gamma at epoch 0; must be positive.
        final_gamma: ``gf``, gamma at ``total_epochs`` (linear, cosine) or the floor
            (adaptive); positive and ``<= initial_gamma`` for those strategies. Ignored by
            ``step`` and ``hpcm`` (may be ``None`` there).
        total_epochs: ``T``, a positive integer; valid epochs are ``0..T``.
        **kwargs: Strategy parameters; ``None`` means the default. ``step_epochs``
            (``[1000, 2000]``, non-negative epochs), ``gamma_decay`` (``0.5``, in ``(0, 1]``;
            used by ``step`` and ``adaptive``), ``window_size`` (``50``, a positive integer) and
            ``threshold`` (``0.01``, finite). All four are accepted and validated for every
            strategy, so a trainer may pass them all.

    Raises:
        ConfigError: (a ``ValueError``) For an unknown strategy, a non-positive gamma,
            ``final_gamma > initial_gamma`` for a decaying strategy, a non-positive or
            non-integer ``total_epochs``, a bad strategy parameter, an unknown keyword, or an
            optimiser without a gamma.
    """

    def __init__(
        self,
        optimizer: Any,
        strategy: str = "cosine",
        initial_gamma: float = 0.006,
        final_gamma: float | None = 0.001,
        total_epochs: int = 3000,
        **kwargs: Any,
    ) -> None:
        g0, gf, total_epochs, step_epochs, gamma_decay, window_size, threshold = check_settings(
            strategy, initial_gamma, final_gamma, total_epochs, kwargs
        )

        self.optimizer = optimizer
        self.strategy: str = strategy
        self.initial_gamma: float = g0
        self.final_gamma: float | None = gf
        self.total_epochs: int = int(total_epochs)
        self.step_epochs: tuple[float, ...] = tuple(sorted(step_epochs))
        self.gamma_decay: float = float(gamma_decay)
        self.window_size: int = int(window_size)
        self.threshold: float = float(threshold)
        if strategy == "step" and (not self.step_epochs or self.step_epochs[0] > self.total_epochs):
            logger.warning(
                "step gamma schedule: no step epoch within 0..%d (step_epochs=%s); gamma stays %g",
                self.total_epochs,
                list(self.step_epochs),
                g0,
            )

        # Running state (what state_dict() saves).
        self._gamma: float = g0
        self._last_epoch: int | None = None
        self._loss_history: deque[float] = deque(maxlen=self.window_size + 1)
        self._num_losses: int = 0  # finite losses seen so far (adaptive)
        self._last_cut_index: int | None = None  # index of the loss at the last cut
        self._last_cut_epoch: int | None = None
        self._num_cuts: int = 0

        self._set = make_setter(optimizer)
        self._precompute()

    # ------------------------------------------------------------------ strategies
    def _precompute(self) -> None:
        """Bind the strategy's formula and its constants (no work per call beyond arithmetic)."""
        T = self.total_epochs
        g0 = self.initial_gamma
        gf = self.final_gamma
        if self.strategy == "linear":
            self._range = g0 - gf  # type: ignore[operator]
            self._compute = self._linear
        elif self.strategy == "cosine":
            self._half_range = 0.5 * (g0 - gf)  # type: ignore[operator]
            self._compute = self._cosine
        elif self.strategy == "step":
            self._compute = self._step
        elif self.strategy == "adaptive":
            self._compute = self._adaptive
        else:
            # P1 = T/10 and P2 = 2T/3 as correctly rounded floats (exactly 300.0 and 2000.0 at
            # T = 3000); phase membership is decided with exact integer arithmetic in _hpcm.
            self._p1 = T / 10
            self._p2 = 2 * T / 3
            self._scaling_len = self._p2 - self._p1
            self._refine_len = T - self._p2
            self._compute = self._hpcm

    def _linear(self, t: float, loss: Any) -> float:
        return self.initial_gamma - self._range * t / self.total_epochs

    def _cosine(self, t: float, loss: Any) -> float:
        return self.final_gamma + self._half_range * (  # type: ignore[operator]
            1.0 + math.cos(math.pi * t / self.total_epochs)
        )

    def _step(self, t: float, loss: Any) -> float:
        return self.initial_gamma * self.gamma_decay ** bisect.bisect_right(self.step_epochs, t)

    def _hpcm(self, t: float, loss: Any) -> float:
        # Same expressions, in the same order, as the guide's code; at T = 3000 the values
        # are bit-for-bit the guide's.
        g0 = self.initial_gamma
        T = self.total_epochs
        if 10 * t < T:  # warm-up: t < T/10
            return g0 * (1.0 + 0.2 * t / self._p1)
        if 3 * t < 2 * T:  # scaling: t < 2T/3
            progress = (t - self._p1) / self._scaling_len
            return g0 * (1.0 + 0.2) * (1.0 - 0.5 * progress)
        progress = (t - self._p2) / self._refine_len  # refinement
        return g0 * 0.7 * (1.0 - 0.3 * progress)

    def _adaptive(self, t: float, loss: Any) -> float:
        if loss is None:
            raise ValueError(
                "the adaptive gamma strategy needs the epoch's loss: call step(epoch, current_loss)"
            )
        loss = float(loss)
        if not math.isfinite(loss):
            logger.warning("adaptive gamma: ignoring non-finite loss %r at epoch %s", loss, t)
            return self._gamma
        history = self._loss_history
        history.append(loss)
        index = self._num_losses
        self._num_losses = index + 1
        window = self.window_size
        if index < window:
            return self._gamma
        if self._last_cut_index is not None and index - self._last_cut_index < window:
            return self._gamma
        gamma = self._gamma
        floor = self.final_gamma
        if gamma <= floor:  # type: ignore[operator]
            return gamma
        old = history[0]  # the loss window_size losses ago
        if old != 0.0:
            improvement = (old - loss) / abs(old)
        else:
            improvement = math.inf if loss < old else 0.0
        if improvement < self.threshold:
            new = gamma * self.gamma_decay
            if new < floor:  # type: ignore[operator]
                new = floor
            self._gamma = new  # type: ignore[assignment]
            self._last_cut_index = index
            self._last_cut_epoch = t  # type: ignore[assignment]
            self._num_cuts += 1
            logger.info(
                "adaptive gamma: loss improved %.4g < %.4g over %d epochs; gamma %.6g -> %.6g "
                "at epoch %s",
                improvement,
                self.threshold,
                window,
                gamma,
                new,
                t,
            )
        return self._gamma

    # ------------------------------------------------------------------ public API
    def step(self, epoch: int, current_loss: float | None = None) -> float:
        """Compute gamma for ``epoch`` and write it into the optimiser.

        Args:
            epoch: The epoch, ``0 <= epoch <= total_epochs``. Call once per epoch, in order
                (the adaptive strategy counts calls as epochs).
            current_loss: The epoch's (validation) loss; required by ``adaptive`` (a
                non-finite loss is logged and ignored), unused by the others.

        Returns:
            The gamma for this epoch.

        Raises:
            ValueError: If ``epoch`` is out of range, or ``current_loss`` is ``None`` with the
                adaptive strategy.
        """
        if not 0 <= epoch <= self.total_epochs:
            raise ValueError(f"epoch {epoch!r} is outside 0..{self.total_epochs} (total_epochs)")
        gamma = self._compute(epoch, current_loss)
        self._gamma = gamma
        self._last_epoch = epoch
        if self._set is not None:
            self._set(gamma)
        return gamma

    @property
    def gamma(self) -> float:
        """The gamma from the last :meth:`step` (``initial_gamma`` before the first)."""
        return self._gamma

    @property
    def last_epoch(self) -> int | None:
        """The epoch of the last :meth:`step`, or ``None`` before the first."""
        return self._last_epoch

    @property
    def num_cuts(self) -> int:
        """How many times the adaptive strategy has cut gamma."""
        return self._num_cuts

    def _hparams(self) -> dict[str, Any]:
        return {
            "initial_gamma": self.initial_gamma,
            "final_gamma": self.final_gamma,
            "total_epochs": self.total_epochs,
            "step_epochs": list(self.step_epochs),
            "gamma_decay": self.gamma_decay,
            "window_size": self.window_size,
            "threshold": self.threshold,
        }

    def state_dict(self) -> dict[str, Any]:
        """Return the schedule's state as plain Python values (JSON- and torch.save-able).

        Returns:
            The strategy, its hyperparameters, the current gamma, the last epoch and, for the
            adaptive strategy, the loss history and the last cut.
        """
        return {
            "version": STATE_VERSION,
            "strategy": self.strategy,
            "hparams": self._hparams(),
            "gamma": self._gamma,
            "last_epoch": self._last_epoch,
            "loss_history": list(self._loss_history),
            "num_losses": self._num_losses,
            "last_cut_index": self._last_cut_index,
            "last_cut_epoch": self._last_cut_epoch,
            "num_cuts": self._num_cuts,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the running state saved by :meth:`state_dict`.

        The constructor's hyperparameters stay in force (a changed value, say a longer
        ``total_epochs`` on resume, is logged); gamma, the loss history and the last cut come
        from ``state``, so an unchanged schedule continues exactly where it stopped. The
        current gamma is also written into the optimiser.

        Args:
            state: A mapping from :meth:`state_dict`.

        Raises:
            CheckpointError: If ``state`` is malformed or was saved by another strategy.
        """
        try:
            strategy = state["strategy"]
            gamma = float(state["gamma"])
            last_epoch = state["last_epoch"]
            history = [float(x) for x in state["loss_history"]]
            num_losses = int(state["num_losses"])
            last_cut_index = state["last_cut_index"]
            last_cut_epoch = state["last_cut_epoch"]
            num_cuts = int(state["num_cuts"])
            saved_hparams = dict(state.get("hparams", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"gamma scheduler state is malformed ({exc!r}); resume from a checkpoint saved "
                "by lictrain or start without --resume"
            ) from exc
        if strategy != self.strategy:
            raise CheckpointError(
                f"checkpoint's gamma schedule is {strategy!r} but this run asks for "
                f"{self.strategy!r}; pass --gamma_strategy {strategy} to resume it"
            )
        if not math.isfinite(gamma) or gamma <= 0:
            raise CheckpointError(f"gamma scheduler state holds an invalid gamma {gamma!r}")
        changed = {
            k: (v, saved_hparams[k])
            for k, v in self._hparams().items()
            if k in saved_hparams and saved_hparams[k] != v
        }
        if changed:
            logger.warning(
                "gamma schedule resumed with changed settings (now, saved): %s", changed
            )
        self._gamma = gamma
        self._last_epoch = last_epoch
        self._loss_history = deque(history, maxlen=self.window_size + 1)
        self._num_losses = num_losses
        self._last_cut_index = None if last_cut_index is None else int(last_cut_index)
        self._last_cut_epoch = last_cut_epoch
        self._num_cuts = num_cuts
        if self._set is not None:
            self._set(gamma)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(strategy={self.strategy!r}, "
            f"initial_gamma={self.initial_gamma!r}, final_gamma={self.final_gamma!r}, "
            f"total_epochs={self.total_epochs!r}, gamma={self._gamma!r})"
        )


class HPCMGammaScheduler(AdaptiveGammaScheduler):
    """The ``hpcm`` strategy: warm-up, scaling and refinement phases scaled to ``total_epochs``.

    With ``P1 = T/10`` and ``P2 = 2T/3`` (exactly 300 and 2000 at ``T = 3000``):

    * warm-up, ``t < P1``: ``g0 * (1 + 0.2 * t / P1)`` (rises to ``1.2 g0``)
    * scaling, ``P1 <= t < P2``: ``g0 * 1.2 * (1 - 0.5 * (t - P1) / (P2 - P1))``
      (falls to ``0.6 g0``)
    * refinement, ``P2 <= t <= T``: ``g0 * 0.7 * (1 - 0.3 * (t - P2) / (T - P2))``
      (restarts at ``0.7 g0``, ends at ``0.49 g0``)

    These are the guide's formulas kept exactly, including the jump from ``0.6 g0`` up to
    ``0.7 g0`` at ``P2``; ``final_gamma`` plays no part.

    Args:
        optimizer: See :class:`AdaptiveGammaScheduler`.
        total_epochs: ``T``, a positive integer.
        initial_gamma: ``g0``, positive.
        final_gamma: Accepted for a uniform call signature and ignored.
        **kwargs: Accepted (and validated) strategy parameters of other strategies; ignored.
    """

    def __init__(
        self,
        optimizer: Any,
        total_epochs: int = 3000,
        initial_gamma: float = 0.006,
        final_gamma: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            optimizer,
            strategy="hpcm",
            initial_gamma=initial_gamma,
            final_gamma=final_gamma,
            total_epochs=total_epochs,
            **kwargs,
        )
