"""A ``lictrain train`` command line that trains a given :class:`TrainConfig` again.

What a run records as its ``command`` when it was not started by ``lictrain train`` itself (a
sweep's trial, the Python API), and what a budgeted run's ``reproduce`` is built from: every
setting that differs from its default, spelled as the flag the parser reads (tested by parsing
the output back into the same config).
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from lictrain.config import TrainConfig
from lictrain.schedules.lr import format_length_plan
from lictrain.settings import flag_name, setting_of

#: settings that say where and how a run was started, not what it trains
NOT_RECIPE = ("recipe", "resume", "auto_resume", "save_path", "pretrained")
#: settings the parser reads as "0 = off" (stored as None)
ZERO_IS_NONE = ("clip_max_norm", "cautious_max_scale")


def flag_values(field: dataclasses.Field, value: Any) -> list[str]:
    """``field = value`` as command-line tokens (empty when the value needs no flag), spelt as
    the setting's declaration says (its flag, switch kind and whether it takes several tokens)."""
    decl = setting_of(field)
    flag = flag_name(field.name, decl)
    if decl.action == "store_true":
        return [flag] if value else []
    if decl.action == "store_false":
        return [] if value else [flag]
    if value is None:
        return [flag, "0"] if field.name in ZERO_IS_NONE else []
    if isinstance(value, bool):
        return [flag, "true" if value else "false"]
    if isinstance(value, dict):
        return [flag, *(f"{k}={_text(v)}" for k, v in value.items())]
    if field.name == "lr_plan":
        return [flag, format_length_plan(value)]
    if isinstance(value, (list, tuple)):
        tokens = [_text(v) for v in value]
        return [flag, *tokens] if decl.nargs == "+" else [flag, ",".join(tokens)]
    return [flag, _text(value)]


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def train_arguments(cfg: TrainConfig, *, keep: tuple[str, ...] = ()) -> list[str]:
    """The flags (after ``lictrain train``) that give ``cfg``: its non-default settings, less
    :data:`NOT_RECIPE` (those named in ``keep`` stay)."""
    defaults = TrainConfig()
    tokens: list[str] = []
    for field in dataclasses.fields(TrainConfig):
        value = getattr(cfg, field.name)
        if field.name in NOT_RECIPE and field.name not in keep:
            continue
        if value == getattr(defaults, field.name):
            continue
        tokens += flag_values(field, value)
    return tokens


def train_command(cfg: TrainConfig, *, keep: tuple[str, ...] = ("save_path", "pretrained")) -> str:
    """``lictrain train ...`` for ``cfg``, quoted for a POSIX shell."""
    return shlex.join(["lictrain", "train", *train_arguments(cfg, keep=keep)])


def reproduce_command(cfg: TrainConfig, steps: int, lr_plan: list[list[int]], save_path: str) -> str:
    """The command that trains a budgeted run again step for step: its settings with ``--steps``
    and ``--lr-plan`` in place of the budget, the LR and batch it resolved, into ``save_path``."""
    fixed = dataclasses.replace(cfg, budget_minutes=None, epochs=None, steps=steps, lr_plan=lr_plan,
                                lr=cfg.peak_lr, save_path=save_path)
    return train_command(fixed)
