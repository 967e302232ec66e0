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

from lictrain.cli.config_file import add_config_flags, settings_yaml
from lictrain.config import RESUME_OVERRIDABLE, TrainConfig
from lictrain.settings import GROUPS, setting_of, spellings

log = logging.getLogger(__name__)


_D = TrainConfig()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a learned image codec", argument_default=argparse.SUPPRESS,
        description="Train a learned image codec on R + λ·D. With no flags: a short CPU run of "
                    f"{_D.model} on the built-in photos.",
    )
    add_config_flags(p, print_config=True)
    add_train_arguments(p)
    p.set_defaults(func=run)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Every TrainConfig setting as flags, in all its spellings, grouped as declared (also used by
    ``lictrain sweep``); then CompressAI's habits (``--cuda``, ``--checkpoint``, ``--save``).

    Create ``p`` with ``argument_default=argparse.SUPPRESS`` so that only the flags a user
    gave appear in the namespace; :func:`config_from_args` fills in the rest.
    """
    groups = {key: p.add_argument_group(title) for key, title in GROUPS}
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        decl = setting_of(f)
        kwargs: dict[str, Any] = {"dest": f.name, "help": _help(decl, getattr(defaults, f.name))}
        if decl.action:
            kwargs["action"] = decl.action
        else:
            kwargs.update({k: v for k, v in (("type", decl.parse), ("nargs", decl.nargs), ("metavar", decl.metavar))
                           if v is not None})
        groups[decl.group].add_argument(*spellings(f.name, decl), **kwargs)
    groups["optimisation"].add_argument("--cuda", dest="device", action="store_const", const="cuda",
                                        help="= --device cuda (CompressAI)")
    records = groups["records"]
    records.add_argument("--checkpoint", dest="compressai_checkpoint", metavar="FILE",
                         help="CompressAI's flag: --resume for a lictrain checkpoint, --pretrained for any other weights")
    records.add_argument("--save", dest="compressai_save", action="store_true",
                         help="CompressAI's flag; lictrain always saves checkpoints (see --save_path)")


def _help(decl: Any, default: Any) -> str:
    """The declared help, its ``{default}`` filled in (a list default as its values)."""
    if "{default" not in decl.help:
        return decl.help
    shown = " ".join(map(str, default)) if isinstance(default, list) else default
    return decl.help.format(default=shown)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Explicit flags over defaults; on ``--resume``, over the checkpoint's saved config."""
    given: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    _compressai_habits(args, given)
    if given.get("lambdas") is not None and given.get("lmbda") is not None:
        from lictrain.errors import ConfigError

        raise ConfigError("pass --lambda (one rate) or --lambdas (one variable-rate model for all of them), not both")
    if given.get("cautious_max_scale") == 0:
        given["cautious_max_scale"] = None
    recipe_name = given.get("recipe")
    if recipe_name and not given.get("resume"):
        from lictrain.recipes import get_recipe

        recipe = get_recipe(recipe_name)
        changed = {k for k in given if k in recipe.values and given[k] != recipe.values[k]}  # a file may repeat it
        log.info("%s", recipe.describe(overridden=changed))
        for note in recipe.notes:
            log.info("recipe %s: %s", recipe.name, note)
        given = {**recipe.values, **given}
    elif recipe_name:
        log.warning("--resume keeps the run's own settings; ignoring --recipe %s", recipe_name)
        given.pop("recipe")
    if given.get("gamma_scales"):
        given["gamma_scales"] = dict(given["gamma_scales"])
    if given.get("lr_groups"):
        given["lr_groups"] = dict(given["lr_groups"])
    if given.get("clip_max_norm") == 0:
        given["clip_max_norm"] = None
    if given.get("auto_resume") and not given.get("resume"):
        _auto_resume(given)
    if given.get("resume"):
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
        if given.get("resume") or given.get("pretrained"):
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
    if getattr(args, "print_config", False):
        print(settings_yaml(cfg), end="")
        return 0
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
