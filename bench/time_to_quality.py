"""Time to quality: what a fixed wall-clock budget of training buys, against JPEG and WebP.

Two measurements, both with ``lictrain``'s own ``fit`` and ``--budget-minutes``:

``rd`` (the issue's goal): train one model per λ (0.0018, 0.0067, 0.025, 0.0483) for
``--budget-minutes`` each, encode the held-out test photos (chelsea, coffee: never trained
on) with real ``.lic`` bitstreams from each run's *final* checkpoint, and compare the curve
with JPEG 4:2:0 and WebP (Pillow, quality sweeps) by BD-rate. Writes ``rd.md`` (table and
BD-rates), ``rd.json``, ``rd.png`` (R-D curves) and ``time_to_quality.png`` (test PSNR vs
minutes per λ) under ``--out``.

``levers`` (which recipe learns fastest): train one λ for ``--budget-minutes`` under each
recipe (LR schedule and peak, model, batch size, channels_last) and write ``levers.md`` and
``levers.png`` (test PSNR and loss vs minutes per recipe).

``steps`` (what the speed levers do to a step): median seconds per training step of the
default recipe in fp32, bf16 autocast, channels_last and ``--compile`` (compile time shown
apart), measured in one process. A lever that does the same arithmetic in more seconds per
step has a strictly worse time-to-quality curve, so it needs no training run.

Runs are kept under ``--out``; a finished run is reused, so an interrupted measurement
continues where it stopped. On the 2-core CPU here: ``rd`` with 15 minutes per λ takes about
65 minutes, ``levers`` with 3 minutes per recipe about 3.5 minutes per recipe.

    .venv/bin/python bench/time_to_quality.py rd --budget-minutes 15 --out bench_results/ttq
    .venv/bin/python bench/time_to_quality.py levers --budget-minutes 3 --out bench_results/levers
    .venv/bin/python bench/time_to_quality.py steps --out bench_results/steps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

from lictrain.checkpoint import resolve_checkpoint
from lictrain.config import TrainConfig
from lictrain.data import load_builtin
from lictrain.evaluation.anchors import evaluate_anchor
from lictrain.evaluation.evaluate import evaluate_checkpoints
from lictrain.evaluation.rd import bd_table, plot_rd, rd_frame
from lictrain.figures import legend_outside, limit_to_bulk, readable_ticks
from lictrain.tracking.records import read_metrics
from lictrain.training.advice import read_run, timeline
from lictrain.training.fit import fit

LAMBDAS = (0.0018, 0.0067, 0.025, 0.0483)
ANCHOR_QUALITIES = (2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
#: recipes compared by ``levers``: name -> TrainConfig overrides on top of the defaults
LEVERS: dict[str, dict[str, Any]] = {
    "Adam 1e-4, HPCM's step decay (CompressAI's usual)": {"lr_schedule": "multistep", "lr": 1e-4},
    "warm-up + cosine, peak 1e-3": {"lr_schedule": "cosine", "lr": 1e-3},
    "warm-up + cosine, peak 2e-3 (default)": {"lr_schedule": "cosine", "lr": 2e-3},
    "warm-up + cosine, peak 4e-3": {"lr_schedule": "cosine", "lr": 4e-3},
    "default, batch 4": {"batch_size": 4},
    "default, bmshj2018-hyperprior": {"model": "bmshj2018-hyperprior"},
}

#: the λ of ``levers`` unless --lambdas names one
LEVERS_LAMBDA = 0.0067

log = logging.getLogger("time_to_quality")


def train_once(run_dir: Path, cfg: TrainConfig) -> Path:
    """Train ``cfg`` into ``run_dir`` unless a finished run is already there."""
    record = run_dir / "run.json"
    if record.exists() and json.loads(record.read_text()).get("status") == "finished":
        log.info("reusing finished run %s", run_dir)
        return run_dir
    if run_dir.exists():
        raise SystemExit(f"{run_dir} holds an unfinished run; delete it (or pass another --out) and rerun")
    fit(dataclasses.replace(cfg, save_path=str(run_dir)), show_progress=False)
    return run_dir


def progress_of(run_dir: Path) -> tuple[list[float], list[float], list[float]]:
    """(minutes since the run began, test PSNR, test loss) after each epoch."""
    points = timeline(*read_run(run_dir))
    return [m for m, _ in points], [row["psnr"] for _, row in points], [row["loss"] for _, row in points]


def run_summary(run_dir: Path) -> str:
    """``minutes | epochs | steps | s/step`` of a budgeted run, as table cells."""
    record, rows = read_run(run_dir)
    budget = record.get("budget") or {}
    points = timeline(record, rows)
    epochs = len(points)
    return (f"{points[-1][0] if points else math.nan:.1f} | {epochs} | {epochs * budget.get('steps_per_epoch', 0)} | "
            f"{budget.get('step_seconds', math.nan):.3f}")


def plot_progress(curves: dict[str, Path], out: Path, title: str) -> None:
    """Test PSNR and loss vs minutes, one line per run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    all_psnr, all_loss, runs = [], [], []
    for name, run_dir in curves.items():
        xs, psnr, loss = progress_of(run_dir)
        axes[0].plot(xs, psnr, marker=".", label=name)
        axes[1].plot(xs, loss, marker=".", label=name)
        all_psnr += psnr
        all_loss += loss
        runs += [name] * len(psnr)
    axes[0].set_ylabel("test PSNR (dB, estimated pass)")
    axes[1].set_ylabel("test loss (bpp + λ·255²·MSE)")
    axes[1].set_yscale("log")
    for ax, values in ((axes[0], all_psnr), (axes[1], all_loss)):
        ax.set_xlabel("wall minutes (2-core CPU unless noted)")
        ax.grid(True, alpha=0.3)
        readable_ticks(ax)
        limit_to_bulk(ax, ys=values, groups=runs)  # a diverged recipe must not squash the others
    legend_outside(axes[1])
    fig.suptitle(title)
    fig.savefig(out, dpi=120)


def run_rd(args: argparse.Namespace, base: TrainConfig) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for lmbda in args.lambdas:
        cfg = dataclasses.replace(base, lmbda=lmbda)
        runs[lmbda] = train_once(out / f"lambda-{lmbda:g}", cfg)
        log.info("trained λ=%g", lmbda)

    images = load_builtin("test")
    final = [resolve_checkpoint(run_dir) for run_dir in runs.values()]
    ours = evaluate_checkpoints(final, images, device=base.device, name="lictrain", estimate=False,
                                bitstream_dir=out / "bitstreams")
    anchors = [evaluate_anchor(name, images, ANCHOR_QUALITIES) for name in ("jpeg420", "webp")]
    frame = rd_frame([ours, *anchors])
    table = bd_table([ours, *anchors], "jpeg420", min_overlap=0.0)
    plot_rd(frame, out / "rd.png", bd=table, anchor="jpeg420",
            title=f"{base.model}, {args.budget_minutes:g} min per λ, test photos {', '.join(im.name for im in images)}")
    plot_progress({f"λ={lmbda:g}": run_dir for lmbda, run_dir in runs.items()}, out / "time_to_quality.png",
                  f"{base.model}: test PSNR vs training minutes")

    lines = [f"# Time to quality: {base.model}, {args.budget_minutes:g} min per λ", "",
             f"recipe: peak lr {base.peak_lr:g} ({base.lr_schedule}), "
             f"batch {base.batch_size}x{base.patch_size}², "
             f"precision {base.precision}; real bitstreams of each run's final checkpoint on "
             f"{', '.join(im.name for im in images)}", "",
             "| λ | minutes | epochs | steps | s/step | bpp | PSNR (dB) | MS-SSIM |",
             "|---|---|---|---|---|---|---|---|"]
    for (lmbda, run_dir), point in zip(runs.items(), ours.points):
        lines.append(f"| {lmbda:g} | {run_summary(run_dir)} | {point.mean['bpp']:.4f} | {point.mean['psnr']:.2f} "
                     f"| {point.mean['ms_ssim']:.4f} |")
    lines += ["", "| curve vs JPEG 4:2:0 | BD-rate (PSNR) | BD-PSNR (dB) | overlap | notes |", "|---|---|---|---|---|"]
    for row in table.itertuples():
        lines.append(f"| {row.curve} | {_pct(row.bd_rate_psnr)} | {row.bd_psnr:+.3f} | {row.overlap_psnr:.0%} "
                     f"| {row.notes} |")
    (out / "rd.md").write_text("\n".join(lines) + "\n")
    frame.to_json(out / "rd.json", orient="records", indent=1)
    print("\n".join(lines))
    print(f"\nwrote {out / 'rd.md'}, {out / 'rd.png'}, {out / 'time_to_quality.png'}")


def run_levers(args: argparse.Namespace, base: TrainConfig) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = {k: v for k, v in LEVERS.items() if not args.only or any(s in k for s in args.only)}
    lmbda = args.lambdas[0] if args.lambdas != list(LAMBDAS) else LEVERS_LAMBDA
    runs = {}
    for index, (name, overrides) in enumerate(chosen.items()):
        cfg = dataclasses.replace(base, lmbda=lmbda, **overrides)
        runs[name] = train_once(out / f"lever-{index}", cfg)
    lines = [f"# Levers at λ={lmbda:g}, {args.budget_minutes:g} min each", "",
             "| recipe | minutes | epochs | steps | s/step | test PSNR | test bpp | test loss |",
             "|---|---|---|---|---|---|---|---|"]
    for name, run_dir in runs.items():
        last = read_metrics(run_dir)[-1]
        lines.append(f"| {name} | {run_summary(run_dir)} | {last['psnr']:.2f} | {last['bpp']:.4f} "
                     f"| {last['loss']:.4f} |")
    plot_progress(runs, out / "levers.png", f"levers at λ={lmbda:g}: test PSNR and loss vs minutes")
    (out / "levers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {out / 'levers.md'}, {out / 'levers.png'}")


def run_steps(args: argparse.Namespace, base: TrainConfig) -> None:
    import time

    import torch

    from lictrain.models import get_spec
    from lictrain.training.budget import measure_step_seconds
    from lictrain.training.build import build_loaders, build_parts, resolve_device, seed_everything
    from lictrain.training.distributed import DistInfo

    device = resolve_device(base.device)
    cfg = dataclasses.replace(base, epochs=1, budget_minutes=None, epoch_size=base.batch_size * 12)
    loader, _, _ = build_loaders(cfg, device)
    variants = {"fp32 (default)": {}, "channels_last": {"channels_last": True},
                "bf16 autocast": {"precision": "bf16"}, "compile g_a/g_s": {"compile": True}}
    lines = [f"# Step time of {cfg.model}, {cfg.batch_size}x{cfg.patch_size}², {device}, "
             f"{torch.get_num_threads()} threads", "",
             "| lever | s/step | x fp32 | first steps (s) |", "|---|---|---|---|"]
    reference = None
    for name, overrides in variants.items():
        if args.only and not any(o in name for o in args.only):
            continue
        seed_everything(0)
        variant = dataclasses.replace(cfg, **overrides)
        try:
            parts = build_parts(variant, device, DistInfo(), get_spec(cfg.model).alignment)
        except Exception as exc:  # a lever this machine cannot run is a row, not a crash
            lines.append(f"| {name} | unavailable: {exc} | | |")
            continue
        loader.set_epoch(0)
        batches = iter(loader)
        started = time.perf_counter()
        for _ in range(2):  # compile (if any) happens here
            parts.strategy.step(next(batches).to(device))
        first = time.perf_counter() - started
        seconds = measure_step_seconds(parts.strategy.step, batches, device)
        reference = reference or seconds
        lines.append(f"| {name} | {seconds:.3f} | {seconds / reference:.2f} | {first:.1f} |")
        print(lines[-1], flush=True)
    (Path(args.out)).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "steps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:+.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("rd", "levers", "steps"))
    parser.add_argument("--budget-minutes", type=float, default=15.0)
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--out", default="bench_results/time_to_quality")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="*", help="levers: run only recipes whose name contains one of these")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="TrainConfig overrides for every run, e.g. lr=1e-3 model=mbt2018-mean")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = TrainConfig(budget_minutes=args.budget_minutes, device=args.device, wandb_mode="disabled", final_eval=False)
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"--set {item}: no TrainConfig field {key!r}")
        current = getattr(base, key)
        text = value.lower() if value in ("True", "False") else value
        parsed: Any = value if isinstance(current, str) else json.loads(text)
        base = dataclasses.replace(base, **{key: parsed})
    {"rd": run_rd, "levers": run_levers, "steps": run_steps}[args.what](args, base)


if __name__ == "__main__":
    main()
