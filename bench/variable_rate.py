"""Variable rate vs one model per λ, at equal total CPU time (issue 25, measure 1).

One variable-rate run (``--lambdas``) of ``4·T`` minutes against four fixed-rate runs of ``T``
minutes at the same four λ, from scratch, hpcm-tiny by default. Both are evaluated with real
``.lic`` bitstreams on the held-out built-in photos (chelsea, coffee: never trained on): the
variable-rate model at its four trained λ (one checkpoint), each fixed model at its own; JPEG
4:2:0 and WebP (Pillow quality sweeps) beside them; BD-rate with ``bjontegaard`` (pchip) and the
shared-range rule of ``lictrain rd``. Also checks the variable-rate model's real bytes against
its estimate at each λ and that bpp rises over 64 log-spaced λ.

Writes ``variable_rate.md`` (tables), ``variable_rate.json`` and ``variable_rate.png`` (R-D) under
``--out``; finished runs are reused, so an interrupted measurement continues.

    .venv/bin/python bench/variable_rate.py --minutes 10 --out bench_results/variable_rate   # the issue's T
    .venv/bin/python bench/variable_rate.py --minutes 2 --out bench_results/vr_quick         # ~17 min here
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from pathlib import Path

import torch

from lictrain.analysis.run_data import missing
from lictrain.checkpoint import resolve_checkpoint
from lictrain.config import TrainConfig
from lictrain.data import load_builtin
from lictrain.evaluation.anchors import evaluate_anchor
from lictrain.evaluation.evaluate import estimated_bpp, evaluate_checkpoints
from lictrain.evaluation.loading import load_codec
from lictrain.evaluation.rd import bd_table, plot_rd, rd_frame
from lictrain.evaluation.codec import encode_image
from lictrain.models.gains import rate_gains
from time_to_quality import ANCHOR_QUALITIES, LAMBDAS, train_once  # the setting, its reuse rule


log = logging.getLogger("variable_rate")


def rate_checks(checkpoint: Path, device: str) -> tuple[list[str], bool]:
    """Real bytes vs estimate at each trained λ (lines of a table), and whether the estimated bpp
    rises strictly over 64 log-spaced λ."""
    model, info = load_codec(checkpoint, device)
    gains = rate_gains(model)
    assert gains is not None
    images = load_builtin("test")
    lines = []
    for k in range(gains.count):
        lmbda = gains.lambda_of(k)
        real = sum(len(encode_image(model, info, im.pixels, verify=False, lmbda=lmbda, name_checkpoint=False).data)
                   * 8 / (im.height * im.width) for im in images) / len(images)
        est = sum(estimated_bpp(model, info, im.pixels) for im in images) / len(images)
        lines.append(f"| {lmbda:g} | {float(gains.gain(k)):.3f} | {real:.4f} | {est:.4f} | {100 * (real / est - 1):+.2f}% |")
    low, high = gains.range
    rates = []
    for k in range(64):
        lmbda = math.exp(math.log(low) + (math.log(high) - math.log(low)) * k / 63)
        encode_image(model, info, images[0].pixels, verify=False, lmbda=lmbda, name_checkpoint=False)  # sets the gain
        rates.append(estimated_bpp(model, info, images[0].pixels))
    return lines, all(b > a for a, b in zip(rates, rates[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="T: minutes per fixed-rate run (VR gets 4·T)")
    parser.add_argument("--steps", type=int, help="instead of minutes: N steps per fixed-rate run, 4·N for the "
                        "variable-rate one (equal compute, immune to other load on the machine)")
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--model", default="hpcm-tiny")
    parser.add_argument("--out", default="bench_results/variable_rate")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = TrainConfig(model=args.model, device=args.device, wandb_mode="disabled", final_eval=False)
    k = len(args.lambdas)
    length = {"steps": args.steps} if args.steps else {"budget_minutes": args.minutes}
    total_length = {"steps": args.steps * k} if args.steps else {"budget_minutes": args.minutes * k}
    fixed = {lm: train_once(out / f"fixed-{lm:g}", dataclasses.replace(base, lmbda=lm, **length))
             for lm in args.lambdas}
    vr = train_once(out / "variable", dataclasses.replace(base, lambdas=list(args.lambdas), **total_length))
    unit, each = ("steps", args.steps) if args.steps else ("min", args.minutes)

    images = load_builtin("test")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"
    separate = evaluate_checkpoints([resolve_checkpoint(d) for d in fixed.values()], images, device=device,
                                    name=f"{k} fixed ({each:g} {unit} each)")
    variable = evaluate_checkpoints([resolve_checkpoint(vr)], images, device=device,
                                    name=f"variable rate ({each * k:g} {unit})")
    anchors = [evaluate_anchor(name, images, ANCHOR_QUALITIES) for name in ("jpeg420", "webp")]
    curves = [variable, separate, *anchors]
    frame = rd_frame(curves)
    lines = [f"# Variable rate vs {k} fixed-rate models: {args.model}, equal compute ({each * k:g} {unit} each side)",
             "",
             f"real bitstreams on {', '.join(im.name for im in images)} (never trained on); λ {args.lambdas}", "",
             "| curve | point | bpp | PSNR (dB) | MS-SSIM |", "|---|---|---|---|---|"]
    for curve in (variable, separate):
        for point in curve.points:
            lines.append(f"| {curve.name} | {point.label} | {point.mean['bpp']:.4f} | {point.mean['psnr']:.2f} | "
                         f"{point.mean['ms_ssim']:.4f} |")
    for reference in (separate.name, "jpeg420", "webp"):
        table = bd_table(curves, reference)
        lines += ["", f"BD-rate against {reference} (negative: fewer bits for the same PSNR)", "",
                  "| curve | BD-rate (PSNR) | BD-PSNR (dB) | shared dB | shared bpp | notes |", "|---|---|---|---|---|---|"]
        for row in table.itertuples():
            if row.curve == reference:
                continue
            lines.append(f"| {row.curve} | {_pct(row.bd_rate_psnr)} | {row.bd_psnr:+.3f} | "
                         f"{row.shared_psnr_db:.2f} | {row.shared_bpp} | {row.notes} |")
    checks, monotone = rate_checks(resolve_checkpoint(vr), device)
    lines += ["", "Variable-rate model: real bytes vs the likelihood estimate (whole .lic file)", "",
              "| λ | gain | real bpp | estimated bpp | real/est |", "|---|---|---|---|---|", *checks, "",
              f"estimated bpp strictly rising over 64 log-spaced λ: {'yes' if monotone else 'NO'}"]
    plot_rd(frame, out / "variable_rate.png", bd=bd_table(curves, "jpeg420"), anchor="jpeg420",
            title=f"{args.model}: one variable-rate model vs {k} fixed models, equal "
                  f"{'steps' if args.steps else 'CPU time'}")
    (out / "variable_rate.md").write_text("\n".join(lines) + "\n")
    frame.to_json(out / "variable_rate.json", orient="records", indent=1)
    print("\n".join(lines))
    print(f"\nwrote {out / 'variable_rate.md'} and {out / 'variable_rate.png'}")


def _pct(value: float | None) -> str:
    return "-" if missing(value) else f"{value:+.2f}%"


if __name__ == "__main__":
    main()
