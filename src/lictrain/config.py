"""TrainConfig: every ``lictrain train`` setting, its default and its validation, in one place."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lictrain.errors import ConfigError
from lictrain.schedules.lr import LR_SCHEDULES, check_length_plan

GAMMA_STRATEGIES = ("linear", "cosine", "step", "adaptive", "hpcm")
PRECISIONS = ("fp32", "bf16")
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

    The defaults make ``lictrain train`` with no arguments the short-budget recipe on the
    built-in photos (:data:`DEFAULT_BUDGET_MINUTES` of training, warm-up + cosine LR); HPCM's
    own schedule is ``--epochs 3000 --patch-size 256 --lr-schedule multistep`` (LR 1e-4).

    Length: ``epochs`` alone trains that many epochs; ``budget_minutes`` alone plans the
    number of epochs from a measured step time (:mod:`lictrain.training.budget`); both: the
    budget's plan capped at ``epochs``; neither: a budget of :data:`DEFAULT_BUDGET_MINUTES`.
    ``steps`` trains exactly that many steps (the schedules span ``epochs`` when given, else
    ``lr_plan``'s first length, else ``steps``): what a budgeted run records to be reproduced.
    """

    recipe: str | None = None  # the --recipe the run started from (recorded; its values are in the fields)
    # data
    dataset: str | None = None
    patch_size: int = 128
    test_patch_size: int = 256
    batch_size: int | str = 8  # or "auto": the largest batch that fits the GPU (training/batch_size.py)
    test_batch_size: int = 4
    epoch_size: int | None = None  # None: one pass over the training photos (built-in photos: 192 crops)
    crops_per_image: int = 1
    num_workers: int | None = None  # None: auto (0 for the built-in photos)
    # model and loss
    model: str = "hpcm-tiny"
    quality: int = 1
    lmbda: float = 0.0067
    metric: str = "mse"
    # optimisation
    epochs: int | None = None
    budget_minutes: float | None = None
    steps: int | None = None  # train exactly this many steps (the last epoch may be partial)
    lr_plan: list[list[int]] | None = None  # [[0, T0], [S1, T1], ...]: the LR's length, re-planned at S1 (a budget's replay)
    lr: float | None = None
    aux_lr: float = 1e-3
    clip_max_norm: float | None = 1.0
    lr_schedule: str = "cosine"
    warmup_steps: int | None = None
    seed: int = 0
    device: str = "auto"
    # speed levers
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    # balanced R-D
    use_balanced: bool = False
    balanced_method: str = "trajectory"
    balanced_update: str = "same-batch"
    balanced_tasks: str = "rd"
    gamma: float = 0.003
    w_lr: float = 0.025
    cautious: bool = True
    cautious_max_scale: float | None = 10.0  # cap on the cautious rescale 1/mean(mask); None: uncapped
    # gamma schedule
    adaptive_gamma: bool = False
    gamma_strategy: str = "hpcm"
    gamma_final: float = 0.001
    step_epochs: list[int] = field(default_factory=lambda: [1000, 2000])
    gamma_decay: float = 0.5
    adaptive_window: int = 50
    adaptive_threshold: float = 0.01
    gamma_scales: dict[str, float] | None = None
    # run records and checkpoints
    save_path: str | None = None
    wandb_mode: str = "offline"
    wandb_project: str = "lictrain"
    resume: str | None = None
    auto_resume: bool = False  # continue --save-path's run if it has a checkpoint, else start it there
    stop_signals: list[str] = field(default_factory=lambda: list(STOP_SIGNALS))
    pretrained: str | None = None
    keep_last_n: int = 3
    keep_best: int = 3
    best_weights_only: bool = False
    final_eval: bool = True
    best_metric: str = "loss"  # what ranks the best checkpoints and drives --early-stop (training/selection.py)
    best_mode: str = "auto"  # min | max | auto (the metric's own direction)
    early_stop: int | None = None  # patience in epochs without an improvement of the best metric
    early_stop_min_delta: float = 0.0
    log_every: int | None = None  # train steps between step-level rows in metrics.jsonl and W&B
    # fine-tuning controls (training/param_groups.py)
    lr_groups: dict[str, float] | None = None  # module group -> LR (others: --lr)
    unfreeze: list[str] | None = None  # module groups, unfrozen one more every --unfreeze-every epochs
    unfreeze_every: int = 1

    def validate(self) -> "TrainConfig":
        """Check every value; raise :class:`ConfigError` naming the first bad flag and the fix.

        Also settles the run's length: with neither ``epochs`` nor ``budget_minutes`` set,
        ``budget_minutes`` becomes :data:`DEFAULT_BUDGET_MINUTES`.
        """
        if self.epochs is None and self.budget_minutes is None and self.steps is None:
            self.budget_minutes = DEFAULT_BUDGET_MINUTES
        self._check_steps()
        if self.epochs is not None:
            _positive_int(self, "epochs")
        if self.budget_minutes is not None:
            _positive_float(self, "budget_minutes")
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int) or self.warmup_steps < 0):
            raise ConfigError(f"--warmup-steps must be a whole number >= 0, got {self.warmup_steps}")
        if self.batch_size != "auto":
            _positive_int(self, "batch_size")
        _positive_int(self, "patch_size", "test_patch_size", "test_batch_size",
                      "crops_per_image", "keep_last_n", "adaptive_window", "unfreeze_every")
        for name in ("early_stop", "log_every"):
            if getattr(self, name) is not None:
                _positive_int(self, name)
        if not (isinstance(self.early_stop_min_delta, (int, float)) and math.isfinite(self.early_stop_min_delta)
                and self.early_stop_min_delta >= 0):
            raise ConfigError(f"--early-stop-min-delta must be a number >= 0, got {self.early_stop_min_delta}")
        self.stop_signals = signal_names(self.stop_signals)
        _choice(self, "best_metric", tuple(BEST_METRICS))
        _choice(self, "best_mode", ("auto", "min", "max"))
        if self.lr_groups is not None:
            bad = {k: v for k, v in self.lr_groups.items()
                   if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)}
            if bad or not self.lr_groups:
                raise ConfigError(f"--lr-groups takes GROUP=LR pairs with LR >= 0, such as g_a=1e-5 context=5e-5; "
                                  f"got {self.lr_groups}")
        if self.unfreeze is not None and (not self.unfreeze or len(set(self.unfreeze)) != len(self.unfreeze)):
            raise ConfigError(f"--unfreeze takes distinct module groups in unfreezing order, such as "
                              f"entropy,context,g_s,g_a; got {self.unfreeze}")
        if self.epoch_size is not None:
            _positive_int(self, "epoch_size")
        _positive_float(self, "lmbda", "aux_lr", "w_lr", "gamma_final")
        _choice(self, "lr_schedule", LR_SCHEDULES)
        if self.lr is None:
            self.lr = self.peak_lr
        _positive_float(self, "lr")
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise ConfigError(f"--num-workers must be auto or a whole number >= 0, got {self.num_workers}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be a whole number from 0 to 2**63-1, got {self.seed}")
        if self.keep_best < 0:
            raise ConfigError(f"--keep-best must be >= 0, got {self.keep_best}")
        if self.cautious_max_scale is not None and not (
                isinstance(self.cautious_max_scale, (int, float)) and math.isfinite(self.cautious_max_scale)
                and self.cautious_max_scale >= 1):
            raise ConfigError(f"--cautious-max-scale must be a number >= 1 (or 0 for uncapped), got "
                              f"{self.cautious_max_scale}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ConfigError(f"--gamma must be a finite number >= 0, got {self.gamma}")
        if self.clip_max_norm is not None and not self.clip_max_norm > 0:
            raise ConfigError(f"--clip_max_norm must be positive (or 0 to disable), got {self.clip_max_norm}")
        if not 0 < self.gamma_decay <= 1:
            raise ConfigError(f"--gamma-decay must be in (0, 1], got {self.gamma_decay}")
        if not 0 <= self.adaptive_threshold < 1:
            raise ConfigError(f"--adaptive_threshold must be in [0, 1), got {self.adaptive_threshold}")
        _choice(self, "metric", ("mse", "ms-ssim"))
        _choice(self, "precision", PRECISIONS)
        _choice(self, "device", ("auto", "cpu", "cuda"))
        _choice(self, "wandb_mode", ("offline", "online", "disabled"))
        _choice(self, "balanced_method", ("trajectory", "qp"))
        _choice(self, "balanced_update", ("same-batch", "next-batch"))
        _choice(self, "balanced_tasks", ("rd", "hierarchical"))
        _choice(self, "gamma_strategy", GAMMA_STRATEGIES)
        if self.adaptive_gamma and not self.use_balanced:
            raise ConfigError("--adaptive_gamma schedules the balanced optimiser's gamma; add --use_balanced")
        if self.gamma_scales is not None:
            if not (self.adaptive_gamma and self.balanced_tasks == "hierarchical"):
                raise ConfigError("--gamma-scale sets a schedule per coding scale; it needs --adaptive_gamma and "
                                  "--balanced-tasks hierarchical")
            bad = {k: v for k, v in self.gamma_scales.items() if not (math.isfinite(v) and v > 0)}
            if bad:
                raise ConfigError(f"--gamma-scale values must be positive numbers, got {bad}")
        if any(e < 0 for e in self.step_epochs):
            raise ConfigError(f"--step_epochs must be non-negative epochs, got {self.step_epochs}")
        if self.resume and self.pretrained:
            raise ConfigError("--resume continues a run and --pretrained starts a new one from weights; pass only one")
        return self

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
        from lictrain.models import get_spec

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
        _positive_int(self, "steps")
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
        return Path("outputs") / f"{self.model}-{self.lmbda:g}-{timestamp}"


def signal_names(names: Any) -> list[str]:
    """``--stop-signals`` as canonical names (``term``, ``SIGTERM`` and ``15`` are SIGTERM).

    Raises:
        ConfigError: an unknown or uncatchable signal.
    """
    import signal

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


def _flag(name: str) -> str:
    return "--lambda" if name == "lmbda" else "--" + name.replace("_", "-")


def _positive_int(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{_flag(name)} must be a positive integer, got {value}")


def _positive_float(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{_flag(name)} must be a positive number, got {value}")


def _choice(cfg: TrainConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise ConfigError(f"{_flag(name)} must be one of {', '.join(choices)}; got {value!r}")
