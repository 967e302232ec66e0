"""``lictrain train``: flags (the guide's underscore spellings and dashed ones) -> TrainConfig -> fit."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from lictrain.cli.common import add_flag, parse_bool
from lictrain.config import CONVENTIONAL_LR, DEFAULT_BUDGET_MINUTES, GAMMA_STRATEGIES, SHORT_BUDGET_LR, TrainConfig

log = logging.getLogger(__name__)

#: flags a resumed run may change; all others come from the checkpoint's config
RESUME_OVERRIDABLE = ("epochs", "device", "num_workers", "wandb_mode", "final_eval", "early_stop",
                      "early_stop_min_delta", "log_every", "auto_resume", "stop_signals")

_D = TrainConfig()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a learned image codec", argument_default=argparse.SUPPRESS,
        description="Train a learned image codec on R + λ·D. With no flags: a short CPU run of "
                    f"{_D.model} on the built-in photos.",
    )
    add_train_arguments(p)
    p.set_defaults(func=run)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Every TrainConfig flag, in both spellings (also used by ``lictrain sweep``).

    Create ``p`` with ``argument_default=argparse.SUPPRESS`` so that only the flags a user
    gave appear in the namespace; :func:`config_from_args` fills in the rest.
    """
    g = p.add_argument_group("recipe")
    add_flag(g, "recipe", metavar="NAME",
             help="start from a published recipe's settings (hpcm, lic-hpcm-balanced, compressai; printed when "
                  "used); flags given explicitly still win")

    g = p.add_argument_group("data")
    add_flag(g, "dataset", "-d", metavar="DIR|LIST|SHARDS",
             help="a folder (CompressAI layout DIR/train + DIR/test, or flat: 90/10 split), a file list (.txt, one "
                  "image per line), or shards from `lictrain data prepare` (folder or URL); default: built-in photos")
    add_flag(g, "patch_size", type=int, nargs="+", metavar="PX",
             help=f"training crop size (default {_D.patch_size}; CompressAI's `H W` accepted when H = W)")
    add_flag(g, "test_patch_size", type=int, metavar="PX", help=f"test centre-crop size (default {_D.test_patch_size})")
    add_flag(g, "batch_size", type=_batch_size, metavar="N|auto",
             help=f"default {_D.batch_size}; auto: the largest that fits the GPU's memory (a real step measures it)")
    add_flag(g, "test_batch_size", type=int, help=f"default {_D.test_batch_size}")
    add_flag(g, "epoch_size", type=int, metavar="CROPS",
             help="cap an epoch at this many crops (all ranks together); default: one pass over every training "
                  "photo (the built-in photos: 192 crops)")
    add_flag(g, "crops_per_image", type=int, metavar="K",
             help="random crops cut from each decoded photo (default 1; more crops per decode feed a fast GPU)")
    add_flag(g, "num_workers", "-n", type=_workers, metavar="N|auto",
             help="decoding processes per rank (default auto: 0 for the built-in photos, else up to 4)")

    g = p.add_argument_group("model and loss")
    add_flag(g, "model", "-m", help=f"registry name, see `lictrain models` (default {_D.model})")
    add_flag(g, "quality", "-q", type=int, help=f"picks the network width (default {_D.quality})")
    add_flag(g, "lambda", dest="lmbda", type=float, help=f"R-D trade-off λ (default {_D.lmbda})")
    add_flag(g, "metric", help="mse (λ·255²·MSE + bpp) or ms-ssim (λ·(1-MS-SSIM) + bpp)")

    g = p.add_argument_group("optimisation")
    add_flag(g, "epochs", "-e", type=int,
             help="train this many epochs (with --budget-minutes: at most this many); default: plan from the budget")
    add_flag(g, "budget_minutes", type=float, metavar="MIN",
             help="train for about MIN minutes: the epoch count comes from a measured step time "
                  f"(default {DEFAULT_BUDGET_MINUTES:g} when --epochs is not given either)")
    add_flag(g, "steps", type=int, metavar="N",
             help="train exactly N steps (the last epoch may be partial): deterministic, as --epochs; a budgeted "
                  "run's run.json 'reproduce' gives the --steps and --lr-plan that repeat it")
    add_flag(g, "lr_plan", type=_length_plan, metavar="T0,S1:T1,...",
             help="with --steps: the LR schedule spans T0 steps, re-planned to T1 at step S1, ... (a budgeted "
                  "run's record, from its run.json)")
    add_flag(g, "lr", "--learning-rate", "--learning_rate", "-lr", type=float,
             help=f"(peak) learning rate; default for a budgeted run with the cosine/linear schedule: the "
                  f"model's short-budget peak ({SHORT_BUDGET_LR:g} for hpcm-tiny, 1e-3 otherwise), else "
                  f"{CONVENTIONAL_LR:g}")
    add_flag(g, "aux_lr", "--aux-learning-rate", "--aux_learning_rate", type=float,
             help=f"EntropyBottleneck quantile LR (default {_D.aux_lr})")
    add_flag(g, "clip_max_norm", type=float, help="gradient clipping norm, 0 disables (default 1.0)")
    add_flag(g, "lr_schedule", help=f"cosine or linear (per batch, after a warm-up), multistep (HPCM's, scaled to "
                                    f"--epochs) or plateau (default {_D.lr_schedule})")
    add_flag(g, "warmup_steps", type=int, metavar="STEPS",
             help="linear LR warm-up of the cosine/linear schedules (default 5%% of all steps)")
    add_flag(g, "seed", type=int, help=f"default {_D.seed}")
    add_flag(g, "device", help="auto, cpu or cuda (default auto)")
    add_flag(g, "best_metric", metavar="METRIC",
             help="what picks the best checkpoints and drives --early-stop: loss (default), psnr, bpp, ms-ssim, or "
                  "rd (dB above JPEG at the same bpp on the test crops)")
    add_flag(g, "best_mode", metavar="MODE", help="min, max or auto (default: the metric's own direction)")
    add_flag(g, "early_stop", type=int, metavar="PATIENCE",
             help="stop after this many epochs without an improvement of --best-metric (status stopped, best "
                  "checkpoint kept, resumable)")
    add_flag(g, "early_stop_min_delta", type=float, metavar="DELTA",
             help="an improvement must exceed this (in the metric's units; default 0)")
    add_flag(g, "lr_groups", nargs="+", type=_group_lr, metavar="GROUP=LR",
             help="per-module learning rates (fine-tuning), e.g. g_a=1e-5 g_s=1e-5 context=5e-5; the groups of "
                  "a model: `lictrain models --groups MODEL`; the rest trains at --lr")
    add_flag(g, "unfreeze", type=_group_list, metavar="G1,G2,...",
             help="progressive unfreezing: train only G1 first, add the next group every --unfreeze-every epochs; "
                  "groups not named train throughout")
    add_flag(g, "unfreeze_every", type=int, metavar="EPOCHS", help="epochs between unfreezing steps (default 1)")
    g.add_argument("--cuda", dest="device", action="store_const", const="cuda", help="= --device cuda (CompressAI)")

    g = p.add_argument_group("speed")
    add_flag(g, "precision", help="fp32 (default) or bf16: bf16 autocast for the transforms, float32 entropy models")
    add_flag(g, "channels_last", action="store_true", help="NHWC weights and batches")
    add_flag(g, "compile", action="store_true", help="torch.compile the g_a/g_s transforms (slow first steps)")

    g = p.add_argument_group("balanced R-D (Zhang et al., CVPR 2025)")
    add_flag(g, "use_balanced", action="store_true", help="balance rate and distortion as two tasks")
    add_flag(g, "balanced_method", help="trajectory (from scratch, default) or qp (fine-tuning)")
    add_flag(g, "balanced_update",
             help="same-batch (the default: the paper's reference update, one extra no-grad forward) "
                  "or next-batch (no extra forward; in docs/balanced.md's short CPU runs it paid more and "
                  "same-batch collapsed in 1 of 3 seeds: compare both on your data)")
    add_flag(g, "balanced_tasks", help="rd (2 tasks) or hierarchical (distortion + one rate per coding scale)")
    add_flag(g, "gamma", type=float, help=f"decay on the weight logits (default {_D.gamma})")
    add_flag(g, "w_lr", type=float, help=f"learning rate of the weight logits (default {_D.w_lr})")
    add_flag(g, "cautious", type=parse_bool, metavar="BOOL", help="cautious Adam masking (default true)")
    add_flag(g, "cautious_max_scale", type=float, metavar="X",
             help=f"cap on the cautious rescale 1/mean(mask) (default {_D.cautious_max_scale:g}, the reference "
                  "implementation's; 0: uncapped, as C-Optim)")

    g = p.add_argument_group("adaptive gamma")
    add_flag(g, "adaptive_gamma", action="store_true", help="schedule gamma per epoch (needs --use_balanced)")
    add_flag(g, "gamma_strategy", help=f"one of {', '.join(GAMMA_STRATEGIES)} (default {_D.gamma_strategy})")
    add_flag(g, "gamma_final", type=float, help=f"default {_D.gamma_final}")
    add_flag(g, "step_epochs", type=int, nargs="+", help="epochs of the step strategy's decays (default 1000 2000)")
    add_flag(g, "gamma_decay", type=float, help="decay factor of the step/adaptive strategies (default 0.5)")
    add_flag(g, "adaptive_window", type=int, help="epochs of the adaptive strategy's window (default 50)")
    add_flag(g, "adaptive_threshold", type=float, help="relative improvement below which gamma is cut (default 0.01)")
    add_flag(g, "gamma_scale", dest="gamma_scales", nargs="+", type=_scale_gamma, metavar="SCALE=GAMMA",
             help="per-scale schedules (with --balanced-tasks hierarchical): the initial gamma of a scale's rate "
                  "task, e.g. s1=0.008 s3=0.002 (also z, distortion); other tasks use --gamma")

    g = p.add_argument_group("run records and checkpoints")
    add_flag(g, "save_path", "-o", metavar="DIR", help="run directory (default ./outputs/<model>-<lambda>-<time>)")
    add_flag(g, "wandb_mode", help="offline (default, no account), online or disabled")
    add_flag(g, "wandb_project", help=f"default {_D.wandb_project}")
    add_flag(g, "log_every", type=int, metavar="STEPS",
             help="also log train losses, LR, task weights and gamma every STEPS steps (metrics.jsonl and W&B); "
                  "default: per epoch only")
    add_flag(g, "resume", metavar="DIR_OR_FILE", help="continue a run from its directory or a checkpoint file")
    add_flag(g, "auto_resume", action="store_true",
             help="with --save-path DIR: continue DIR's run if it has a checkpoint, else start it there; one command "
                  "for the first start, every requeue and every torchrun restart (docs/cluster.md)")
    add_flag(g, "stop_signals", type=_signal_list, metavar="SIG,SIG",
             help=f"signals that stop the run after the current step with a checkpoint (default "
                  f"{','.join(_D.stop_signals)}); exit code 75 = stopped, requeue me (130 for SIGINT)")
    g.add_argument("--checkpoint", dest="compressai_checkpoint", metavar="FILE",
                   help="CompressAI's flag: --resume for a lictrain checkpoint, --pretrained for any other weights")
    g.add_argument("--save", dest="compressai_save", action="store_true",
                   help="CompressAI's flag; lictrain always saves checkpoints (see --save_path)")
    add_flag(g, "pretrained", metavar="PATH", help="start from these weights (fine-tuning; optimiser state fresh)")
    add_flag(g, "keep_last_n", type=int, help=f"recent checkpoints kept (default {_D.keep_last_n})")
    add_flag(g, "keep_best", type=int, help=f"best checkpoints kept (default {_D.keep_best})")
    add_flag(g, "best_weights_only", action="store_true", help="keep best checkpoints as weights only")
    add_flag(g, "no_final_eval", dest="final_eval", action="store_false",
             help="skip the closing evaluation (real bitstreams vs JPEG on the test photos)")


def _signal_list(text: str) -> list[str]:
    from lictrain.config import signal_names
    from lictrain.errors import ConfigError

    try:
        return signal_names(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--stop-signals: ")) from None


def _length_plan(text: str) -> list[list[int]]:
    from lictrain.errors import ConfigError
    from lictrain.schedules.lr import parse_length_plan

    try:
        return parse_length_plan(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--lr-plan: ")) from None


def _workers(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 or auto, got {text!r}")
    return value


def _batch_size(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None


def _group_lr(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GROUP=LR such as g_a=1e-5, got {text!r}") from None


def _group_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected module groups separated by commas, got {text!r}")
    return names


def _scale_gamma(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SCALE=GAMMA such as s1=0.008, got {text!r}") from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Explicit flags over defaults; on ``--resume``, over the checkpoint's saved config."""
    given: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    _compressai_habits(args, given)
    if given.get("cautious_max_scale") == 0:
        given["cautious_max_scale"] = None
    recipe_name = given.get("recipe")
    if recipe_name and "resume" not in given:
        from lictrain.recipes import get_recipe

        recipe = get_recipe(recipe_name)
        log.info("%s", recipe.describe(overridden=set(given) & set(recipe.values)))
        for note in recipe.notes:
            log.info("recipe %s: %s", recipe.name, note)
        given = {**recipe.values, **given}
    elif recipe_name:
        log.warning("--resume keeps the run's own settings; ignoring --recipe %s", recipe_name)
        given.pop("recipe")
    if "gamma_scales" in given:
        given["gamma_scales"] = dict(given["gamma_scales"])
    if "lr_groups" in given:
        given["lr_groups"] = dict(given["lr_groups"])
    if given.get("clip_max_norm") == 0:
        given["clip_max_norm"] = None
    if given.get("auto_resume") and "resume" not in given:
        _auto_resume(given)
    if "resume" in given:
        from lictrain.checkpoint import load_latest_valid
        from lictrain.checkpoint.weights import check_resumable

        file, ckpt = load_latest_valid(given["resume"])
        check_resumable(ckpt, file)
        saved = ckpt.get("config") or {}
        same = RESUME_OVERRIDABLE + ("resume", "save_path")  # --auto-resume's own --save-path is the run's folder
        ignored = sorted(k for k in given if k not in same and given[k] != saved.get(k))
        if ignored:
            log.warning("--resume keeps the run's own settings; ignoring: %s", ", ".join(ignored))
        base = {k: v for k, v in saved.items() if k not in ("resume", "pretrained")}
        given = {**base, **{k: v for k, v in given.items() if k in RESUME_OVERRIDABLE}, "resume": given["resume"]}
    if given.get("pretrained") and "model" not in given:
        given.update(_pretrained_architecture(given["pretrained"], "quality" not in given))
    return TrainConfig.from_dict(given).validate()


def _auto_resume(given: dict[str, Any]) -> None:
    """``--auto-resume``: resume ``--save-path``'s run when it has a checkpoint (else start there)."""
    from lictrain.training.rundir import auto_resume_action

    action = auto_resume_action(given.get("save_path"), given.get("epochs"))
    if action.action == "resume":
        log.info("--auto-resume: continuing the run in %s", action.run_dir)
        given["resume"] = str(action.run_dir)


def _compressai_habits(args: argparse.Namespace, given: dict[str, Any]) -> None:
    """CompressAI ``examples/train.py`` spellings: ``--patch-size H W``, ``--checkpoint``, ``--save``."""
    from lictrain.errors import ConfigError

    if "patch_size" in given and isinstance(given["patch_size"], list):
        sizes = given["patch_size"]
        if len(sizes) > 2 or len(set(sizes)) != 1:
            raise ConfigError(f"--patch-size {' '.join(map(str, sizes))}: lictrain trains square crops; "
                              f"pass one size (--patch-size {sizes[0]}) or two equal ones")
        given["patch_size"] = sizes[0]
    checkpoint = getattr(args, "compressai_checkpoint", None)
    if checkpoint:
        if "resume" in given or "pretrained" in given:
            raise ConfigError("--checkpoint is CompressAI's spelling of --resume/--pretrained; pass only one of them")
        from lictrain.checkpoint import load_checkpoint, resolve_checkpoint

        ckpt = load_checkpoint(resolve_checkpoint(checkpoint))
        resumable = all(k in ckpt for k in ("model_state", "optimizer_state", "epoch"))
        given["resume" if resumable else "pretrained"] = checkpoint
        log.info("--checkpoint %s: %s", checkpoint, "continuing that lictrain run (--resume)" if resumable
                 else "starting from its weights (--pretrained); its optimiser state is not used")
    if getattr(args, "compressai_save", False):
        log.info("--save: lictrain always saves checkpoints (where: --save_path)")


def _pretrained_architecture(path: str, with_quality: bool) -> dict[str, Any]:
    """The model (and quality) of ``--pretrained`` weights that record or imply one, so that
    ``--pretrained official.pth`` alone trains the architecture the weights belong to."""
    from lictrain.checkpoint.weights import load_weights

    weights = load_weights(path)
    if not weights.model:
        return {}
    found: dict[str, Any] = {"model": weights.model}
    if with_quality and weights.quality is not None:
        found["quality"] = weights.quality
    log.info("--pretrained %s holds %s weights: training %s", path, weights.model, weights.model)
    return found


def run(args: argparse.Namespace) -> int:
    from lictrain.training.distributed import shutdown_distributed
    from lictrain.training.fit import fit

    cfg = config_from_args(args)
    try:
        result = fit(cfg)  # stop signals: a checkpoint between two steps, then exit 75 (130 for Ctrl-C)
        cfg = result.config or cfg  # what was trained: the measured batch of --batch-size auto
        from lictrain.tracking.records import run_completed

        done = run_completed(result.status, result.summary) and not result.already_done
        if done and result.stop_signal:
            log.warning("%s arrived as training finished: the closing evaluation is skipped (lictrain eval %s "
                        "runs it)", result.stop_signal, result.run_dir)
            done = False
        if done and int(os.environ.get("RANK", "0")) == 0:
            report = closing_evaluation(cfg, result) if cfg.final_eval else ""
            advice = closing_advice(cfg, result)
            if report:
                (result.run_dir / "final_report.txt").write_text("\n".join(filter(None, (report, advice))) + "\n")
    finally:
        shutdown_distributed()
    return result.exit_code


def closing_advice(cfg: TrainConfig, result: Any) -> str:
    """Say (and return) what a longer budget or a GPU would buy."""
    from lictrain.training.advice import advice_text
    from lictrain.training.build import resolve_device

    text = advice_text(result.run_dir, cfg, resolve_device(cfg.device).type)
    if text:
        log.info("%s", text)
    return text


def closing_evaluation(cfg: TrainConfig, result: Any) -> str:
    """Real bitstreams of the best checkpoint on the test photos, beside JPEG 4:2:0's curve (logged, returned)."""
    from lictrain.checkpoint import resolve_checkpoint
    from lictrain.data import load_test_images
    from lictrain.evaluation.report import final_report
    from lictrain.training.build import resolve_device

    best_loss = result.summary.get("best_loss")
    if not (isinstance(best_loss, (int, float)) and math.isfinite(best_loss)):
        log.warning("closing evaluation skipped: no epoch of this run had a finite test loss (it diverged)")
        return ""
    # fit() records the best checkpoint when the run finishes; without one, the latest
    name = result.summary.get("best_checkpoint")  # relative to the run folder (older runs: a full path)
    best = result.run_dir / Path(name).name if name else resolve_checkpoint(result.run_dir)
    images = load_test_images(cfg.dataset) if cfg.dataset else None  # the test photos alone: no training set decode
    estimated = _estimated_closing_seconds(result.run_dir)
    log.info("closing evaluation of %s (real bitstreams%s; --no-final-eval skips it)", best.name,
             f", about {estimated:.0f} s" if estimated else "")
    started = time.perf_counter()
    report = final_report(best, resolve_device(cfg.device), images, metric=cfg.metric)
    seconds = time.perf_counter() - started
    log.info("%s", report.text)
    log.info("closing evaluation took %.0f s%s", seconds, f" (estimated {estimated:.0f} s)" if estimated else "")
    _note_run(result.run_dir, "closing_evaluation", {"seconds": seconds, "estimated_seconds": estimated or None})
    return report.text


def _estimated_closing_seconds(run_dir: Path) -> float:
    """The budget's estimate of the closing evaluation, scaled to the pace at the run's end (0 without a budget)."""
    import json

    try:
        record = json.loads((run_dir / "run.json").read_text())
        return float(record.get("closing_estimate_seconds") or (record.get("budget") or {}).get("closing_seconds") or 0.0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


def _note_run(run_dir: Path, key: str, value: Any) -> None:
    """Add ``key`` to a finished run's run.json (best effort: the report itself is already out)."""
    import json

    from lictrain.tracking.records import write_json_atomic

    path = run_dir / "run.json"
    try:
        record = json.loads(path.read_text())
        record[key] = value
        write_json_atomic(path, record)
    except (OSError, ValueError) as exc:
        log.warning("could not record %s in %s: %s", key, path, exc)
