"""Published training recipes as named presets of :class:`~lictrain.config.TrainConfig` values.

``lictrain train --recipe NAME`` starts from a recipe's values; flags given explicitly still
win. Each value comes from its source (paper or code), cited per recipe; what a recipe cannot
express in lictrain is said in its ``notes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lictrain.errors import ConfigError

__all__ = ["Recipe", "RECIPES", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    """A named set of TrainConfig values and where they come from."""

    name: str
    source: str
    values: dict[str, Any]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self, overridden: set[str] | None = None) -> str:
        """One line: what the recipe sets (values overridden by flags marked)."""
        overridden = overridden or set()
        parts = [f"{k}={v}" + (" (overridden)" if k in overridden else "") for k, v in self.values.items()]
        return f"recipe {self.name} ({self.source}) sets " + ", ".join(parts)


RECIPES: dict[str, Recipe] = {
    "hpcm": Recipe(
        "hpcm", "Li et al., HPCM, ICCV 2025",
        {"model": "hpcm-base", "epochs": 3000, "batch_size": 32, "patch_size": 256, "lr": 1e-4,
         "lr_schedule": "multistep", "epoch_size": None, "aux_lr": 1e-3, "clip_max_norm": 1.0, "metric": "mse",
         "use_balanced": False},
        ("Adam 1e-4, x0.3/x0.1/x0.01 at epochs 2750/2850/2950 (--lr-schedule multistep); an epoch is one pass "
         "over the training set (Flickr2W in the paper: --dataset it)",),
    ),
    "lic-hpcm-balanced": Recipe(
        "lic-hpcm-balanced", "yutendo0714/LIC-HPCM-Balanced train.py",
        {"model": "hpcm-base", "epochs": 3001, "batch_size": 16, "patch_size": 256, "test_batch_size": 1,
         "lr": 5e-5, "lr_schedule": "multistep", "epoch_size": None, "lmbda": 0.013, "clip_max_norm": 1.0,
         "use_balanced": True, "balanced_update": "same-batch", "gamma": 0.003, "w_lr": 0.025,
         "cautious_max_scale": 10.0},
        ("its last LR step is x0.02 (epoch 2950); lictrain's multistep ends at HPCM's x0.01",),
    ),
    "compressai": Recipe(
        "compressai", "InterDigitalInc/CompressAI examples/train.py defaults",
        {"model": "bmshj2018-factorized", "quality": 3, "epochs": 100, "batch_size": 16, "test_batch_size": 64,
         "patch_size": 256, "lr": 1e-4, "aux_lr": 1e-3, "lr_schedule": "plateau", "lmbda": 1e-2,
         "clip_max_norm": 1.0, "epoch_size": None, "use_balanced": False},
        ("train.py builds every model at quality 3",),
    ),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown --recipe {name!r}; choose one of {', '.join(RECIPES)}") from None
