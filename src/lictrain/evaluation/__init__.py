"""lictrain.evaluation: real bitstreams, metrics, classical anchors, R-D curves and BD-rate.

See ``docs/evaluation.md``. Modules, in the order data flows through them:

* :mod:`.loading` -- load a checkpoint as a codec (:class:`.loading.CodecInfo`)
* :mod:`.pixels` -- uint8 images <-> padded model input and back
* :mod:`.codec` -- image <-> ``.lic`` bytes (re-exports the two above)
* :mod:`.bitstream` -- the ``.lic`` file format: writing, and every name of the format
  (:mod:`.bitstream_format` the layout, :mod:`.bitstream_read` reading,
  :mod:`.bitstream_checks` the checks before decoding)
* :mod:`.metrics` -- PSNR, MS-SSIM, bpp on 8-bit images
* :mod:`.evaluate` -- checkpoints on images -> :class:`.results.CurveResult`
* :mod:`.anchors` -- JPEG / WebP / AVIF through Pillow -> the same results
* :mod:`.results` -- results as data; JSON and CSV files
* :mod:`.rd` -- DataFrames of R-D points and BD tables; the RD plot
* :mod:`.report` -- text tables and :func:`final_report` (the end of ``lictrain train``)

Names are imported lazily, so ``import lictrain.evaluation`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Bitstream": "bitstream", "pack": "bitstream", "unpack": "bitstream",
    "CodecInfo": "loading", "load_codec": "loading", "encode_image": "codec", "decode_bytes": "codec",
    "weights_fingerprint": "loading", "codec_from_model": "loading",
    "psnr_uint8": "metrics", "ms_ssim_uint8": "metrics", "bpp": "metrics",
    "evaluate_codec": "evaluate", "evaluate_checkpoints": "evaluate", "load_eval_images": "evaluate",
    "ANCHORS": "anchors", "evaluate_anchor": "anchors", "available_anchors": "anchors",
    "CurveResult": "results", "PointResult": "results", "ImageResult": "results",
    "read_curve": "results", "write_curve": "results",
    "rd_frame": "rd", "bd_table": "rd", "bd_delta": "rd", "plot_rd": "rd",
    "FinalReport": "report", "final_report": "report", "results_table": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lictrain.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lictrain.evaluation' has no attribute {name!r}")
