"""Fine-tuning controls: per-module learning rates (``--lr-groups``) and progressive
unfreezing (``--unfreeze G1,G2,... --unfreeze-every E``).

A *group* names part of a model: any module path of ``model.named_modules()`` (``g_a``,
``h_s``, ``context``, ``g_a.0``) or one of the aliases that read the same across models:

* ``transforms``: ``g_a`` and ``g_s`` (the analysis and synthesis transforms);
* ``context``: the context model (HPCM's ``context``; CompressAI's ``context_prediction`` and
  ``entropy_parameters``);
* ``entropy``: the rest of the entropy model: hyperprior transforms ``h_a``/``h_s`` and the
  entropy bottlenecks/priors -- every top-level module that is neither a transform nor context.

A parameter named by several groups takes the LR of the most specific one (a module path over
an alias, a deeper path over a shallower one). The EntropyBottleneck quantiles (aux) are never
grouped: their own optimiser keeps them in step with the network.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lictrain.errors import ConfigError
from lictrain.training.optimizers import AUX_SUFFIX

log = logging.getLogger(__name__)

TRANSFORMS = ("g_a", "g_s")
CONTEXT = ("context", "context_prediction", "entropy_parameters")
ALIASES = ("transforms", "context", "entropy")


def _top_level(model: torch.nn.Module) -> list[str]:
    return [name for name, child in model.named_children() if any(True for _ in child.parameters())]


def group_members(model: torch.nn.Module, group: str) -> tuple[list[str], int]:
    """(names of the trainable parameters in ``group``, its specificity: 0 for an alias, else the
    module path's depth).

    Raises:
        ConfigError: no module of that name, or no trainable parameter in it.
    """
    tops = _top_level(model)
    if group in ALIASES:
        if group == "transforms":
            prefixes = [t for t in tops if t in TRANSFORMS]
        elif group == "context":
            prefixes = [t for t in tops if t in CONTEXT]
        else:
            prefixes = [t for t in tops if t not in TRANSFORMS and t not in CONTEXT]
        specificity = 0
    elif group and group in dict(model.named_modules()):
        prefixes, specificity = [group], group.count(".") + 1
    else:
        raise ConfigError(f"unknown module group {group!r} for this model; choose from "
                          f"{', '.join(available_groups(model))} (or a deeper module path such as g_a.0)")
    names = [name for name, _ in model.named_parameters()
             if any(name.startswith(pre + ".") for pre in prefixes) and not name.endswith(AUX_SUFFIX)]
    if not names:
        raise ConfigError(f"module group {group!r} has no trainable parameters in this model; choose from "
                          f"{', '.join(available_groups(model))}")
    return names, specificity


def available_groups(model: torch.nn.Module) -> list[str]:
    """The aliases that hold parameters in ``model``, then its top-level modules with parameters."""
    tops = _top_level(model)
    aliases = [a for a, members in (("transforms", TRANSFORMS), ("context", CONTEXT)) if any(t in members for t in tops)]
    if any(t not in TRANSFORMS and t not in CONTEXT for t in tops):
        aliases.append("entropy")
    return aliases + [t for t in tops if t not in aliases]


def parameter_groups(model: torch.nn.Module, net_params: list[torch.nn.Parameter], default_lr: float,
                     lr_groups: dict[str, float] | None) -> list[dict[str, Any]]:
    """Optimiser param groups: first the parameters no group names (at ``default_lr``), then one
    per named group (``{"params", "lr", "name"}``). Without ``lr_groups``: one group.

    Raises:
        ConfigError: an unknown or empty group.
    """
    if not lr_groups:
        return [{"params": net_params, "lr": default_lr, "name": "default"}]
    owner: dict[str, tuple[int, str]] = {}  # parameter name -> (specificity, group)
    for group in lr_groups:
        names, specificity = group_members(model, group)
        for name in names:
            if name not in owner or specificity > owner[name][0]:
                owner[name] = (specificity, group)
    wanted = {id(p) for p in net_params}
    by_group: dict[str, list[torch.nn.Parameter]] = {"default": []}
    for name, p in model.named_parameters():
        if id(p) not in wanted:
            continue
        by_group.setdefault(owner[name][1] if name in owner else "default", []).append(p)
    groups = [{"params": by_group["default"], "lr": default_lr, "name": "default"}]
    for group, lr in lr_groups.items():
        if by_group.get(group):
            groups.append({"params": by_group[group], "lr": float(lr), "name": group})
        else:
            log.warning("--lr-groups %s: every parameter of it is claimed by a more specific group", group)
    for group in groups:
        log.info("LR group %s: %d tensors, %d parameters, lr %.3g", group["name"], len(group["params"]),
                 sum(p.numel() for p in group["params"]), group["lr"])
    return groups


class Unfreezer:
    """Progressive unfreezing: in epoch ``e`` the first ``min(e // every, n - 1) + 1`` groups
    train; the others' parameters are frozen (``requires_grad=False``: no gradient, no
    optimiser update, no Adam moments). Parameters no group names train throughout.

    A function of the epoch alone, so a resumed run freezes exactly what the uninterrupted one did.
    """

    def __init__(self, model: torch.nn.Module, groups: list[str], every: int) -> None:
        self.every = every
        self.groups = groups
        params = dict(model.named_parameters())
        self.members = [[params[n] for n in group_members(model, g)[0]] for g in groups]
        self.stage = -1

    def stage_of(self, epoch: int) -> int:
        return min(epoch // self.every, len(self.groups) - 1)

    def apply(self, epoch: int) -> None:
        """Freeze/unfreeze for ``epoch`` (logs when the set changes)."""
        stage = self.stage_of(epoch)
        training = {id(p) for members in self.members[: stage + 1] for p in members}
        for members in self.members:
            for p in members:
                p.requires_grad_(id(p) in training)
        if stage != self.stage:
            frozen = self.groups[stage + 1:]
            log.info("epoch %d: training %s%s", epoch, ", ".join(self.groups[: stage + 1]),
                     f"; frozen: {', '.join(frozen)}" if frozen else " (all groups unfrozen)")
            self.stage = stage
