"""Model registry: codec architectures by name.

The registry is a leaf: it imports nothing of ours but the errors. Model modules register
themselves into it, and :mod:`lictrain.models` imports them, so ``import lictrain.models``
(or any of its submodules) fills the registry. Every model joins with one decorator::

    @register_model("my-codec", alignment=64, qualities=range(1, 9))
    def my_codec(quality: int) -> torch.nn.Module: ...

and is then available to ``lictrain train --model my-codec`` and :func:`build_model`.

Model interface (CompressAI's): ``forward(x)`` returns a dict with ``x_hat`` and
``likelihoods`` (name -> tensor). A model may also return ``rate_likelihoods`` (name ->
tensor, e.g. HPCM's ``z``, ``s1``, ``s2``, ``s3``) whose entries partition the rate more
finely; the hierarchical balanced tasks use those when present, else ``likelihoods``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from lictrain.errors import ConfigError

ModelFactory = Callable[[int], torch.nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    Attributes:
        name: registry name (``--model``).
        factory: ``quality -> nn.Module`` (randomly initialised).
        alignment: input height/width must be a multiple of this (total downsampling).
        qualities: valid ``--quality`` values (they pick the network width).
        description: one line for ``lictrain models``.
        short_budget_lr: default peak LR of a budgeted run (warm-up + cosine); measured per
            model by ``bench/time_to_quality.py levers`` where known, else a cautious 1e-3.
        parameters: parameter count per quality, declared so that ``lictrain models`` lists
            sizes without building (slow) or importing (CompressAI) anything; checked against
            built models by the tests. ``None``: unknown (a user's model).
    """

    name: str
    factory: ModelFactory
    alignment: int
    qualities: tuple[int, ...]
    description: str = ""
    short_budget_lr: float = 1e-3
    parameters: dict[int, int] | None = None

    def size_text(self) -> str:
        """``"3.0 M"``, or ``"3.0-7.0 M"`` over the qualities; ``"?"`` when not declared."""
        if not self.parameters:
            return "?"
        low, high = min(self.parameters.values()) / 1e6, max(self.parameters.values()) / 1e6
        return f"{low:.1f} M" if round(low, 1) == round(high, 1) else f"{low:.1f}-{high:.1f} M"


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, alignment: int, qualities: range | tuple[int, ...], description: str = "",
    short_budget_lr: float = 1e-3, parameters: dict[int, int] | None = None,
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding a ``quality -> nn.Module`` factory to the registry under ``name``."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = description or (factory.__doc__ or "").strip().splitlines()[0]
        _REGISTRY[name] = ModelSpec(name, factory, alignment, tuple(qualities), doc, short_budget_lr, parameters)
        return factory

    return decorator


def available_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}") from None


def build_model(name: str, quality: int) -> torch.nn.Module:
    """Build a randomly initialised model ``name`` at ``quality``.

    Raises:
        ConfigError: unknown model or a quality it does not offer.
    """
    spec = get_spec(name)
    if quality not in spec.qualities:
        raise ConfigError(
            f"--quality {quality} is not available for {name}; choose {spec.qualities[0]}..{spec.qualities[-1]}"
        )
    return spec.factory(quality)

