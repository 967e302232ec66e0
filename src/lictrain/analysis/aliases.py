"""Names other training scripts log under, mapped to lictrain's: one table for the analyzer.

``lictrain analyze`` reads sweeps logged by lictrain, by LIC-HPCM-Balanced's ``train.py``
(config ``lmbda``, ``learning_rate``; history and summary ``test/psnr``, ``test/bpp_loss``,
``test/loss``, ``test/mse_loss``) and by CompressAI-style scripts. A foreign name is renamed
only when the run has no value under lictrain's name already, so lictrain's own keys win.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONFIG_ALIASES", "METRIC_ALIASES", "canonical_config", "canonical_metrics"]

#: config key -> lictrain's column
CONFIG_ALIASES: dict[str, str] = {
    "lmbda": "lambda",
    "lmbda_value": "lambda",
    "learning_rate": "lr",
    "learning-rate": "lr",
    "aux_learning_rate": "aux_lr",
    "aux-learning-rate": "aux_lr",
}

#: summary/history key -> lictrain's metric (test-set values only: ``train/*`` stay as they are)
METRIC_ALIASES: dict[str, str] = {
    "test/loss": "loss",
    "test/bpp_loss": "bpp",
    "test/bpp": "bpp",
    "test/mse_loss": "mse",
    "test/mse": "mse",
    "test/psnr": "psnr",
    "test/ms_ssim": "ms_ssim",
    "test/ms-ssim": "ms_ssim",
    "test/msssim": "ms_ssim",
    "bpp_loss": "bpp",
    "mse_loss": "mse",
    "msssim": "ms_ssim",
    "ms-ssim": "ms_ssim",
}


def _renamed(values: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    out = dict(values)
    for key, value in values.items():
        # nested dicts flatten with "." (``test.psnr``); W&B keys keep their "/" (``test/psnr``)
        target = table.get(key) or table.get(key.replace(".", "/"))
        if target and out.get(target) is None:
            out[target] = value
            del out[key]
    return out


def canonical_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with foreign names renamed to lictrain's (:data:`CONFIG_ALIASES`)."""
    return _renamed(config, CONFIG_ALIASES)


def canonical_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` (or a history row) with foreign metric names renamed (:data:`METRIC_ALIASES`)."""
    return _renamed(summary, METRIC_ALIASES)
