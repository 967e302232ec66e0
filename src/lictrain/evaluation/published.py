"""Published R-D points as named curves, to plot and BD-rate against (``lictrain rd --anchor``).

HPCM (Li et al., ICCV 2025): the official repository's ``R-D_Data.md`` (lyq133/LIC-HPCM), six
λ per model, measured with its ``test.py``: images padded with zeros, centred, to multiples of
256 (``lictrain eval --pad official``), bpp of the entropy-coded strings over the original
pixels, PSNR on rounded RGB. The repository publishes CLIC Professional Validation and Tecnick
numbers; Kodak appears only as a figure in the paper, so it is not here. MS-SSIM curves are the
MS-SSIM-trained models, given in dB (``-10 log10(1 - MS-SSIM)``) and stored here as MS-SSIM.
"""

from __future__ import annotations

import math

from lictrain.errors import ConfigError
from lictrain.evaluation.results import CurveResult, ImageResult, PointResult

__all__ = ["PUBLISHED", "published_curve", "published_names"]

_SOURCE = "HPCM official R-D data (lyq133/LIC-HPCM R-D_Data.md)"

#: name -> (data set, metric, bpp, values): PSNR in dB, or MS-SSIM in dB
PUBLISHED: dict[str, tuple[str, str, tuple[float, ...], tuple[float, ...]]] = {
    "hpcm-base@clic": ("CLIC Pro Valid", "psnr", (0.0916, 0.1308, 0.1984, 0.2963, 0.4236, 0.603),
                       (31.2149, 32.5118, 33.9748, 35.5043, 37.0008, 38.4556)),
    "hpcm-base@clic-msssim": ("CLIC Pro Valid", "ms_ssim_db", (0.0819, 0.1163, 0.1706, 0.2401, 0.3411, 0.4872),
                              (14.5694, 15.8568, 17.2766, 18.6064, 19.9874, 21.4293)),
    "hpcm-large@clic": ("CLIC Pro Valid", "psnr", (0.0744, 0.1164, 0.179, 0.2722, 0.3954, 0.5714),
                        (30.8092, 32.2879, 33.7716, 35.3509, 36.8762, 38.4535)),
    "hpcm-large@clic-msssim": ("CLIC Pro Valid", "ms_ssim_db", (0.078, 0.1156, 0.1689, 0.2399, 0.3354, 0.4755),
                               (14.4631, 15.7584, 17.3146, 18.6537, 20.0152, 21.4103)),
    "hpcm-base@tecnick": ("Tecnick", "psnr", (0.0992, 0.1358, 0.1955, 0.2812, 0.3942, 0.5607),
                          (31.3661, 32.704, 34.1426, 35.623, 37.0529, 38.4279)),
    "hpcm-base@tecnick-msssim": ("Tecnick", "ms_ssim_db", (0.0803, 0.1122, 0.1625, 0.2319, 0.3321, 0.4812),
                                 (14.9, 16.177, 17.5727, 18.9839, 20.486, 22.109)),
    "hpcm-large@tecnick": ("Tecnick", "psnr", (0.084, 0.1234, 0.1792, 0.26, 0.3687, 0.5265),
                           (31.0122, 32.5245, 33.9732, 35.4888, 36.9471, 38.4423)),
    "hpcm-large@tecnick-msssim": ("Tecnick", "ms_ssim_db", (0.0767, 0.1113, 0.1598, 0.2302, 0.3243, 0.4675),
                                  (14.8218, 16.0847, 17.5967, 19.0246, 20.4914, 22.0749)),
}


def published_names() -> list[str]:
    """Names of the published curves."""
    return list(PUBLISHED)


def published_curve(name: str) -> CurveResult:
    """The published curve ``name`` as a :class:`CurveResult` (kind ``published``).

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    if name not in PUBLISHED:
        raise ConfigError(f"no published curve {name!r}; known: {', '.join(PUBLISHED)}")
    dataset, metric, rates, values = PUBLISHED[name]
    points = []
    for i, (rate, value) in enumerate(zip(rates, values)):
        psnr = value if metric == "psnr" else math.nan
        ms_ssim = 1 - 10 ** (-value / 10) if metric == "ms_ssim_db" else math.nan
        image = ImageResult(dataset, 0, 0, 0, 0, rate, rate, math.nan, psnr, ms_ssim, math.nan, math.nan)
        points.append(PointResult(f"λ{i}", {"source": _SOURCE}, [image]))
    return CurveResult(name, "published", points, f"{_SOURCE}: {dataset}, "
                       f"{'PSNR' if metric == 'psnr' else 'MS-SSIM'}-optimised, official test protocol", [dataset])
