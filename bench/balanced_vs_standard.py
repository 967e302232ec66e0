"""Does ``--use_balanced`` beat standard training here, and by how much? A number with its uncertainty.

For every seed and λ, trains the same model three ways at **equal wall-clock**: standard Adam
on ``λ·255²·MSE + bpp``, balanced R-D with ``--balanced-update next-batch`` (no extra forward)
and with the reference ``same-batch`` update. Equal wall-clock is made exact and immune to a
shared machine's load: the seconds per step of the three are measured side by side
(interleaved, same process, same threads) before any run, and each variant gets
``steps = standard steps x t_standard / t_variant``. Everything else is the toolkit's default
short-budget recipe (hpcm-tiny, 8 crops of 128 px, warm-up + cosine LR), the model and patch
size that learn the most per minute on this CPU (docs/time_to_quality.md, levers).

Each run's final checkpoint is evaluated with real ``.lic`` bitstreams on the built-in test
photos (chelsea, coffee: never trained on). Per seed, the BD-rate of each balanced variant
against standard over the λ points (bjontegaard, pchip; PSNR); then the mean over seeds with a
95% t-interval. Negative = balanced needs fewer bits for the same PSNR. Also writes the R-D
plot and the loss-balance curves (the task weights over training, from ``--log-every`` rows).

Runs and evaluations are kept under ``--work``: an interrupted measurement continues (and a
finished one only re-draws). On the 2-core CPU here, the defaults (4 λ x 3 seeds x 3 variants
plus standard at 2 lower λ, 2.5 min each, 2 runs at a time with one thread each) take about 80
minutes. ``--finetune-from WORK`` starts every run from the standard run of the same λ and seed
(the second half of a longer run). ``--device cuda`` on a lent GPU: raise ``--minutes``.

    .venv/bin/python bench/balanced_vs_standard.py [--minutes 2.5] [--seeds 0 1 2] [--jobs 2]
        [--out docs/balanced_vs_standard] [--work /tmp/lictrain-bvs] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from lictrain.config import TrainConfig

LAMBDAS = (0.0035, 0.0067, 0.013, 0.025)
VARIANTS: dict[str, dict[str, Any]] = {
    "standard": {},
    "next-batch": {"use_balanced": True, "balanced_update": "next-batch"},
    "same-batch": {"use_balanced": True, "balanced_update": "same-batch"},
}
EPOCHS = 4
CURVE_POINTS = 40  # --log-every rows per run


def base_config(args: argparse.Namespace) -> TrainConfig:
    """The default short-budget recipe (its peak LR too: a run given --epochs would default to 1e-4)."""
    from lictrain.models import get_spec

    return TrainConfig(model=args.model, patch_size=args.patch_size, batch_size=args.batch_size, device=args.device,
                       lr=get_spec(args.model).short_budget_lr, wandb_mode="disabled", final_eval=False, keep_best=1,
                       keep_last_n=1)


def measure_step_seconds(args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per step of each variant, interleaved in this process with ``--threads`` threads."""
    from lictrain.models import get_spec
    from lictrain.training.build import build_parts, resolve_device, seed_everything
    from lictrain.training.distributed import DistInfo

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    alignment = get_spec(args.model).alignment
    steps = {}
    for name, overrides in VARIANTS.items():
        seed_everything(0)
        cfg = replace(base_config(args), epochs=1, **overrides).validate()
        steps[name] = build_parts(cfg, device, DistInfo(), alignment).strategy.step
    batch = torch.rand(args.batch_size, 3, args.patch_size, args.patch_size, device=device)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_ in range(3 + args.timing_rounds):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_ >= 3:  # the first rounds warm up allocators and kernels
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def run_spec(args: argparse.Namespace, variant: str, lmbda: float, seed: int, steps: int) -> dict[str, Any]:
    per_epoch = max(1, round(steps / EPOCHS))
    config = {**vars(base_config(args)), **VARIANTS[variant], "lmbda": lmbda, "seed": seed, "epochs": EPOCHS,
              "epoch_size": per_epoch * args.batch_size, "log_every": max(1, per_epoch * EPOCHS // CURVE_POINTS)}
    if args.finetune_from:  # the second half of a longer run: every variant starts from standard's weights
        from lictrain.checkpoint import resolve_checkpoint

        config["pretrained"] = str(resolve_checkpoint(Path(args.finetune_from) / f"standard-l{lmbda:g}-s{seed}"))
    return {"variant": variant, "lmbda": lmbda, "seed": seed, "steps": per_epoch * EPOCHS,
            "run_dir": str(Path(args.work) / f"{variant}-l{lmbda:g}-s{seed}"), "threads": args.threads,
            "config": config}


def train_and_evaluate(spec: dict[str, Any]) -> dict[str, Any]:
    """One run (reused when already finished) and its real-bitstream evaluation (reused too)."""
    torch.set_num_threads(spec["threads"])
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from lictrain.checkpoint import resolve_checkpoint
    from lictrain.data import load_builtin
    from lictrain.evaluation.evaluate import evaluate_checkpoints
    from lictrain.tracking.records import read_metrics
    from lictrain.training.fit import fit

    run_dir = Path(spec["run_dir"])
    result_file = run_dir / "bench_result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    started = time.perf_counter()
    status = None
    if (run_dir / "run.json").exists():
        status = json.loads((run_dir / "run.json").read_text()).get("status")
    if status != "finished":
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        cfg = TrainConfig.from_dict({**spec["config"], "save_path": str(run_dir)})
        fit(cfg, show_progress=False)
    train_seconds = time.perf_counter() - started
    curve = evaluate_checkpoints([resolve_checkpoint(run_dir)], load_builtin("test"), device=spec["config"]["device"],
                                 name=spec["variant"], estimate=False)
    mean = curve.points[0].mean
    steps = read_metrics(run_dir, steps=True)
    result = {**{k: spec[k] for k in ("variant", "lmbda", "seed", "steps")}, "bpp": mean["bpp"], "psnr": mean["psnr"],
              "ms_ssim": mean["ms_ssim"], "train_seconds": train_seconds,
              "test_psnr_crops": read_metrics(run_dir)[-1]["psnr"],
              "weights": [[row["step"], row.get("weight/distortion")] for row in steps if "weight/distortion" in row]}
    result_file.write_text(json.dumps(result))
    return result


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (nan half-width for one value)."""
    from scipy import stats

    values = [float(v) for v in values if math.isfinite(v)]  # a degenerate curve pair gives no BD-rate
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def summarise(results: list[dict[str, Any]], args: argparse.Namespace, step_seconds: dict[str, float]) -> dict[str, Any]:
    from lictrain.evaluation.rd import bd_delta

    def curve(variant: str, seed: int) -> tuple[list[float], list[float]]:
        rows = sorted((r for r in results if r["variant"] == variant and r["seed"] == seed), key=lambda r: r["lmbda"])
        return [r["bpp"] for r in rows], [r["psnr"] for r in rows]

    lambdas = sorted({r["lmbda"] for r in results})

    seeds = sorted({r["seed"] for r in results})
    bd: dict[str, Any] = {}
    bd_notes: dict[str, list[list[str]]] = {}
    for variant in VARIANTS:
        if variant == "standard" or not any(r["variant"] == variant for r in results):
            continue
        per_seed = {}
        for seed in seeds:
            ref, test = curve("standard", seed), curve(variant, seed)
            if len(test[0]) == len(args.lambdas) and len(ref[0]) >= len(args.lambdas):
                # the standard curve may hold extra λ (--standard-extra-lambdas) that reach the balanced rates
                per_seed[seed] = bd_delta(ref[0], ref[1], test[0], test[1])
        bd_notes.setdefault(variant, []).extend(list(r.notes) for r in per_seed.values())
        rates = [r.bd_rate for r in per_seed.values()]
        psnrs = [r.bd_quality for r in per_seed.values()]
        mean, half = t_interval(rates) if rates else (math.nan, math.nan)
        qmean, qhalf = t_interval(psnrs) if psnrs else (math.nan, math.nan)
        bd[variant] = {"per_seed_bd_rate": {str(s): r.bd_rate for s, r in per_seed.items()},
                       "per_seed_bd_psnr": {str(s): r.bd_quality for s, r in per_seed.items()},
                       "bd_rate_mean": mean, "bd_rate_ci95": half, "bd_psnr_mean": qmean, "bd_psnr_ci95": qhalf}
    table = []
    for lmbda in lambdas:
        row: dict[str, Any] = {"lambda": lmbda}
        for variant in VARIANTS:
            points = [r for r in results if r["variant"] == variant and r["lmbda"] == lmbda]
            if points:
                row[variant] = {"bpp": statistics.fmean(p["bpp"] for p in points),
                                "psnr": statistics.fmean(p["psnr"] for p in points),
                                "psnr_sd": statistics.stdev([p["psnr"] for p in points]) if len(points) > 1 else 0.0,
                                "steps": points[0]["steps"], "n": len(points)}
        table.append(row)
    return {"model": args.model, "patch_size": args.patch_size, "batch_size": args.batch_size, "minutes": args.minutes,
            "threads": args.threads, "device": args.device, "seeds": seeds, "lambdas": args.lambdas,
            "standard_lambdas": sorted({r["lmbda"] for r in results if r["variant"] == "standard"}),
            "bd_notes": {v: [n for seed_notes in bd_notes.get(v, []) for n in seed_notes] for v in bd_notes},
            "step_seconds": step_seconds, "bd_vs_standard": bd, "table": table}


def write_report(summary: dict[str, Any], results: list[dict[str, Any]], out: Path) -> str:
    lines = [f"# Balanced vs standard at equal wall-clock ({summary['model']}, {summary['minutes']:g} min of standard "
             f"steps per run, {len(summary['seeds'])} seeds)", "",
             "Seconds per step measured side by side: " + ", ".join(
                 f"{k} {v:.3f} s ({v / summary['step_seconds']['standard']:.2f}x)" for k, v in summary["step_seconds"].items()),
             "", "| λ | variant | steps | bpp (mean) | PSNR (mean ± sd over seeds) |", "|---|---|---|---|---|"]
    for row in summary["table"]:
        for variant in VARIANTS:
            if variant in row:
                v = row[variant]
                lines.append(f"| {row['lambda']:g} | {variant} | {v['steps']} | {v['bpp']:.4f} | "
                             f"{v['psnr']:.2f} ± {v['psnr_sd']:.2f} |")
    lines += ["", "| balanced variant | BD-rate vs standard (mean, 95% CI over seeds) | per seed | BD-PSNR |",
              "|---|---|---|---|"]
    for variant, bd in summary["bd_vs_standard"].items():
        seeds = ", ".join(f"{v:+.2f}%" for v in bd["per_seed_bd_rate"].values())
        lines.append(f"| {variant} | **{bd['bd_rate_mean']:+.2f}% ± {bd['bd_rate_ci95']:.2f}** | {seeds} | "
                     f"{bd['bd_psnr_mean']:+.3f} ± {bd['bd_psnr_ci95']:.3f} dB |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    plot(summary, results, out)
    return text


def plot(summary: dict[str, Any], results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lictrain.figures import legend_outside, limit_to_bulk, readable_ticks

    colours = {"standard": "tab:gray", "next-batch": "tab:blue", "same-batch": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7.6, 4.6), constrained_layout=True)
    xs, ys, groups = [], [], []
    for variant in VARIANTS:
        pts = [r for r in results if r["variant"] == variant]
        if not pts:
            continue
        ax.scatter([p["bpp"] for p in pts], [p["psnr"] for p in pts], s=10, alpha=0.35, color=colours[variant])
        lambdas = sorted({p["lmbda"] for p in pts})
        medians = [(statistics.median(p["bpp"] for p in pts if p["lmbda"] == lam),
                    statistics.median(p["psnr"] for p in pts if p["lmbda"] == lam)) for lam in lambdas]
        ax.plot(*zip(*medians), "o-", color=colours[variant], label=variant)
        xs += [p["bpp"] for p in pts]
        ys += [p["psnr"] for p in pts]
        groups += [(variant, p["seed"]) for p in pts]
    ax.set_xlabel("bpp (real bitstreams, chelsea + coffee)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{summary['model']}: equal wall-clock; lines: median of {len(summary['seeds'])} seeds per λ, "
                 "dots: each run", fontsize=9)
    ax.grid(alpha=0.3)
    readable_ticks(ax)
    limit_to_bulk(ax, xs, ys, groups=groups)
    legend_outside(ax)
    fig.savefig(out / "rd.png", dpi=130)
    plt.close(fig)

    lambdas = summary["lambdas"]
    fig, axes = plt.subplots(1, len(lambdas), figsize=(3.2 * len(lambdas) + 1.2, 3.2), sharey=True,
                             constrained_layout=True)
    for ax, lmbda in zip(axes, lambdas):
        for variant in ("next-batch", "same-batch"):
            for r in (r for r in results if r["variant"] == variant and r["lmbda"] == lmbda):
                if r["weights"]:
                    steps, weights = zip(*r["weights"])
                    ax.plot([s / r["steps"] for s in steps], weights, color=colours[variant], alpha=0.7,
                            label=variant if r["seed"] == summary["seeds"][0] else None)
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        ax.set_title(f"λ = {lmbda:g}", fontsize=10)
        ax.set_xlabel("fraction of training")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("weight of the distortion task")
    legend_outside(axes[-1], fontsize=8)
    fig.savefig(out / "weights.png", dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hpcm-tiny")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=2.5, help="wall-clock of each run's training steps")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--timing-rounds", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--standard-extra-lambdas", type=float, nargs="*", default=[0.0009, 0.0018],
                        help="standard runs at these λ too, so that standard's curve reaches the lower rates the "
                             "balanced variants land on (a BD-rate needs overlapping curves)")
    parser.add_argument("--finetune-from", metavar="WORK",
                        help="start every run from the standard run of the same λ and seed in this earlier --work "
                             "(the second half of a longer run: does balancing pay once the model is trained?)")
    parser.add_argument("--work", default="/tmp/lictrain-bvs")
    parser.add_argument("--out", default="docs/balanced_vs_standard")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    timing_file = work / "step_seconds.json"
    if timing_file.exists():  # a continued measurement keeps its step counts
        step_seconds = json.loads(timing_file.read_text())
    else:
        step_seconds = measure_step_seconds(args)
        timing_file.write_text(json.dumps(step_seconds))
    print("seconds per step: " + ", ".join(f"{k} {v:.3f}" for k, v in step_seconds.items()), flush=True)
    standard_steps = args.minutes * 60 / step_seconds["standard"]
    specs = [run_spec(args, variant, lmbda, seed, round(standard_steps * step_seconds["standard"] / step_seconds[variant]))
             for seed in args.seeds for lmbda in args.lambdas for variant in args.variants]
    specs += [run_spec(args, "standard", lmbda, seed, round(standard_steps))
              for seed in args.seeds for lmbda in args.standard_extra_lambdas]
    results = []
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_and_evaluate, spec): spec for spec in specs}
        for n, future in enumerate(as_completed(futures), start=1):
            r = future.result()
            results.append(r)
            print(f"[{n}/{len(specs)}] {r['variant']:10s} λ={r['lmbda']:<7g} seed {r['seed']}: {r['steps']} steps, "
                  f"{r['bpp']:.4f} bpp, {r['psnr']:.2f} dB ({r['train_seconds']:.0f} s)", flush=True)
    summary = summarise(results, args, step_seconds)
    (out / "results.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=1))
    print(write_report(summary, results, out))


if __name__ == "__main__":
    main()
