"""Which metric a folder of runs was optimised for: ``lictrain analyze``'s default ``--metric``.

* an Optuna sweep (``sweep.json`` written by ``lictrain sweep --optuna``) names its objective:
  ``loss`` ranks by test loss; ``bpp-psnr`` by PSNR (MS-SSIM for an MS-SSIM-trained sweep);
* otherwise the runs' own distortion: ``ms_ssim`` when every run trained on MS-SSIM, else ``psnr``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd


def optimised_metric(results_dir: Path, runs: pd.DataFrame | None = None) -> tuple[str, str]:
    """``(metric, why)`` for ``results_dir``; ``why`` is a short phrase for the log."""
    sweep: dict[str, Any] = {}
    try:
        sweep = json.loads((Path(results_dir) / "sweep.json").read_text())
    except (OSError, ValueError):
        pass
    base = sweep.get("base_config") if isinstance(sweep.get("base_config"), dict) else {}
    ms_ssim_sweep = base.get("metric") == "ms-ssim"
    objective = sweep.get("objective")
    if objective == "loss":
        return "loss", "the test loss the Optuna study minimised"
    if objective == "bpp-psnr":
        return ("ms_ssim", "the study's quality objective (an MS-SSIM sweep)") if ms_ssim_sweep else \
            ("psnr", "the study's quality objective")
    trained = set()
    if runs is not None and "metric" in runs.columns:
        trained = {m for m in runs["metric"].dropna().unique()}
    if ms_ssim_sweep or trained == {"ms-ssim"}:
        return "ms_ssim", "the runs trained on MS-SSIM"
    return "psnr", "test PSNR (the runs trained on MSE)"
