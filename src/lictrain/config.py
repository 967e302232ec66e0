"""TrainConfig: every ``lictrain train`` setting, declared once (see :mod:`lictrain.settings`)."""

from __future__ import annotations

import dataclasses
import math
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lictrain.errors import ConfigError
from lictrain.losses import BALANCED_TASKS, METRICS
from lictrain.models import get_spec
from lictrain.optim.balanced import METHODS as BALANCED_METHODS
from lictrain.optim.balanced import UPDATE_MODES
from lictrain.schedules.gamma_settings import (DEFAULT_GAMMA_DECAY, DEFAULT_STEP_EPOCHS, DEFAULT_THRESHOLD,
                                               DEFAULT_WINDOW_SIZE)
from lictrain.schedules.gamma_settings import STRATEGIES as GAMMA_STRATEGIES
from lictrain.schedules.lr import LR_SCHEDULES, check_length_plan, parse_length_plan
from lictrain.settings import (check_choice, check_device, check_gamma_scales, check_lr_groups, check_seed,
                               check_lambda_set, check_step_epochs, check_unfreeze, config_error_as_type_error, optional,
                               parse_batch_size, parse_bool, parse_floats, parse_names, parse_pair, parse_workers, positive_float,
                               positive_int, real_in, setting, setting_of, whole_at_least)

PRECISIONS = ("fp32", "bf16")
WANDB_MODES = ("offline", "online", "disabled")
#: --best-metric -> (the per-epoch test metric it reads, whether higher is better)
BEST_METRICS: dict[str, tuple[str, bool]] = {
    "loss": ("loss", False), "psnr": ("psnr", True), "bpp": ("bpp", False), "ms-ssim": ("ms_ssim", True),
    "rd": ("rd_gain", True),  # dB above JPEG's curve at the same test bpp (training/selection.py)
}
#: signals that stop a run at the next step boundary with a checkpoint (training/stopping.py)
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGHUP")
#: signals no process can catch
UNCATCHABLE = ("SIGKILL", "SIGSTOP")

#: training minutes of ``lictrain train`` when neither --epochs nor --budget-minutes is given
DEFAULT_BUDGET_MINUTES = 6.0
#: default peak LR of a budgeted run with a warm-up schedule, for the default model: far above
#: CompressAI's/HPCM's 1e-4, which is what pays in minutes (bench/time_to_quality.py levers).
#: Each registered model carries its own (``ModelSpec.short_budget_lr``): bmshj2018-hyperprior
#: diverged at 2e-3.
SHORT_BUDGET_LR = 2e-3
#: default LR of every other run (an --epochs run, or multistep/plateau): CompressAI's and HPCM's
CONVENTIONAL_LR = 1e-4


@dataclass
class TrainConfig:
    """Settings of one training run. Field names are the CLI's ``dest`` names.

    Every field is declared once, with its :class:`~lictrain.settings.Setting` (flags, help,
    parsing, check, whether ``--resume`` may change it, whether a sweep may search it); the
    parser, :meth:`validate`, config files, ``--print-config``, recipes and sweeps read that.
    Help texts may name ``{default}``: the field's default.

    The defaults make ``lictrain train`` with no arguments the short-budget recipe on the
    built-in photos (:data:`DEFAULT_BUDGET_MINUTES` of training, warm-up + cosine LR); HPCM's
    own schedule is ``--epochs 3000 --patch-size 256 --lr-schedule multistep`` (LR 1e-4).

    Length: ``epochs`` alone trains that many epochs; ``budget_minutes`` alone plans the
    number of epochs from a measured step time (:mod:`lictrain.training.budget`); both: the
    budget's plan capped at ``epochs``; neither: a budget of :data:`DEFAULT_BUDGET_MINUTES`.
    ``steps`` trains exactly that many steps (the schedules span ``epochs`` when given, else
    ``lr_plan``'s first length, else ``steps``): what a budgeted run records to be reproduced.
    """

    # recipe
    recipe: str | None = setting(
        None, group="recipe", metavar="NAME", search=False,
        help="start from a published recipe's settings (hpcm, lic-hpcm-balanced, compressai; printed when used); "
             "a config file and flags given explicitly still win")
    # data
    dataset: str | None = setting(
        None, group="data", aliases=("-d",), metavar="DIR|LIST|SHARDS", local=True,
        help="a folder (CompressAI layout DIR/train + DIR/test, or flat: 90/10 split), a file list (.txt, one "
             "image per line), or shards from `lictrain data prepare` (folder or URL); default: built-in photos")
    patch_size: int = setting(
        128, group="data", parse=int, nargs="+", metavar="PX", check=positive_int,
        help="training crop size (default {default}; CompressAI's `H W` accepted when H = W)")
    test_patch_size: int = setting(256, group="data", parse=int, metavar="PX", check=positive_int,
                                   help="test centre-crop size (default {default})")
    batch_size: int | str = setting(
        8, group="data", parse=parse_batch_size, metavar="N|auto", check=lambda n, v: v == "auto" or positive_int(n, v),
        help="default {default}; auto: the largest that fits the GPU's memory (a real step measures it)")
    test_batch_size: int = setting(4, group="data", parse=int, check=positive_int, help="default {default}")
    epoch_size: int | None = setting(
        None, group="data", parse=int, metavar="CROPS", check=optional(positive_int),
        help="cap an epoch at this many crops (all ranks together); default: one pass over every training photo "
             "(the built-in photos: 192 crops)")
    crops_per_image: int = setting(
        1, group="data", parse=int, metavar="K", check=positive_int,
        help="random crops cut from each decoded photo (default {default}; more crops per decode feed a fast GPU)")
    num_workers: int | None = setting(
        None, group="data", aliases=("-n",), parse=parse_workers, metavar="N|auto", resume=True, local=True,
        check=optional(whole_at_least(0, " or auto")),
        help="decoding processes per rank (default auto: 0 for the built-in photos, else up to 4)")
    # model and loss
    model: str = setting("hpcm-tiny", group="model", aliases=("-m",),
                         help="registry name, see `lictrain models` (default {default})")
    quality: int = setting(1, group="model", aliases=("-q",), parse=int, help="picks the network width (default {default})")
    lmbda: float | None = setting(0.0067, group="model", flag="lambda", parse=float, check=optional(positive_float),
                                  help="R-D trade-off λ (default {default})")
    lambdas: list[float] | None = setting(
        None, group="model", parse=parse_floats, metavar="L1,L2,...", search=False, check=optional(check_lambda_set),
        help="train ONE variable-rate model for all these λ (QVRF gains; λ drawn per batch); then compress at any "
             "λ in the range (docs/variable_rate.md)")
    rate_gains: str = setting(
        "learned", group="model", choices=("learned", "fixed"), search=False,
        help="with --lambdas: learn the gains (QVRF) or keep them at √(λ/λ_ref) so the trained rate range "
             "cannot contract (docs/variable_rate.md)")
    metric: str = setting("mse", group="model", choices=METRICS,
                          help="mse (λ·255²·MSE + bpp) or ms-ssim (λ·(1-MS-SSIM) + bpp)")
    # optimisation
    epochs: int | None = setting(
        None, group="optimisation", aliases=("-e",), parse=int, resume=True, check=optional(positive_int),
        help="train this many epochs (with --budget-minutes: at most this many); default: plan from the budget")
    budget_minutes: float | None = setting(
        None, group="optimisation", parse=float, metavar="MIN", check=optional(positive_float),
        help="train for about MIN minutes: the epoch count comes from a measured step time "
             f"(default {DEFAULT_BUDGET_MINUTES:g} when --epochs is not given either)")
    steps: int | None = setting(
        None, group="optimisation", parse=int, metavar="N", check=optional(positive_int),
        help="train exactly N steps (the last epoch may be partial): deterministic, as --epochs; a budgeted "
             "run's run.json 'reproduce' gives the --steps and --lr-plan that repeat it")
    lr_plan: list[list[int]] | None = setting(
        None, group="optimisation", parse=config_error_as_type_error(parse_length_plan, "--lr-plan: "),
        metavar="T0,S1:T1,...", search=False,
        help="with --steps: the LR schedule spans T0 steps, re-planned to T1 at step S1, ... (a budgeted run's "
             "record, from its run.json)")
    lr: float | None = setting(
        None, group="optimisation", aliases=("--learning-rate", "--learning_rate", "-lr"), parse=float,
        check=optional(positive_float),
        help="(peak) learning rate; default for a budgeted run with the cosine/linear schedule: the model's "
             f"short-budget peak ({SHORT_BUDGET_LR:g} for hpcm-tiny, 1e-3 otherwise), else {CONVENTIONAL_LR:g}")
    aux_lr: float = setting(1e-3, group="optimisation", aliases=("--aux-learning-rate", "--aux_learning_rate"),
                            parse=float, check=positive_float, help="EntropyBottleneck quantile LR (default {default})")
    clip_max_norm: float | None = setting(
        1.0, group="optimisation", parse=float,
        check=optional(real_in(0, math.inf, low_open=True, what="positive (or 0 to disable)")),
        help="gradient clipping norm, 0 disables (default {default})")
    lr_schedule: str = setting(
        "cosine", group="optimisation", choices=LR_SCHEDULES,
        help="cosine or linear (per batch, after a warm-up), multistep (HPCM's, scaled to --epochs) or plateau "
             "(default {default})")
    warmup_steps: int | None = setting(
        None, group="optimisation", parse=int, metavar="STEPS", check=optional(whole_at_least(0)),
        help="linear LR warm-up of the cosine/linear schedules (default 5%% of all steps)")
    seed: int = setting(0, group="optimisation", parse=int, check=check_seed, help="default {default}")
    device: str = setting("auto", group="optimisation", resume=True, local=True, check=check_device,
                          help="auto, cpu, cuda or cuda:N (default {default})")
    best_metric: str = setting(
        "loss", group="optimisation", metavar="METRIC", choices=tuple(BEST_METRICS),
        help="what picks the best checkpoints and drives --early-stop: loss (default), psnr, bpp, ms-ssim, or rd "
             "(dB above JPEG at the same bpp on the test crops)")
    best_mode: str = setting("auto", group="optimisation", metavar="MODE", choices=("auto", "min", "max"),
                             help="min, max or auto (default: the metric's own direction)")
    early_stop: int | None = setting(
        None, group="optimisation", parse=int, metavar="PATIENCE", resume=True, check=optional(positive_int),
        help="stop after this many epochs without an improvement of --best-metric (status stopped, best "
             "checkpoint kept, resumable)")
    early_stop_min_delta: float = setting(
        0.0, group="optimisation", parse=float, metavar="DELTA", resume=True, check=real_in(0, math.inf, what=">= 0"),
        help="an improvement must exceed this (in the metric's units; default {default:g})")
    lr_groups: dict[str, float] | None = setting(
        None, group="optimisation", parse=parse_pair("GROUP=LR such as g_a=1e-5"), nargs="+", metavar="GROUP=LR",
        search=False, check=optional(check_lr_groups),
        help="per-module learning rates (fine-tuning), e.g. g_a=1e-5 g_s=1e-5 context=5e-5; the groups of a model: "
             "`lictrain models --groups MODEL`; the rest trains at --lr")
    unfreeze: list[str] | None = setting(
        None, group="optimisation", parse=parse_names, metavar="G1,G2,...", search=False, check=optional(check_unfreeze),
        help="progressive unfreezing: train only G1 first, add the next group every --unfreeze-every epochs; groups "
             "not named train throughout")
    unfreeze_every: int = setting(1, group="optimisation", parse=int, metavar="EPOCHS", check=positive_int,
                                  help="epochs between unfreezing steps (default {default})")
    # speed levers
    precision: str = setting("fp32", group="speed", choices=PRECISIONS,
                             help="fp32 (default) or bf16: bf16 autocast for the transforms, float32 entropy models")
    channels_last: bool = setting(False, group="speed", action="store_true", help="NHWC weights and batches")
    compile: bool = setting(False, group="speed", action="store_true",
                            help="torch.compile the g_a/g_s transforms (slow first steps)")
    # balanced R-D
    use_balanced: bool = setting(False, group="balanced", action="store_true",
                                 help="balance rate and distortion as two tasks")
    balanced_method: str = setting("trajectory", group="balanced", choices=BALANCED_METHODS,
                                   help="trajectory (from scratch, default) or qp (fine-tuning)")
    balanced_update: str = setting(
        "same-batch", group="balanced", choices=UPDATE_MODES,
        help="same-batch (the default: the paper's reference update, one extra no-grad forward) or next-batch (no "
             "extra forward; in docs/balanced.md's short CPU runs it paid more and same-batch collapsed in 1 of 3 "
             "seeds: compare both on your data)")
    balanced_tasks: str = setting("rd", group="balanced", choices=BALANCED_TASKS,
                                  help="rd (2 tasks) or hierarchical (distortion + one rate per coding scale)")
    gamma: float = setting(0.003, group="balanced", parse=float, check=real_in(0, math.inf, what="a finite number >= 0"),
                           help="decay on the weight logits (default {default})")
    w_lr: float = setting(0.025, group="balanced", parse=float, check=positive_float,
                          help="learning rate of the weight logits (default {default})")
    cautious: bool = setting(True, group="balanced", parse=parse_bool, metavar="BOOL",
                             help="cautious Adam masking (default true)")
    cautious_max_scale: float | None = setting(
        10.0, group="balanced", parse=float, metavar="X",
        check=optional(real_in(1, math.inf, what="a number >= 1 (or 0 for uncapped)")),
        help="cap on the cautious rescale 1/mean(mask) (default {default:g}, the reference implementation's; 0: "
             "uncapped, as C-Optim)")
    # gamma schedule
    adaptive_gamma: bool = setting(False, group="gamma_schedule", action="store_true",
                                   help="schedule gamma per epoch (needs --use_balanced)")
    gamma_strategy: str = setting("hpcm", group="gamma_schedule", choices=GAMMA_STRATEGIES,
                                  help=f"one of {', '.join(GAMMA_STRATEGIES)} (default {{default}})")
    gamma_final: float = setting(0.001, group="gamma_schedule", parse=float, check=positive_float,
                                 help="default {default}")
    step_epochs: list[int] = setting(
        factory=lambda: list(DEFAULT_STEP_EPOCHS), group="gamma_schedule", parse=int, nargs="+", search=False,
        check=check_step_epochs, help="epochs of the step strategy's decays (default 1000 2000)")
    gamma_decay: float = setting(DEFAULT_GAMMA_DECAY, group="gamma_schedule", parse=float,
                                 check=real_in(0, 1, low_open=True),
                                 help="decay factor of the step/adaptive strategies (default {default})")
    adaptive_window: int = setting(DEFAULT_WINDOW_SIZE, group="gamma_schedule", parse=int, check=positive_int,
                                   help="epochs of the adaptive strategy's window (default {default})")
    adaptive_threshold: float = setting(
        DEFAULT_THRESHOLD, group="gamma_schedule", parse=float, check=real_in(0, 1, high_open=True),
        help="relative improvement below which gamma is cut (default {default})")
    gamma_scales: dict[str, float] | None = setting(
        None, group="gamma_schedule", flag="gamma_scale", parse=parse_pair("SCALE=GAMMA such as s1=0.008"),
        nargs="+", metavar="SCALE=GAMMA", search=False, check=optional(check_gamma_scales),
        help="per-scale schedules (with --balanced-tasks hierarchical): the initial gamma of a scale's rate task, "
             "e.g. s1=0.008 s3=0.002 (also z, distortion); other tasks use --gamma")
    # run records and checkpoints
    save_path: str | None = setting(None, group="records", aliases=("-o",), metavar="DIR", search=False, local=True,
                                    help="run directory (default ./outputs/<model>-<lambda>-<time>)")
    wandb_mode: str = setting("offline", group="records", resume=True, local=True, choices=WANDB_MODES,
                              help="offline (default, no account), online or disabled")
    wandb_project: str = setting("lictrain", group="records", local=True, help="default {default}")
    log_every: int | None = setting(
        None, group="records", parse=int, metavar="STEPS", resume=True, check=optional(positive_int),
        help="also log train losses, LR, task weights and gamma every STEPS steps (metrics.jsonl and W&B); "
             "default: per epoch only")
    resume: str | None = setting(None, group="records", metavar="DIR_OR_FILE", search=False, local=True,
                                 help="continue a run from its directory or a checkpoint file")
    auto_resume: bool = setting(
        False, group="records", action="store_true", resume=True, search=False,
        help="with --save-path DIR: continue DIR's run if it has a checkpoint, else start it there; one command for "
             "the first start, every requeue and every torchrun restart (docs/cluster.md)")
    stop_signals: list[str] = setting(
        factory=lambda: list(STOP_SIGNALS), group="records",
        parse=config_error_as_type_error(lambda text: signal_names(text), "--stop-signals: "), metavar="SIG,SIG",
        resume=True, search=False, local=True,
        help=f"signals that stop the run after the current step with a checkpoint (default {','.join(STOP_SIGNALS)}); "
             "exit code 75 = stopped, requeue me (130 for SIGINT)")
    pretrained: str | None = setting(None, group="records", metavar="PATH",
                                     help="start from these weights (fine-tuning; optimiser state fresh)")
    keep_last_n: int = setting(3, group="records", parse=int, check=positive_int,
                               help="recent checkpoints kept (default {default})")
    keep_best: int = setting(3, group="records", parse=int, check=whole_at_least(0),
                             help="best checkpoints kept (default {default})")
    best_weights_only: bool = setting(False, group="records", action="store_true",
                                      help="keep best checkpoints as weights only")
    final_eval: bool = setting(True, group="records", flag="no_final_eval", action="store_false", resume=True,
                               local=True, help="skip the closing evaluation (real bitstreams vs JPEG on the test photos)")

    def validate(self) -> "TrainConfig":
        """Check every value; raise :class:`ConfigError` naming the first bad flag and the fix.

        Each field's own check comes from its declaration; then the checks that join settings.
        Also settles the run's length: with none of ``epochs``, ``budget_minutes`` and ``steps``
        set, ``budget_minutes`` becomes :data:`DEFAULT_BUDGET_MINUTES`; and the LR (``peak_lr``).
        """
        if self.epochs is None and self.budget_minutes is None and self.steps is None:
            self.budget_minutes = DEFAULT_BUDGET_MINUTES
        self.stop_signals = signal_names(self.stop_signals)
        if self.lr is None:
            self.lr = self.peak_lr
        for f in dataclasses.fields(self):
            decl, value = setting_of(f), getattr(self, f.name)
            if decl.choices is not None:
                check_choice(f.name, value, decl.choices)
            if decl.check is not None:
                decl.check(f.name, value)
        self._check_steps()
        self._check_joint()
        return self

    def _check_joint(self) -> None:
        """The rules that join two settings."""
        if self.lambdas is not None:
            self.lmbda = None  # one variable-rate model: λ comes from --lambdas per batch
            if self.use_balanced and self.balanced_update == "next-batch":
                raise ConfigError("--lambdas with --use_balanced needs --balanced-update same-batch: next-batch "
                                  "compares the losses of two batches, which a variable-rate run draws at different λ")
        elif self.rate_gains != "learned":
            raise ConfigError("--rate-gains sets how a variable-rate model's gains train; it needs --lambdas")
        if self.lambdas is None and self.lmbda is None:
            raise ConfigError("--lambda must be a positive number (or --lambdas L1,L2,... for one variable-rate model)")
        if self.adaptive_gamma and not self.use_balanced:
            raise ConfigError("--adaptive_gamma schedules the balanced optimiser's gamma; add --use_balanced")
        if self.gamma_scales is not None and not (self.adaptive_gamma and self.balanced_tasks == "hierarchical"):
            raise ConfigError("--gamma-scale sets a schedule per coding scale; it needs --adaptive_gamma and "
                              "--balanced-tasks hierarchical")
        if self.resume and self.pretrained:
            raise ConfigError("--resume continues a run and --pretrained starts a new one from weights; pass only one")

    @property
    def peak_lr(self) -> float:
        """``lr``, else the default: the model's ``short_budget_lr`` (2e-3 for hpcm-tiny, 1e-3 for
        models not measured) for a budgeted run (a budget given, or no ``epochs``) with a
        warm-up schedule, :data:`CONVENTIONAL_LR` for any other."""
        if self.lr is not None:
            return self.lr
        budgeted = self.budget_minutes is not None or self.epochs is None
        if not (budgeted and self.lr_schedule in ("cosine", "linear")):
            return CONVENTIONAL_LR
        try:
            return get_spec(self.model).short_budget_lr
        except ConfigError:  # an unknown --model is reported where the model is built
            return SHORT_BUDGET_LR

    def _check_steps(self) -> None:
        if self.steps is None:
            if self.lr_plan is not None:
                raise ConfigError("--lr-plan replays a budgeted run's LR length: give --steps N too (run.json's "
                                  "'reproduce' has both)")
            return
        if self.budget_minutes is not None:
            raise ConfigError("--steps N trains exactly N steps and --budget-minutes plans the length by the clock: "
                              "pass one of them")
        if self.lr_plan is not None:
            self.lr_plan = check_length_plan(self.lr_plan)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view (for run.json and checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def default_run_dir(self, timestamp: str) -> Path:
        """``./outputs/<model>-<lambda>-<time>``."""
        rate = f"{self.lmbda:g}" if self.lmbda is not None else f"vr{min(self.lambdas or [0]):g}-{max(self.lambdas or [0]):g}"
        return Path("outputs") / f"{self.model}-{rate}-{timestamp}"


def _declared(flag: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if getattr(setting_of(f), flag))


#: settings a resumed run may change; all others come from the checkpoint's config
RESUME_OVERRIDABLE: tuple[str, ...] = _declared("resume")
#: settings a sweep may not search (it sets them per trial, or they are lists or paths)
NOT_SEARCHABLE: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig) if not setting_of(f).search)
#: settings that say where or how a machine runs the job: may differ between a sweep's workers
LOCAL_SETTINGS: tuple[str, ...] = _declared("local")
#: settings that only the balanced optimiser reads (searching one implies --use_balanced)
BALANCED_SETTINGS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(TrainConfig)
    if setting_of(f).group in ("balanced", "gamma_schedule") and setting_of(f).search and f.name != "use_balanced")


def signal_names(names: Any) -> list[str]:
    """``--stop-signals`` as canonical names (``term``, ``SIGTERM`` and ``15`` are SIGTERM).

    Raises:
        ConfigError: an unknown or uncatchable signal.
    """
    if isinstance(names, str):
        names = names.split(",")
    out: list[str] = []
    for raw in names or []:
        text = str(raw).strip().upper()
        try:
            name = signal.Signals(int(text)).name if text.isdigit() else signal.Signals[
                text if text.startswith("SIG") else "SIG" + text].name
        except (KeyError, ValueError):
            raise ConfigError(f"--stop-signals: {raw!r} is not a signal of this system; use names such as "
                              f"{','.join(STOP_SIGNALS)}") from None
        if name in UNCATCHABLE:
            raise ConfigError(f"--stop-signals: {name} cannot be caught by any process; choose among "
                              f"{','.join(STOP_SIGNALS)} (SLURM: sbatch --signal=USR1@120)")
        if name not in out:
            out.append(name)
    return out

