"""Multi-scale gamma: one gamma schedule per task group, one gamma per task for the optimiser.

The guide's "multi-scale adaptive gamma": :class:`MultiScaleGammaScheduler` keeps one
:class:`~lictrain.schedules.gamma.AdaptiveGammaScheduler` per task group (also importable from
:mod:`lictrain.schedules.gamma`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lictrain.errors import CheckpointError, ConfigError
from lictrain.schedules.gamma_scheduler import AdaptiveGammaScheduler
from lictrain.schedules.gamma_settings import STATE_VERSION, make_setter

__all__ = ["MultiScaleGammaScheduler"]


class MultiScaleGammaScheduler:
    """One gamma schedule per task group, handed to the optimiser as one gamma per task.

    With hierarchical tasks (say distortion plus the rates of ``z``, ``s1``, ``s2``, ``s3``)
    the balanced optimiser accepts ``gamma`` as a sequence with one decay per task logit. This
    scheduler keeps one :class:`AdaptiveGammaScheduler` per named group and, on each
    :meth:`step`, sets ``optimizer.gamma = [gamma of task 0's group, gamma of task 1's group,
    ...]``.

    Example:
        >>> s = MultiScaleGammaScheduler(
        ...     opt,
        ...     task_groups=["distortion", "z", "s1", "s2", "s3"],
        ...     group_configs={"s1": {"initial_gamma": 0.008}, "s3": {"strategy": "hpcm"}},
        ...     default={"strategy": "cosine", "initial_gamma": 0.006,
        ...              "final_gamma": 0.001, "total_epochs": 3000},
        ... )
        >>> s.step(0)   # -> [0.006, 0.006, 0.008, 0.006, 0.006]

    Args:
        optimizer: An object with a writable ``gamma`` attribute, a torch optimiser whose param
            groups carry ``"gamma"``, or ``None``.
        group_configs: Group name -> keyword arguments of :class:`AdaptiveGammaScheduler`
            (``strategy``, ``initial_gamma``, ``final_gamma``, ``total_epochs`` and strategy
            parameters), laid over ``default``.
        task_groups: The group of each task, in the optimiser's task order (its length is the
            number of tasks ``k``). A group may cover several tasks.
        default: Settings shared by all groups (the "one config"); a group's own entries win.

    Raises:
        ConfigError: If ``task_groups`` is empty, ``group_configs`` names a group that no task
            uses, or any group's schedule is invalid.
    """

    def __init__(
        self,
        optimizer: Any,
        group_configs: Mapping[str, Mapping[str, Any]],
        task_groups: Sequence[str],
        default: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(task_groups, str) or len(task_groups) == 0:
            raise ConfigError(
                f"task_groups must be a non-empty list of group names, got {task_groups!r}"
            )
        unused = sorted(set(group_configs) - set(task_groups))
        if unused:
            raise ConfigError(
                f"gamma group(s) {', '.join(map(str, unused))} match no task; "
                f"task groups are {', '.join(dict.fromkeys(task_groups))}"
            )
        base = dict(default or {})
        self.task_groups: tuple[str, ...] = tuple(task_groups)
        self.schedulers: dict[str, AdaptiveGammaScheduler] = {}
        for name in dict.fromkeys(task_groups):
            cfg = {**base, **dict(group_configs.get(name, {}))}
            if "optimizer" in cfg:
                raise ConfigError(f"gamma group {name!r}: 'optimizer' is not a schedule setting")
            try:
                self.schedulers[name] = AdaptiveGammaScheduler(None, **cfg)
            except ConfigError as exc:
                raise ConfigError(f"gamma group {name!r}: {exc}") from exc
            except TypeError as exc:
                raise ConfigError(f"gamma group {name!r}: {exc}") from exc
        self.optimizer = optimizer
        self._order = [self.schedulers[name] for name in self.task_groups]
        self._unique = list(self.schedulers.values())
        self._set = make_setter(optimizer)

    def step(
        self,
        epoch: int,
        current_loss: float | None = None,
        group_losses: Mapping[str, float] | None = None,
    ) -> list[float]:
        """Step every group's schedule and write the per-task gammas into the optimiser.

        Args:
            epoch: The epoch, within every group's ``0..total_epochs``.
            current_loss: The loss given to adaptive groups without their own entry in
                ``group_losses``.
            group_losses: Optional per-group losses (say each scale's rate term) for adaptive
                groups.

        Returns:
            A new list with one gamma per task, in ``task_groups`` order.

        Raises:
            ValueError: If ``epoch`` is out of range for a group, or an adaptive group has no
                loss.
        """
        if group_losses is None:
            for sched in self._unique:
                sched.step(epoch, current_loss)
        else:
            for name, sched in self.schedulers.items():
                sched.step(epoch, group_losses.get(name, current_loss))
        gammas = [s._gamma for s in self._order]
        if self._set is not None:
            self._set(gammas)
        return gammas

    @property
    def gamma(self) -> list[float]:
        """The current per-task gammas (a new list)."""
        return [s.gamma for s in self._order]

    @property
    def group_gammas(self) -> dict[str, float]:
        """The current gamma of each group."""
        return {name: s.gamma for name, s in self.schedulers.items()}

    def state_dict(self) -> dict[str, Any]:
        """Return each group's scheduler state, keyed by group name."""
        return {
            "version": STATE_VERSION,
            "task_groups": list(self.task_groups),
            "groups": {name: s.state_dict() for name, s in self.schedulers.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore every group's state saved by :meth:`state_dict`.

        Raises:
            CheckpointError: If ``state`` is malformed or its groups differ from this
                scheduler's.
        """
        try:
            groups = state["groups"]
            saved = set(groups)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(
                f"multi-scale gamma scheduler state is malformed ({exc!r})"
            ) from exc
        if saved != set(self.schedulers):
            raise CheckpointError(
                f"checkpoint's gamma groups {sorted(saved)} differ from this run's "
                f"{sorted(self.schedulers)}; resume with the same task groups"
            )
        for name, sched in self.schedulers.items():
            sched.load_state_dict(groups[name])
        if self._set is not None:
            self._set(self.gamma)
