"""Variable rate with and without the balanced optimiser, at equal time (issue 25, measure 3).

Two variable-rate runs (``--lambdas``) of ``--minutes`` each from scratch, hpcm-tiny by default:
the standard loss ``R + λ·D``, and ``--use_balanced`` (FAMO weights on the rate and distortion
tasks, ``same-batch`` update: both losses of one batch at one λ; ``--gamma``). Both are coded with
real ``.lic`` bitstreams on the held-out built-in photos (chelsea, coffee) at the trained λ;
BD-rate with ``bjontegaard`` (pchip) and the shared-range rule of ``lictrain rd``, against each
other and against JPEG 4:2:0. Finished runs are reused. Writes ``balanced.md``/``balanced.json``
and ``balanced.png`` under ``--out``. Run it alone on the machine (or pinned to one core):
equal time is only equal when both runs see the same machine.

    .venv/bin/python bench/variable_rate_balanced.py --minutes 10 --out bench_results/vr_balanced
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import torch

from lictrain.analysis.run_data import missing
from lictrain.checkpoint import resolve_checkpoint
from lictrain.config import TrainConfig
from lictrain.data import load_builtin
from lictrain.evaluation.anchors import evaluate_anchor
from lictrain.evaluation.evaluate import evaluate_checkpoints
from lictrain.evaluation.rd import bd_table, plot_rd, rd_frame
from lictrain.training.advice import read_run
from time_to_quality import ANCHOR_QUALITIES, LAMBDAS, train_once  # the setting, its reuse rule



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of each run")
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--gamma", type=float, default=0.03, help="the balanced run's gamma (issue 23's study: "
                        "0.03 beat 0.003 in every pair)")
    parser.add_argument("--model", default="hpcm-tiny")
    parser.add_argument("--out", default="bench_results/vr_balanced")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = TrainConfig(model=args.model, device=args.device, wandb_mode="disabled", final_eval=False,
                       lambdas=list(args.lambdas), budget_minutes=args.minutes)
    runs = {"standard": train_once(out / "standard", base),
            f"balanced γ={args.gamma:g}": train_once(out / "balanced", dataclasses.replace(
                base, use_balanced=True, gamma=args.gamma))}
    images = load_builtin("test")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"
    curves = []
    for name, run in runs.items():
        steps = (read_run(run)[0].get("summary") or {}).get("trained_steps")
        curves.append(evaluate_checkpoints([resolve_checkpoint(run)], images, device=device,
                                           name=f"{name} ({args.minutes:g} min, {steps} steps)"))
    anchor = evaluate_anchor("jpeg420", images, ANCHOR_QUALITIES)
    frame = rd_frame([*curves, anchor])
    lines = [f"# Variable rate ({args.model}, λ {args.lambdas}): standard vs balanced, {args.minutes:g} min each", "",
             "real bitstreams on chelsea and coffee (never trained on)", "",
             "| curve | point | bpp | PSNR (dB) | MS-SSIM |", "|---|---|---|---|---|"]
    for curve in curves:
        lines += [f"| {curve.name} | {p.label} | {p.mean['bpp']:.4f} | {p.mean['psnr']:.2f} | {p.mean['ms_ssim']:.4f} |"
                  for p in curve.points]
    for reference in (curves[0].name, "jpeg420"):
        lines += ["", f"BD-rate against {reference} (negative: fewer bits for the same PSNR)", "",
                  "| curve | BD-rate (PSNR) | BD-PSNR (dB) | notes |", "|---|---|---|---|"]
        for row in bd_table([*curves, anchor], reference).itertuples():
            if row.curve != reference:
                bd = "refused" if missing(row.bd_rate_psnr) else f"{row.bd_rate_psnr:+.2f}%"
                lines.append(f"| {row.curve} | {bd} | {row.bd_psnr:+.3f} | {row.notes} |")
    plot_rd(frame, out / "balanced.png", bd=bd_table([*curves, anchor], "jpeg420"), anchor="jpeg420",
            title=f"{args.model} variable rate: standard vs balanced, equal time")
    (out / "balanced.md").write_text("\n".join(lines) + "\n")
    frame.to_json(out / "balanced.json", orient="records", indent=1)
    print("\n".join(lines))



if __name__ == "__main__":
    main()
