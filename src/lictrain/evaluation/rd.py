"""R-D analysis: curves as a DataFrame, BD-rate/BD-PSNR tables, and the plot drawn from them.

Data first, drawing second (as Optuna's visualisation modules): :func:`rd_frame` and
:func:`bd_table` return pandas DataFrames, :func:`plot_rd` only draws what they hold.

Bjøntegaard deltas come from the ``bjontegaard`` package with piecewise cubic Hermite
(``pchip``) interpolation, as in the JVET common test conditions (JVET-T2010); nothing here
integrates a curve by hand. Conventions:

* **BD-rate** (%): average bitrate difference of the test curve against the anchor at equal
  quality, over the quality range both cover. Negative = the test codec needs fewer bits.
* **BD-PSNR** / **BD-MS-SSIM** (dB): average quality difference at equal rate, over the
  log-rate range both cover. Positive = the test codec is better.
* MS-SSIM enters on the dB scale ``-10·log10(1 - MS-SSIM)``.
* **overlap**: the fraction of the test curve's range (quality axis for BD-rate) that the
  anchor's curve also covers. Below ``min_overlap`` (default 0.75) the delta describes only
  part of the test curve and a warning is added; with no overlap it is NaN.
* **shared range**: the quality range (dB) both curves cover, and the rate range (bpp) they
  share. A BD-rate is refused (NaN, with a note saying why) when the curves share less than
  :data:`MIN_SHARED_DB` of quality or fewer than 2 points of either curve lie inside it: a
  number from one point against one point (or a sliver of a curve) is an extrapolation, not a
  measurement. The same rule on log-rate guards BD-quality.
* JVET uses 4 points per curve; fewer (but at least 2) give a number with a warning.
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lictrain.errors import ConfigError
from lictrain.evaluation.metrics import ms_ssim_db
from lictrain.evaluation.results import CurveResult
from lictrain.figures import legend_outside, readable_ticks

BD_METHOD = "pchip"
MIN_POINTS = 4  # JVET CTC
#: the least quality range (dB) two curves must share for a BD-rate (and the least log10-rate
#: range, 0.05 = 12% in bpp, for a BD-quality); below it the delta is refused
MIN_SHARED_DB = 0.5
MIN_SHARED_LOG_RATE = 0.05
#: points of each curve that must lie inside the shared range
MIN_SHARED_POINTS = 2


def rd_frame(curves: Sequence[CurveResult]) -> pd.DataFrame:
    """One row per R-D point: curve, kind, point, bpp, bpp_payload, psnr, ms_ssim, ms_ssim_db, ..."""
    rows = []
    for c in curves:
        for p in c.sorted_points():
            m = p.mean
            rows.append({"curve": c.name, "kind": c.kind, "point": p.label, "bpp": m["bpp"],
                         "bpp_payload": m["bpp_payload"], "bpp_estimated": m["bpp_estimated"], "psnr": m["psnr"],
                         "ms_ssim": m["ms_ssim"], "ms_ssim_db": ms_ssim_db(m["ms_ssim"]),
                         "encode_s": m["encode_s"], "decode_s": m["decode_s"]})
    frame = pd.DataFrame(rows, columns=["curve", "kind", "point", "bpp", "bpp_payload", "bpp_estimated", "psnr",
                                        "ms_ssim", "ms_ssim_db", "encode_s", "decode_s"])
    frame.attrs["images"] = sorted({im for c in curves for im in (c.images or [])})  # the image set, for titles
    return frame


@dataclass
class BDResult:
    """Bjøntegaard deltas of one test curve against the anchor on one quality metric."""

    bd_rate: float  # percent
    bd_quality: float  # dB
    overlap: float  # fraction of the test curve's quality range the anchor covers
    points: int  # usable points of the test curve
    notes: list[str] = field(default_factory=list)
    shared_db: float = math.nan  # quality range both curves cover (dB)
    shared_bpp: tuple[float, float] = (math.nan, math.nan)  # rate range both curves cover


def _clean(rate: Sequence[float], quality: Sequence[float], sort_by: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite points with rate > 0, sorted by ``sort_by`` ("quality" or "rate"), duplicates on that axis dropped."""
    r, q = np.asarray(rate, dtype=float), np.asarray(quality, dtype=float)
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    key = q if sort_by == "quality" else r
    order = np.argsort(key, kind="stable")
    r, q, key = r[order], q[order], key[order]
    unique = np.concatenate([[True], np.diff(key) > 0]) if len(key) else np.zeros(0, bool)
    return r[unique], q[unique]


def monotone_points(rate: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray, int]:
    """The points whose quality rises with rate, and how many others were dropped.

    An R-D curve must be monotone for a BD integral; a JPEG anchor re-encoding JPEG sources is
    not (q90 reproduces the source's own quantisation, 50 dB, where q95 gives 46 dB). Sorted by
    rate, a point is kept when its quality beats every point of lower rate.
    """
    r, q = np.asarray(rate, dtype=float), np.asarray(quality, dtype=float)
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    order = np.argsort(r, kind="stable")
    r, q = r[order], q[order]
    best, kept = -math.inf, []
    for i, value in enumerate(q):
        if value > best:
            kept.append(i)
            best = value
    return r[kept], q[kept], len(r) - len(kept)


def _overlap(test: np.ndarray, anchor: np.ndarray) -> float:
    lo, hi = max(test.min(), anchor.min()), min(test.max(), anchor.max())
    span = test.max() - test.min()
    if span <= 0:
        return 1.0 if anchor.min() <= test.min() <= anchor.max() else 0.0
    return max(hi - lo, 0.0) / span


def _shared(test: np.ndarray, anchor: np.ndarray) -> tuple[float, float, int, int]:
    """The range both sorted axes cover and how many points of each lie in it: (lo, hi, test, anchor)."""
    lo, hi = max(test.min(), anchor.min()), min(test.max(), anchor.max())
    if hi < lo:
        return lo, hi, 0, 0
    eps = 1e-9 * max(1.0, abs(hi))
    inside = lambda v: int(((v >= lo - eps) & (v <= hi + eps)).sum())  # noqa: E731
    return lo, hi, inside(test), inside(anchor)


def _too_narrow(span: float, minimum: float, n_test: int, n_anchor: int, unit: str, what: str) -> str:
    """A note refusing the delta, or '' when the shared range supports one."""
    if span >= minimum and n_test >= MIN_SHARED_POINTS and n_anchor >= MIN_SHARED_POINTS:
        return ""
    return (f"the curves share {span:.2f} {unit} with {n_test} and {n_anchor} point(s) inside it; {what} needs "
            f">= {minimum:g} {unit} and {MIN_SHARED_POINTS} points of each curve (refused)")


def bd_delta(anchor_rate: Sequence[float], anchor_quality: Sequence[float], test_rate: Sequence[float],
             test_quality: Sequence[float], *, min_overlap: float = 0.75) -> BDResult:
    """BD-rate (%) and BD-quality (dB) of a test curve against an anchor (bjontegaard, pchip).

    Never raises for bad curves: too few points or no overlap give NaN with a note.
    """
    import bjontegaard as bd

    notes: list[str] = []
    curves = []
    for who, rate, quality in (("the anchor", anchor_rate, anchor_quality), ("this curve", test_rate, test_quality)):
        r, q, dropped = monotone_points(rate, quality)
        if dropped:
            notes.append(f"{who}: dropped {dropped} point(s) whose quality falls as the rate rises (not an R-D curve)")
        curves.append((r, q))
    (anchor_rate, anchor_quality), (test_rate, test_quality) = curves
    ar, aq = _clean(anchor_rate, anchor_quality, "quality")
    tr, tq = _clean(test_rate, test_quality, "quality")
    npts = len(tr)
    if len(ar) < 2 or len(tr) < 2:
        who = "the anchor" if len(ar) < 2 else "this curve"
        return BDResult(math.nan, math.nan, math.nan, npts, notes + [f"{who} has {min(len(ar), len(tr))} usable point(s); BD needs >= 2 ({MIN_POINTS} per JVET)"])
    if npts < MIN_POINTS or len(ar) < MIN_POINTS:
        notes.append(f"fewer than {MIN_POINTS} points (JVET uses {MIN_POINTS}); treat as indicative")
    overlap = _overlap(tq, aq)
    if overlap == 0:
        return BDResult(math.nan, math.nan, 0.0, npts, notes + ["the curves do not overlap in quality; no BD-rate"], 0.0)
    q_lo, q_hi, q_test, q_anchor = _shared(tq, aq)
    ar2, aq2 = _clean(anchor_rate, anchor_quality, "rate")  # BD-quality integrates over log-rate
    tr2, tq2 = _clean(test_rate, test_quality, "rate")
    r_lo, r_hi, r_test, r_anchor = _shared(np.log10(tr2), np.log10(ar2))
    shared_db, shared_bpp = max(q_hi - q_lo, 0.0), (10 ** r_lo, 10 ** r_hi) if r_hi >= r_lo else (math.nan, math.nan)
    if overlap < min_overlap:
        notes.append(f"the anchor covers only {overlap:.0%} of this curve's quality range")
    rate_refused = _too_narrow(shared_db, MIN_SHARED_DB, q_test, q_anchor, "dB", "a BD-rate")
    quality_refused = _too_narrow(max(r_hi - r_lo, 0.0), MIN_SHARED_LOG_RATE, r_test, r_anchor, "log10(bpp)",
                                  "a BD-quality")
    notes += [n for n in (rate_refused, quality_refused) if n]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rate = math.nan if rate_refused else float(
            bd.bd_rate(ar, aq, tr, tq, method=BD_METHOD, require_matching_points=False, min_overlap=0))
        quality = math.nan if quality_refused else float(
            bd.bd_psnr(ar2, aq2, tr2, tq2, method=BD_METHOD, require_matching_points=False, min_overlap=0))
    for w in caught:
        notes.append(str(w.message).splitlines()[0])
    return BDResult(rate, quality, overlap, npts, notes, shared_db, shared_bpp)


def bd_table(curves: Sequence[CurveResult], anchor: str, *, min_overlap: float = 0.75) -> pd.DataFrame:
    """BD-rate/BD-PSNR (and on MS-SSIM dB) of every curve against the curve named ``anchor``.

    Returns:
        One row per other curve: ``curve, points, bd_rate_psnr, bd_psnr, overlap_psnr,
        shared_psnr_db, shared_bpp, bd_rate_msssim, bd_msssim_db, overlap_msssim, notes``.

    Raises:
        ConfigError: no curve is named ``anchor``.
    """
    by_name = {c.name: c for c in curves}
    if anchor not in by_name:
        raise ConfigError(f"--anchor {anchor!r} is not among the curves ({', '.join(by_name)}); pass one of them")
    frame = rd_frame(curves)
    a = frame[frame.curve == anchor]
    rows = []
    for c in curves:
        if c.name == anchor:
            continue
        t = frame[frame.curve == c.name]
        p = bd_delta(a.bpp, a.psnr, t.bpp, t.psnr, min_overlap=min_overlap)
        s = bd_delta(a.bpp, a.ms_ssim_db, t.bpp, t.ms_ssim_db, min_overlap=min_overlap)
        notes = [f"PSNR: {n}" for n in p.notes] + [f"MS-SSIM: {n}" for n in s.notes if n not in p.notes]
        rows.append({"curve": c.name, "points": p.points, "bd_rate_psnr": p.bd_rate, "bd_psnr": p.bd_quality,
                     "overlap_psnr": p.overlap, "shared_psnr_db": p.shared_db,
                     "shared_bpp": "{:.3g}-{:.3g}".format(*p.shared_bpp), "bd_rate_msssim": s.bd_rate,
                     "bd_msssim_db": s.bd_quality, "overlap_msssim": s.overlap, "notes": "; ".join(dict.fromkeys(notes))})
    return pd.DataFrame(rows, columns=["curve", "points", "bd_rate_psnr", "bd_psnr", "overlap_psnr", "shared_psnr_db",
                                       "shared_bpp", "bd_rate_msssim",
                                       "bd_msssim_db", "overlap_msssim", "notes"])


def interpolate_curve(rate: Sequence[float], quality: Sequence[float], *, at_rate: float | None = None,
                      at_quality: float | None = None) -> float:
    """A curve's quality at a rate, or rate at a quality (pchip over log-rate); NaN outside its range."""
    from scipy.interpolate import PchipInterpolator

    if (at_rate is None) == (at_quality is None):
        raise ValueError("give exactly one of at_rate, at_quality")
    if at_rate is not None:
        r, q = _clean(rate, quality, "rate")
        if len(r) < 2 or not r.min() <= at_rate <= r.max():
            return math.nan
        return float(PchipInterpolator(np.log10(r), q)(math.log10(at_rate)))
    r, q = _clean(rate, quality, "quality")
    if len(q) < 2 or not q.min() <= at_quality <= q.max():
        return math.nan
    return float(10 ** PchipInterpolator(q, np.log10(r))(at_quality))


# --------------------------------------------------------------------------- drawing


def curve_color(name: str, used: set[str]) -> str:
    """A colour of matplotlib's cycle chosen by the curve's name, so that a curve keeps its colour
    from one plot to the next (the next free one when two names meet in one plot)."""
    start = zlib.crc32(str(name).encode())
    for k in range(10):
        color = f"C{(start + k) % 10}"
        if color not in used:
            used.add(color)
            return color
    return f"C{start % 10}"


def zoom_to_learned(frame: pd.DataFrame, margin: float = 0.15) -> tuple[tuple[float, float] | None, dict[str, tuple[float, float]]]:
    """The bpp range of the learned curves (anchors clipped to it) and, per quality column, the range
    of every point inside it; ``(None, {})`` when there is nothing to zoom to."""
    learned = frame[frame.kind != "anchor"] if "kind" in frame.columns else frame
    if learned.empty or len(learned) == len(frame):
        return None, {}
    lo, hi = float(learned.bpp.min()), float(learned.bpp.max())
    pad = max((hi - lo) * margin, 0.02 * max(hi, 1e-3))
    xlim = (max(0.0, lo - pad), hi + pad)
    inside = frame[(frame.bpp >= xlim[0]) & (frame.bpp <= xlim[1])]
    ylims = {}
    for col in ("psnr", "ms_ssim_db"):
        values = inside[col].replace([np.inf, -np.inf], np.nan).dropna()
        if len(values):
            span = max(float(values.max() - values.min()), 0.5)
            ylims[col] = (float(values.min()) - 0.1 * span, float(values.max()) + 0.1 * span)
    return xlim, ylims


def plot_rd(frame: pd.DataFrame, out: str | Path, *, bd: pd.DataFrame | None = None, anchor: str | None = None,
            title: str | None = None, xlim: tuple[float, float] | None = None,
            ylim: tuple[float, float] | None = None, ylim_msssim: tuple[float, float] | None = None,
            zoom: bool = True) -> Path:
    """Draw bpp vs PSNR and bpp vs MS-SSIM (dB) of every curve in ``frame`` to a PNG.

    Args:
        frame: :func:`rd_frame`'s output.
        bd: :func:`bd_table`'s output; its BD-rates go into the legend.
        anchor: the anchor's name (drawn dashed).
        xlim, ylim, ylim_msssim: bpp range of both panels, PSNR range of the first, MS-SSIM (dB)
            range of the second (CompressAI's ``--axes``).
        zoom: without ``xlim``, show the learned curves' bpp range (anchors clipped to it).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    bd_rates = {} if bd is None else dict(zip(bd.curve, zip(bd.bd_rate_psnr, bd.bd_rate_msssim)))
    auto_x, auto_y = zoom_to_learned(frame) if zoom and xlim is None else (None, {})
    used: set[str] = set()
    for name, group in frame.groupby("curve", sort=False):
        group = group.sort_values("bpp")
        is_anchor = name == anchor
        style = {"linestyle": "--" if is_anchor else "-", "marker": "s" if group.kind.iloc[0] == "anchor" else "o",
                 "markersize": 4, "color": curve_color(str(name), used)}
        for ax, col, k in ((axes[0], "psnr", 0), (axes[1], "ms_ssim_db", 1)):
            label = str(name) + (" (anchor)" if is_anchor else "")
            if name in bd_rates and math.isfinite(bd_rates[name][k]):
                label += f"  BD-rate {bd_rates[name][k]:+.1f}%"
            ax.plot(group.bpp, group[col], label=label, **style)
    for ax, ylabel in ((axes[0], "PSNR RGB (dB)"), (axes[1], "MS-SSIM (dB, -10·log10(1-MS-SSIM))")):
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        readable_ticks(ax)  # no "1e-7+6.53626" offsets, no crowded labels
        if (xlim or auto_x) is not None:
            ax.set_xlim(*(xlim or auto_x))
        legend_outside(ax, where="below", fontsize=8)
    for ax, col, lim in ((axes[0], "psnr", ylim), (axes[1], "ms_ssim_db", ylim_msssim)):
        if (lim or auto_y.get(col)) is not None:
            ax.set_ylim(*(lim or auto_y[col]))
    if title is None:  # name the image set: R-D numbers mean nothing without it
        images = list(frame.attrs.get("images") or [])
        title = f"{len(images)} image(s): {', '.join(images[:4])}{', ...' if len(images) > 4 else ''}" if images else ""
    if title:
        fig.suptitle(title)
    path = Path(out).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; choose a writable --out") from exc
    return path
