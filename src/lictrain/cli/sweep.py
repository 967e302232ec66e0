"""``lictrain sweep``: grid or Optuna hyperparameter search; every trial is a full training run.

Examples::

    lictrain sweep --grid lambda=0.0018,0.0035,0.0067,0.013 gamma=0.001,0.003,0.006 w_lr=0.01,0.025 \\
        --baseline --epochs 50                                  # 24 balanced runs + 4 standard ones
    lictrain sweep --optuna 40 --grid gamma=0.0005:0.02:log w_lr=0.005:0.1:log --lambda 0.0035
    lictrain sweep --optuna 40 --objective bpp-psnr --grid lambda=0.0018,0.0067,0.013 gamma=0.001:0.01:log \\
        --storage postgresql://user@db/lictrain --study clic-hpcm   # many workers, one study

Every ``lictrain train`` flag works and is fixed for all trials (``--epochs 2 --patch-size 64``
...). Searching a balanced-only setting (``gamma``, ``w_lr``, ...) turns ``--use_balanced`` on
(with a note), since without it those settings do nothing. Rerunning the same command resumes:
finished trials are not rerun. See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lictrain.cli.config_file import add_config_flags
from lictrain.cli.common import add_flag
from lictrain.errors import ConfigError

__all__ = ["add_parser", "run"]

HELP = "hyperparameter sweep: a grid of every combination, or Optuna TPE with median pruning"

log = logging.getLogger(__name__)

DEFAULT_OUT = "outputs/hparam_search"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from lictrain.cli.train import add_train_arguments

    p = subparsers.add_parser(
        "sweep", help=HELP, argument_default=argparse.SUPPRESS,
        description=HELP + ". Each trial trains in OUT/<trial>/ with its run.json, metrics.jsonl and W&B run; "
                           "rerun the same command to resume.")
    add_config_flags(p)
    g = p.add_argument_group("sweep")
    add_flag(g, "grid", nargs="+", action="extend", default=[], metavar="KEY=VALUES",
             help="searched parameters: key=v1,v2,... (a list) or key=low:high[:log] (a range, --optuna only); "
                  "keys are train flags, lambda for λ")
    add_flag(g, "optuna", type=int, default=None, metavar="N",
             help="sample N trials with Optuna's TPE instead of running the whole grid")
    add_flag(g, "objective", choices=("loss", "bpp-psnr"), default="loss",
             help="--optuna: loss (final test R-D loss at a fixed λ, median pruning; default) or bpp-psnr "
                  "(two objectives, no pruning)")
    add_flag(g, "storage", default=None, metavar="URL",
             help="Optuna RDB storage URL, e.g. postgresql://user@host/db (default sqlite:///OUT/study.db)")
    add_flag(g, "study", dest="study", default=None, metavar="NAME", help="Optuna study name (default: OUT's folder name)")
    add_flag(g, "out", default=DEFAULT_OUT, metavar="DIR", help=f"sweep folder (default {DEFAULT_OUT})")
    add_flag(g, "baseline", action="store_true", default=False,
             help="grid: add one standard (non-balanced) run per λ, the BD-rate anchor of lictrain analyze")
    add_flag(g, "seeds", type=int, default=None, metavar="N",
             help="grid: repeat every configuration with N seeds (--seed, --seed+1, ...), so that analyze can say "
                  "whether a ranking is more than seed noise (mean ± 95%% CI)")
    add_flag(g, "no_prune", dest="prune", action="store_false", default=True, help="--optuna: never prune")
    add_flag(g, "prune_warmup", type=int, default=None, metavar="EPOCHS",
             help="--optuna: epochs before a trial may be pruned (default epochs // 5, at least 1)")
    add_flag(g, "heartbeat", type=int, default=60, metavar="SECONDS",
             help="--optuna: a running trial's heartbeat; one silent for twice this is retried (default 60)")
    add_flag(g, "max_retries", type=int, default=3, help="--optuna: retries of a trial whose worker died (default 3)")
    add_flag(g, "sampler_seed", type=int, default=0, help="--optuna: TPE seed (default 0)")
    add_train_arguments(p)
    p.set_defaults(func=run)
    return p


@contextmanager
def _environment(group: str) -> Iterator[None]:
    """W&B groups the trials' runs under the sweep's name; SIGTERM stops like Ctrl-C (resumable)."""
    previous_group = os.environ.get("WANDB_RUN_GROUP")
    os.environ["WANDB_RUN_GROUP"] = group

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if previous_group is None:
            os.environ.pop("WANDB_RUN_GROUP", None)
        else:
            os.environ["WANDB_RUN_GROUP"] = previous_group


def run(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from lictrain.cli.train import config_from_args
    from lictrain.search.grid import balanced_keys, parse_grid, run_grid
    from lictrain.search.study import DEFAULT_SPACE, StudySettings, run_optuna
    from lictrain.search.trial import quiet_training_logs

    for flag, dest in (("--save_path", "save_path"), ("--resume", "resume")):
        if hasattr(args, dest):
            raise ConfigError(f"{flag} is set per trial by the sweep; use --out DIR for the sweep's folder "
                              "(rerun the same sweep command to resume it)")
    if args.optuna is not None and args.optuna < 1:
        raise ConfigError(f"--optuna must be a positive number of trials, got {args.optuna}")
    if args.heartbeat < 1:
        raise ConfigError(f"--heartbeat must be >= 1 second, got {args.heartbeat}")
    if args.max_retries < 0:
        raise ConfigError(f"--max-retries must be >= 0, got {args.max_retries}")
    if args.prune_warmup is not None and args.prune_warmup < 0:
        raise ConfigError(f"--prune-warmup must be >= 0, got {args.prune_warmup}")
    specs = list(args.grid)
    if args.seeds is not None:
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be a positive number of seeds, got {args.seeds}")
        if args.optuna is not None:
            raise ConfigError("--seeds repeats a grid's configurations; for an Optuna study, rerun its best "
                              "configurations as a grid with --seeds N")
        if any(spec.partition("=")[0].strip() == "seed" for spec in specs):
            raise ConfigError("--seeds and --grid seed=... both set the seeds; pass one of them")
        first = int(getattr(args, "seed", 0) or 0)
        specs.append("seed=" + ",".join(str(first + k) for k in range(args.seeds)))
    if args.optuna is None and not specs:
        raise ConfigError("nothing to search: give --grid key=v1,v2 ... (a grid) and/or --optuna N")
    if args.optuna is not None and not specs:
        specs = list(DEFAULT_SPACE)
        log.info("note: no --grid: Optuna searches %s", " ".join(specs))
    if args.optuna is not None and args.baseline:
        raise ConfigError("--baseline adds standard runs to a grid; run them as a separate grid sweep "
                          "(--grid lambda=... into the same --out) for an Optuna study")
    space = parse_grid(specs)
    base = config_from_args(args)
    implied = balanced_keys(space)
    if implied and not base.use_balanced and "use_balanced" not in space:
        log.info("note: %s only affect%s the balanced optimiser: the sweep trains with --use_balanced",
                 ", ".join(implied), "s" if len(implied) == 1 else "")
        base.use_balanced = True
    base.validate()
    out = Path(args.out).expanduser()
    study_name = args.study or out.resolve().name
    verbose = bool(getattr(args, "verbose", False))
    try:
        with _environment(study_name), logging_redirect_tqdm(), quiet_training_logs(verbose):
            if args.optuna is None:
                summary = run_grid(base, space, out, baseline=args.baseline)
            else:
                settings = StudySettings(n_trials=args.optuna, out=out, storage=args.storage, study_name=study_name,
                                         objective=args.objective, prune=args.prune, prune_warmup=args.prune_warmup,
                                         heartbeat=args.heartbeat, max_retries=args.max_retries,
                                         seed=args.sampler_seed)
                summary = run_optuna(base, space, settings)
    except KeyboardInterrupt:  # before a trial's training took over (which saves and returns instead)
        log.warning("sweep interrupted: run the same command again to resume")
        return 130
    log.info("sweep %s: %s", "interrupted" if summary.interrupted else "done", summary.line())
    if summary.best:
        log.info(summary.best)
    if summary.interrupted:
        return 130
    log.info("analyse with: lictrain analyze %s", out)
    ran = summary.finished + summary.failed + summary.stopped
    if ran and summary.failed == ran and not summary.skipped:
        log.error("every trial failed; see the errors above (and each trial's run.json)")
        return 1
    return 0
