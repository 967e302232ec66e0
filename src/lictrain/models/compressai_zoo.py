"""CompressAI's zoo architectures, randomly initialised (``pretrained=False``).

Ballé et al., "Variational image compression with a scale hyperprior" (ICLR 2018);
Minnen et al., "Joint autoregressive and hierarchical priors" (NeurIPS 2018);
Cheng et al., "Learned image compression with discretized Gaussian mixture likelihoods and
attention modules" (CVPR 2020). ``quality`` picks the width exactly as CompressAI does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lictrain.models.registry import register_model

if TYPE_CHECKING:
    import torch


def _sizes(qualities: range, wide_from: int, narrow: int, wide: int) -> dict[int, int]:
    """CompressAI's zoo: one channel width for the low qualities, a wider one from ``wide_from``."""
    return {q: narrow if q < wide_from else wide for q in qualities}

# CompressAI is imported by each factory, not here: importing it costs ~3 s, and listing or
# validating model names (``lictrain models``, ``--help``, config checks) must not pay that.


@register_model("bmshj2018-factorized", alignment=16, qualities=range(1, 9),
                parameters=_sizes(range(1, 9), 6, 2_998_147, 7_030_531))
def bmshj2018_factorized(quality: int) -> torch.nn.Module:
    """Ballé 2018 factorized prior (no hyperprior), CompressAI."""
    from compressai import zoo

    return zoo.bmshj2018_factorized(quality=quality, pretrained=False)


@register_model("bmshj2018-hyperprior", alignment=64, qualities=range(1, 9),
                parameters=_sizes(range(1, 9), 6, 5_075_843, 11_816_323))
def bmshj2018_hyperprior(quality: int) -> torch.nn.Module:
    """Ballé 2018 scale hyperprior, CompressAI."""
    from compressai import zoo

    return zoo.bmshj2018_hyperprior(quality=quality, pretrained=False)


@register_model("mbt2018-mean", alignment=64, qualities=range(1, 9),
                parameters=_sizes(range(1, 9), 5, 7_028_003, 17_561_699))
def mbt2018_mean(quality: int) -> torch.nn.Module:
    """Minnen 2018 mean-scale hyperprior, CompressAI."""
    from compressai import zoo

    return zoo.mbt2018_mean(quality=quality, pretrained=False)


@register_model("mbt2018", alignment=64, qualities=range(1, 9),
                parameters=_sizes(range(1, 9), 5, 14_130_467, 25_504_596))
def mbt2018(quality: int) -> torch.nn.Module:
    """Minnen 2018 joint autoregressive + hyperprior, CompressAI."""
    from compressai import zoo

    return zoo.mbt2018(quality=quality, pretrained=False)


@register_model("cheng2020-anchor", alignment=64, qualities=range(1, 7),
                parameters=_sizes(range(1, 7), 4, 11_833_149, 26_598_956))
def cheng2020_anchor(quality: int) -> torch.nn.Module:
    """Cheng 2020 anchor (residual blocks, autoregressive context), CompressAI."""
    from compressai import zoo

    return zoo.cheng2020_anchor(quality=quality, pretrained=False)
