"""Text for people: result tables, BD tables, and the report that ends ``lictrain train``."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch

from lictrain.data import NamedImage, load_builtin
from lictrain.evaluation.anchors import ANCHORS, evaluate_anchor
from lictrain.evaluation.evaluate import evaluate_checkpoints
from lictrain.evaluation.metrics import ms_ssim_db
from lictrain.evaluation.rd import MIN_POINTS, bd_delta, interpolate_curve, rd_frame
from lictrain.evaluation.results import CurveResult, PointResult

#: JPEG qualities of the final report: dense at the low end, where short trainings land
REPORT_QUALITIES: tuple[int, ...] = (2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)


def _f(value: float, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    return format(value, fmt).rjust(width)


def results_table(curves: Sequence[CurveResult], *, per_image: bool = True) -> str:
    """A fixed-width table: per image (learned codecs, with ``per_image``) and per point means.

    Columns: bpp (whole file), payload bpp, the model's estimated bpp, PSNR, MS-SSIM,
    seconds to encode and decode one image, and whether two decodes of the bytes agreed.
    """
    labels = [f"{c.name} / {p.label}" if c.kind == "anchor" else p.label for c in curves for p in c.points]
    lw = max([13, *map(len, labels)])
    head = (f"{'curve / point':{lw}s} {'image':14s} {'bpp':>7s} {'payload':>7s} {'est.':>7s} {'PSNR':>6s} "
            f"{'MS-SSIM':>7s} {'enc s':>6s} {'dec s':>6s}  decode x2")
    lines = [head, "-" * len(head)]
    for c in curves:
        for p in c.sorted_points():
            label = f"{c.name} / {p.label}" if c.kind == "anchor" else p.label
            rows = [(im.image, im.__dict__) for im in p.images] if per_image and c.kind != "anchor" else []
            rows.append(("mean" if rows else f"mean of {len(p.images)}", p.mean | {"deterministic": p.deterministic}))
            for image, m in rows:
                det = m.get("deterministic")
                det_text = "-" if det is None else ("identical" if det else "DIFFERENT")
                lines.append(
                    f"{label:{lw}s} {str(image)[:14]:14s} {_f(m['bpp'], '.4f', 7)} {_f(m['bpp_payload'], '.4f', 7)} "
                    f"{_f(m['bpp_estimated'], '.4f', 7)} {_f(m['psnr'], '.2f', 6)} {_f(m['ms_ssim'], '.4f', 7)} "
                    f"{_f(m['encode_s'], '.3f', 6)} {_f(m['decode_s'], '.3f', 6)}  {det_text}"
                )
                label = ""
    return "\n".join(lines)


def bd_text(table: pd.DataFrame, anchor: str) -> str:
    """The BD table of :func:`lictrain.evaluation.rd.bd_table` as text, notes below it."""
    head = (f"{'curve vs ' + anchor:34s} {'pts':>3s} {'BD-rate':>9s} {'BD-PSNR':>8s} {'overlap':>7s} {'shared':>7s} "
            f"{'shared':>13s}  {'BD-rate':>9s} {'BD-MSSSIM':>9s} {'overlap':>7s}")
    sub = (f"{'':34s} {'':>3s} {'(PSNR)':>9s} {'(dB)':>8s} {'':>7s} {'(dB)':>7s} {'(bpp)':>13s}  {'(MS-SSIM)':>9s} "
           f"{'(dB)':>9s}")
    lines = [head, sub, "-" * len(head)]
    notes = []
    for row in table.itertuples():
        lines.append(
            f"{str(row.curve)[:34]:34s} {row.points:3d} {_pct(row.bd_rate_psnr):>9s} {_f(row.bd_psnr, '+.3f', 8)} "
            f"{_f(row.overlap_psnr, '.0%', 7)} {_f(row.shared_psnr_db, '.2f', 7)} {row.shared_bpp:>13s}  "
            f"{_pct(row.bd_rate_msssim):>9s} {_f(row.bd_msssim_db, '+.3f', 9)} "
            f"{_f(row.overlap_msssim, '.0%', 7)}"
        )
        if row.notes:
            notes.append(f"warning: {row.curve}: {row.notes}")
    if table.empty:
        lines.append("(no curve besides the anchor)")
    return "\n".join(lines + notes)


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:+.2f}%"


# --------------------------------------------------------------------------- final report


@dataclass
class FinalReport:
    """What :func:`final_report` measured; ``text`` is what to print.

    Attributes:
        ours: the checkpoint(s) as a curve (one point per checkpoint).
        anchor: the JPEG curve on the same images.
        anchor_quality_at_our_rate: per point, the anchor's PSNR at our bpp (NaN outside its range).
        anchor_rate_at_our_quality: per point, the bpp the anchor needs for our PSNR (NaN outside).
        bd_rate: BD-rate (PSNR) against the anchor in percent; None with fewer than 4 points.
        seconds: wall time of the whole report.
    """

    text: str
    ours: CurveResult
    anchor: CurveResult
    anchor_quality_at_our_rate: list[float]
    anchor_rate_at_our_quality: list[float]
    bd_rate: float | None
    bd_psnr: float | None
    seconds: float

    def __str__(self) -> str:
        return self.text


def final_report(
    checkpoint_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    device: str | torch.device = "cpu",
    images: Sequence[NamedImage] | None = None,
    *,
    anchor: str = "jpeg420",
    qualities: Sequence[int] = REPORT_QUALITIES,
    estimate: bool = False,
    metric: str = "mse",
) -> FinalReport:
    """Evaluate checkpoint(s) with real bitstreams and place them beside JPEG's R-D curve.

    Called at the end of ``lictrain train``. Evaluates on ``images`` (default: the built-in
    test photos chelsea and coffee), encodes the same images with the anchor (JPEG 4:2:0)
    over ``qualities``, and reports, per checkpoint: whole-file bpp, PSNR, MS-SSIM, whether
    two decodes agreed (with ``estimate``, also the bpp estimated from the likelihoods: one
    more forward pass, about 60% more time); the anchor's PSNR at our bpp
    and the bpp it needs for our PSNR (pchip over log-rate); and with >= 4 checkpoints the
    BD-rate against the anchor (``bjontegaard``, pchip).

    ``metric``: the distortion the run optimised (``mse`` or ``ms-ssim``); an MS-SSIM run is
    compared with the anchor on MS-SSIM in dB, else on PSNR.

    Never raises for a nondeterministic decoder: that is a ``WARNING`` line in the text.

    Raises:
        CheckpointError, ConfigError, DataError: unusable checkpoint, device or images.
    """
    t0 = time.perf_counter()
    paths = [checkpoint_path] if isinstance(checkpoint_path, (str, os.PathLike)) else list(checkpoint_path)
    if images is None:
        images, where = load_builtin("test"), "the built-in test photos"
    else:
        where = f"{len(images)} image(s)"
    images = list(images)
    ours = evaluate_checkpoints(paths, images, device=device, name="ours", estimate=estimate, check_decode=True)
    by_ms_ssim = metric == "ms-ssim"  # an MS-SSIM-trained codec is judged on MS-SSIM (dB), else PSNR
    anchor_curve = evaluate_anchor(anchor, images, qualities, ms_ssim=by_ms_ssim)
    frame = rd_frame([ours, anchor_curve])
    ref = _Reference.of(frame, anchor, by_ms_ssim, qualities)
    names = ", ".join(im.name for im in images)
    lines = [f"final evaluation on {where} ({names}): real bitstreams, bpp of the whole .lic file; compared with "
             f"{ref.title} on {ref.what}" + (" in dB, -10·log10(1 - MS-SSIM), the metric this run optimised"
                                             if by_ms_ssim else "")]
    at_rate, at_quality = [], []
    for p in ours.sorted_points():
        point_lines, q_at, r_at = _point_lines(p, ref, estimate)
        lines += point_lines
        at_rate.append(q_at)
        at_quality.append(r_at)
    lines.append(f"  {ref.title} (Pillow, quality {min(qualities)}..{max(qualities)}): {ref.bpp.min():.3f}.."
                 f"{ref.bpp.max():.3f} bpp, {ref.quality.min():.2f}..{ref.quality.max():.2f} dB {ref.what}")
    bd_rate, bd_psnr, bd_lines = _bd_lines(frame, ref, len(ours.points), anchor)
    lines += bd_lines
    seconds = time.perf_counter() - t0
    return FinalReport("\n".join(lines), ours, anchor_curve, at_rate, at_quality, bd_rate, bd_psnr, seconds)


@dataclass
class _Reference:
    """The anchor's R-D points as the final report compares with them."""

    title: str
    bpp: pd.Series
    quality: pd.Series  # PSNR, or MS-SSIM in dB for an MS-SSIM run
    column: str  # the quality's column in the R-D frame
    what: str  # "PSNR" or "MS-SSIM"
    by_ms_ssim: bool
    qualities: Sequence[int]  # the anchor's own quality settings

    @classmethod
    def of(cls, frame: pd.DataFrame, anchor: str, by_ms_ssim: bool, qualities: Sequence[int]) -> _Reference:
        rows = frame[frame.curve == anchor]
        column, what = ("ms_ssim_db", "MS-SSIM") if by_ms_ssim else ("psnr", "PSNR")
        return cls(ANCHORS[anchor].title, rows.bpp, rows[column], column, what, by_ms_ssim, qualities)

    def quality_of(self, mean: dict) -> float:
        """A point's quality on the anchor's scale."""
        return ms_ssim_db(mean["ms_ssim"]) if self.by_ms_ssim else mean["psnr"]


def _point_lines(p: PointResult, ref: _Reference, estimate: bool) -> tuple[list[str], float, float]:
    """One checkpoint's lines (its numbers, the anchor's quality at its rate and rate at its quality),
    and those two values (NaN outside the anchor's range)."""
    m = p.mean
    q = ref.quality_of(m)
    lines = [
        f"  ours {p.label}: {m['bpp']:.4f} bpp (payload {m['bpp_payload']:.4f}"
        + (f", estimated {m['bpp_estimated']:.4f}), " if estimate else "), ")
        + f"PSNR {m['psnr']:.2f} dB, MS-SSIM {_f(m['ms_ssim'], '.4f', 0)} ({_f(ms_ssim_db(m['ms_ssim']), '.2f', 0)} dB); "
        f"encode {m['encode_s']:.2f} s, decode {m['decode_s']:.2f} s per image"
    ]
    if p.deterministic is False:
        bad = ", ".join(im.image for im in p.images if im.deterministic is False)
        lines.append(f"  WARNING: decoding the same bytes twice gave different pixels ({bad}): "
                     "this codec is not usable as a real codec on this device")
    q_at = interpolate_curve(ref.bpp, ref.quality, at_rate=m["bpp"])
    r_at = interpolate_curve(ref.bpp, ref.quality, at_quality=q)
    title, what = ref.title, ref.what
    lo, hi = ref.bpp.min(), ref.bpp.max()
    if math.isnan(q_at):
        side = "below" if m["bpp"] < lo else "above"
        lines.append(f"    at {m['bpp']:.4f} bpp: {side} {title}'s range ({lo:.3f}..{hi:.3f} bpp, quality "
                     f"{min(ref.qualities)}..{max(ref.qualities)})")
    else:
        lines.append(f"    at {m['bpp']:.4f} bpp {title} reaches {q_at:.2f} dB {what}: ours is {q - q_at:+.2f} dB")
    if math.isnan(r_at):
        side = "below" if q < ref.quality.min() else "above"
        lines.append(f"    for {q:.2f} dB {what}: {side} {title}'s range ({ref.quality.min():.2f}.."
                     f"{ref.quality.max():.2f} dB)")
    else:
        saving = (m["bpp"] / r_at - 1) * 100
        lines.append(f"    for {q:.2f} dB {what} {title} needs {r_at:.4f} bpp: ours uses {abs(saving):.1f}% "
                     f"{'fewer' if saving < 0 else 'more'} bits")
    return lines, q_at, r_at


def _bd_lines(frame: pd.DataFrame, ref: _Reference, n: int, anchor: str) -> tuple[float | None, float | None, list[str]]:
    """``(BD-rate, BD-quality, lines)`` of our ``n`` points against the anchor; ``None`` and a hint with too few."""
    title, what = ref.title, ref.what
    if n < MIN_POINTS:
        return None, None, [f"  BD-rate vs {title}: needs >= {MIN_POINTS} R-D points of ours (checkpoints at "
                            f"different λ, or a variable-rate model's rates), this is {n}; evaluate several with "
                            f"`lictrain eval CKPT... --anchors {anchor}` (a variable-rate run: `lictrain eval RUN "
                            f"--rates {MIN_POINTS}`) then `lictrain rd`"]
    o = frame[frame.curve == "ours"]
    res = bd_delta(ref.bpp, ref.quality, o.bpp, o[ref.column])
    lines = [f"  BD-rate vs {title} ({what}, pchip): {_pct(res.bd_rate)}, BD-{what} {_f(res.bd_quality, '+.3f', 0)} dB "
             f"over {n} points; the curves share {res.shared_db:.2f} dB and "
             f"{res.shared_bpp[0]:.3g}-{res.shared_bpp[1]:.3g} bpp"]
    lines += [f"  warning: {note}" for note in res.notes]
    return res.bd_rate, res.bd_quality, lines
