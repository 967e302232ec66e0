"""Balanced vs standard training: same model, seed and budget, several λ, real bitstreams.

For each λ, trains the model twice with ``lictrain``'s own ``fit`` (standard Adam, then
``--use_balanced``), evaluates both final checkpoints with real ``.lic`` bitstreams on the
test photos, and prints both R-D curves and the BD-rate of balanced against standard
(bjontegaard, pchip). Negative BD-rate = balanced needs fewer bits for the same PSNR.

The default is a CPU-sized smoke of the comparison (minutes, far from converged, so the
BD-rate mostly measures noise); raise ``--epochs``/``--epoch-size`` or use a GPU
(``--device cuda``) for a meaningful number (the paper reports about -2% at convergence).

    .venv/bin/python bench/balanced_vs_standard.py [--model hpcm-tiny] [--epochs 4] [--device auto]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from lictrain.config import TrainConfig
from lictrain.data import load_builtin
from lictrain.evaluation.evaluate import evaluate_checkpoints
from lictrain.evaluation.rd import bd_delta
from lictrain.training.fit import fit

LAMBDAS = (0.0018, 0.0067, 0.025, 0.0483)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hpcm-tiny")
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--epoch-size", type=int, default=64)
    parser.add_argument("--balanced-update", default="next-batch", choices=("same-batch", "next-batch"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    images = load_builtin("test")
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("standard", "balanced"):
            checkpoints = []
            for lmbda in args.lambdas:
                run_dir = Path(tmp) / f"{method}-{lmbda}"
                cfg = TrainConfig(model=args.model, lmbda=lmbda, epochs=args.epochs, epoch_size=args.epoch_size,
                                  seed=args.seed, device=args.device, save_path=str(run_dir), wandb_mode="disabled",
                                  use_balanced=method == "balanced", balanced_update=args.balanced_update)
                fit(cfg, show_progress=False)
                checkpoints.append(run_dir)
                print(f"trained {method:8s} λ={lmbda}")
            curves[method] = evaluate_checkpoints(checkpoints, images, device=args.device, name=method, estimate=False)

    print(f"\n{args.model}, {args.epochs} epochs x {args.epoch_size} crops per λ, seed {args.seed}, "
          f"real bitstreams on {', '.join(im.name for im in images)}")
    print(f"{'λ':>8s} | {'standard bpp':>12s} {'PSNR':>7s} | {'balanced bpp':>12s} {'PSNR':>7s}")
    rows = {m: [p.mean for p in curves[m].points] for m in curves}
    for lmbda, s, b in zip(args.lambdas, rows["standard"], rows["balanced"]):
        print(f"{lmbda:8.4f} | {s['bpp']:12.4f} {s['psnr']:7.2f} | {b['bpp']:12.4f} {b['psnr']:7.2f}")
    result = bd_delta([r["bpp"] for r in rows["standard"]], [r["psnr"] for r in rows["standard"]],
                      [r["bpp"] for r in rows["balanced"]], [r["psnr"] for r in rows["balanced"]])
    print(f"BD-rate of balanced vs standard (PSNR): {result.bd_rate:+.2f}%   BD-PSNR: {result.bd_quality:+.3f} dB")
    for note in result.notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
