"""Variable rate by fine-tuning a fixed-rate model (QVRF's route) vs separately trained models
(issue 25, measure 2).

For each model: four fixed-rate runs of ``--steps`` steps at the four λ (the separately trained
reference, from scratch), then ``lictrain train --pretrained <the fixed run at --from-lambda>
--lambdas <the four>`` for ``--finetune-steps`` steps (a fraction of what the four cost). Both
are coded with real ``.lic`` bitstreams on the held-out built-in photos (chelsea, coffee);
BD-rate of the fine-tuned curve against the four models with ``bjontegaard`` and the
shared-range rule of ``lictrain rd``; and the rate range each covers (its lowest and highest bpp:
the fine-tuned curve should reach within 5% of the four models' at both ends).

``--fixed-from DIR`` takes the fixed runs of one model from ``DIR/fixed-<λ>`` (e.g. the runs of
``bench/variable_rate.py``) instead of training them. Finished runs are reused: an interrupted
measurement continues. Writes ``finetune.md`` and ``finetune.json`` under ``--out``.

    .venv/bin/python bench/variable_rate_finetune.py --models bmshj2018-hyperprior mbt2018-mean \\
        --steps 400 --finetune-steps 200 --out bench_results/vr_finetune
    .venv/bin/python bench/variable_rate_finetune.py --models hpcm-tiny --fixed-from \\
        bench_results/variable_rate_T10 --finetune-steps 360 --out bench_results/vr_finetune
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
from lictrain.evaluation.evaluate import evaluate_checkpoints
from lictrain.evaluation.rd import bd_table
from lictrain.training.advice import read_run
from time_to_quality import LAMBDAS, train_once  # the setting, its reuse rule


log = logging.getLogger("variable_rate_finetune")


def trained_steps(run_dir: Path) -> int:
    """Steps a finished run trained (its summary's count)."""
    record, _ = read_run(run_dir)
    return int((record.get("summary") or {}).get("trained_steps") or 0)


def measure(model: str, args: argparse.Namespace, out: Path) -> dict:
    """Train (or reuse) the fixed runs and the fine-tuned one of ``model``; code both; compare."""
    base = TrainConfig(model=model, quality=args.quality, device=args.device, wandb_mode="disabled",
                       final_eval=False)
    if args.fixed_from:
        fixed = {lm: Path(args.fixed_from) / f"fixed-{lm:g}" for lm in args.lambdas}
        absent = [str(d) for d in fixed.values() if not (d / "run.json").exists()]
        if absent:
            raise SystemExit(f"--fixed-from: no run in {', '.join(absent)}")
    else:
        fixed = {lm: train_once(out / model / f"fixed-{lm:g}", dataclasses.replace(base, lmbda=lm, steps=args.steps))
                 for lm in args.lambdas}
    source = fixed[min(args.lambdas, key=lambda lm: abs(math.log(lm / args.from_lambda)))]
    tuned = train_once(out / model / "finetuned", dataclasses.replace(
        base, lambdas=list(args.lambdas), steps=args.finetune_steps, pretrained=str(resolve_checkpoint(source)),
        lr=args.finetune_lr))
    images = load_builtin("test")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"
    fixed_steps = sum(trained_steps(d) for d in fixed.values())
    separate = evaluate_checkpoints([resolve_checkpoint(d) for d in fixed.values()], images, device=device,
                                    name=f"{model}: {len(fixed)} fixed ({fixed_steps} steps)")
    variable = evaluate_checkpoints([resolve_checkpoint(tuned)], images, device=device, estimate=True,
                                    name=f"{model}: fine-tuned ({trained_steps(tuned)} steps)")
    row = bd_table([variable, separate], separate.name).set_index("curve").loc[variable.name]
    low = [min(p.mean["bpp"] for p in c.points) for c in (variable, separate)]
    high = [max(p.mean["bpp"] for p in c.points) for c in (variable, separate)]
    return {"model": model, "fixed_steps": fixed_steps, "finetune_steps": trained_steps(tuned),
            "from_lambda": read_run(source)[0]["config"].get("lmbda"),
            "bd_rate": None if missing(row.bd_rate_psnr) else float(row.bd_rate_psnr),
            "bd_psnr": None if missing(row.bd_psnr) else float(row.bd_psnr), "notes": str(row.notes),
            "low_bpp": low, "high_bpp": high,
            "real_vs_estimate": [100 * (p.mean["bpp"] / p.mean["bpp_estimated"] - 1) for p in variable.points],
            "points": {c.name: [(p.label, p.mean["bpp"], p.mean["psnr"]) for p in c.points]
                       for c in (variable, separate)}}


def report(results: list[dict], lambdas: list[float]) -> list[str]:
    """The markdown table of the measurements."""
    lines = ["# Fine-tuning a fixed-rate model into a variable-rate one (QVRF's route)", "",
             f"λ {lambdas}; real bitstreams on chelsea and coffee (never trained on); BD-rate (PSNR) of the "
             "fine-tuned model against the separately trained ones (negative: fewer bits)", "",
             "| model | fixed steps (4 runs) | fine-tune steps (from λ) | BD-rate | BD-PSNR | lowest bpp (tuned / fixed) "
             "| highest bpp (tuned / fixed) | real / estimated bytes (tuned) | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        bd = "refused" if r["bd_rate"] is None else f"{r['bd_rate']:+.2f}%"
        psnr = "-" if r["bd_psnr"] is None else f"{r['bd_psnr']:+.3f} dB"
        (lt, lf), (ht, hf) = r["low_bpp"], r["high_bpp"]
        lines.append(f"| {r['model']} | {r['fixed_steps']} | {r['finetune_steps']} ({r['from_lambda']:g}) | {bd} | "
                     f"{psnr} | {lt:.4f} / {lf:.4f} ({100 * (lt / lf - 1):+.1f}%) | {ht:.4f} / {hf:.4f} "
                     f"({100 * (ht / hf - 1):+.1f}%) | {_span(r.get('real_vs_estimate'))} | {r['notes']} |")
    lines += ["", "| curve | λ | bpp | PSNR (dB) |", "|---|---|---|---|"]
    for r in results:
        for name, points in r["points"].items():
            lines += [f"| {name} | {label} | {bpp:.4f} | {psnr:.2f} |" for label, bpp, psnr in points]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["bmshj2018-hyperprior", "mbt2018-mean", "hpcm-tiny"])
    parser.add_argument("--quality", type=int, default=1, help="CompressAI width (1: N=128, M=192)")
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--steps", type=int, default=400, help="steps of each fixed-rate run")
    parser.add_argument("--finetune-steps", type=int, default=200, help="steps of the fine-tuning run")
    parser.add_argument("--finetune-lr", type=float, default=5e-4, help="its peak LR (warm-up + cosine)")
    parser.add_argument("--from-lambda", type=float, default=max(LAMBDAS),
                        help="fine-tune the fixed run closest to this λ (default: the highest)")
    parser.add_argument("--fixed-from", help="a folder with fixed-<λ> runs of the (one) model, instead of training")
    parser.add_argument("--out", default="bench_results/vr_finetune")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.fixed_from and len(args.models) != 1:
        parser.error("--fixed-from holds the runs of one model: name it alone in --models")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "finetune.json"
    results = {r["model"]: r for r in (json.loads(store.read_text()) if store.exists() else [])}
    for model in args.models:
        results[model] = measure(model, args, out)
        store.write_text(json.dumps(list(results.values()), indent=1))
    lines = report(list(results.values()), args.lambdas)
    (out / "finetune.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _span(values: list[float] | None) -> str:
    """``+0.4..+0.9%``: the range of real-vs-estimate differences over the coded rates."""
    return "-" if not values else f"{min(values):+.2f}..{max(values):+.2f}%"



if __name__ == "__main__":
    main()
