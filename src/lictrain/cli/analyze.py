"""``lictrain analyze``: a results folder -> a Markdown or HTML report with every table and figure.

Example::

    lictrain analyze outputs/hparam_search                    # -> outputs/hparam_search/analysis/report.md
    lictrain analyze runs/ --metric bpp --lambda 0.0035 --format html --out report/

Reads lictrain runs (``run.json``), W&B offline runs and synced W&B runs at any depth, offline.
A missing or empty folder is a one-line error (exit 2); an unreadable run file or a run without
the asked metric is a warning naming it, and the rest is still analysed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from lictrain.cli.common import add_flag

__all__ = ["add_parser", "run"]

HELP = "analyse a sweep's runs: recommendations, heatmaps, RD/BD-rate, Pareto front, report"

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("analyze", help=HELP, description=HELP + ". Reads run.json, W&B offline and "
                              "synced runs below RESULTS_DIR, without a network.")
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="folder holding the runs (e.g. a sweep's --out)")
    add_flag(p, "metric", default=None,
             help="metric to rank and fit (psnr, ms_ssim, loss, bpp, ...); default: what the runs optimised (an "
                  "Optuna study's objective; ms_ssim for MS-SSIM-trained runs; else psnr)")
    add_flag(p, "lambda", dest="lambda_value", type=float, default=None, metavar="X",
             help="recommendations, heatmap and importance at this λ only (default: every λ; RD curves, "
                  "comparisons and the Pareto front always use every λ)")
    add_flag(p, "format", dest="format", choices=("md", "html"), default="md", help="report format (default md)")
    add_flag(p, "out", default=None, metavar="DIR", help="report folder (default RESULTS_DIR/analysis)")
    add_flag(p, "top_k", type=int, default=5, help="recommendations per table (default 5)")
    add_flag(p, "force", action="store_true", help="replace an existing report in the output folder")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--maximize", dest="maximize", action="store_true", default=None,
                           help="higher metric is better (default for psnr, ms_ssim)")
    direction.add_argument("--minimize", dest="maximize", action="store_false",
                           help="lower metric is better (default for loss, bpp, mse)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from lictrain.analysis.analyzer import MAXIMIZE, HyperparameterAnalyzer
    from lictrain.errors import ConfigError

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    results = Path(args.results_dir).expanduser()
    out = Path(args.out).expanduser() if args.out else results / "analysis"
    from lictrain.cli.common import check_output

    check_output(out / f"report.{args.format}", named=args.out is not None, force=args.force, flag="--out")
    analyzer = HyperparameterAnalyzer(results, output_dir=out)
    df = analyzer.load_results()
    log.info("read %d run(s) from %s (%s)", len(df), results,
             ", ".join(f"{n} {s}" for s, n in df["state"].value_counts().items()))
    if args.metric is None:
        from lictrain.analysis.objective import optimised_metric

        args.metric, why = optimised_metric(results, df)
        log.info("metric: %s (%s; --metric chooses another)", args.metric, why)
    maximize = MAXIMIZE.get(args.metric, True) if args.maximize is None else args.maximize
    path = analyzer.report(out, fmt=args.format, metric=args.metric, lambda_value=args.lambda_value,
                           maximize=maximize, top_k=args.top_k)
    try:
        best = analyzer.recommend_parameters(top_k=1, lambda_value=args.lambda_value, metric=args.metric,
                                             maximize=maximize)
    except Exception:  # the report already says why there is no recommendation
        best = None
    if best is not None and len(best):
        row = best.iloc[0]
        log.info("best %s: %.4g (%s)", args.metric, row[args.metric],
                 ", ".join(f"{k}={row[k]:g}" for k in ("lambda", "gamma", "w_lr") if isinstance(row[k], float)
                           and row[k] == row[k]) + f"; run {row['name']}")
    print(f"wrote {path}")
    return 0
