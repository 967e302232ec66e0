"""``--budget-minutes``: turn a wall-clock budget into a number of epochs, from measured times.

Before training, a throwaway copy of the run's model and strategy takes a few real steps on
real batches and one pass over the test split; the epoch count is the budget left after that
calibration divided by the measured time of one epoch (its steps, its test pass and its
checkpoint) times :data:`PLAN_MARGIN`. The run then *is* an ``--epochs N`` run — the LR
and gamma schedules see the planned length from the first step, and a resumed run keeps
it — until, after each epoch, ``fit`` re-plans from the pace it actually keeps (see
:class:`BudgetClock`).
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterable, Iterator

import torch

from lictrain.data.images import NamedImage
from lictrain.evaluation.anchors import evaluate_anchor
from lictrain.evaluation.codec import codec_from_model
from lictrain.evaluation.evaluate import evaluate_codec
from lictrain.evaluation.report import REPORT_QUALITIES
from lictrain.models.gains import rate_gains
from lictrain.training.build import build_parts
from lictrain.training.distributed import DistInfo, gather_objects
from lictrain.training.loop import test_epoch, to_device

log = logging.getLogger(__name__)

#: steps run untimed first (allocator and kernel warm-up), then timed
WARMUP_STEPS = 2
TIMED_STEPS = 5
#: share of the budget after which the step timing stops early (a very busy machine)
CALIBRATION_SHARE = 0.1
#: epochs are planned this much longer than measured: a long run on a shared machine averages
#: slower than a few calibration steps (about 5-10% on the 2-core machine here)
PLAN_MARGIN = 1.08


@dataclass(frozen=True)
class BudgetPlan:
    """The measured times and the epoch count they buy."""

    budget_seconds: float
    calibration_seconds: float
    step_seconds: float
    test_seconds: float
    checkpoint_seconds: float
    steps_per_epoch: int
    epochs: int
    closing_seconds: float = 0.0  # the closing evaluation's estimated cost (after the budget)
    steps: int = 0  # training steps planned (the last epoch may be partial); 0: epochs x steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.steps or self.epochs * self.steps_per_epoch

    @property
    def epoch_seconds(self) -> float:
        return self.steps_per_epoch * self.step_seconds + self.test_seconds + self.checkpoint_seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "epoch_seconds": self.epoch_seconds}

    def describe(self) -> str:
        closing = (f"; then the closing evaluation, about {self.closing_seconds:.0f} s more"
                   if self.closing_seconds else "")
        return (f"budget {self.budget_seconds / 60:.1f} min: {self.step_seconds:.3f} s/step x {self.steps_per_epoch} "
                f"steps + test {self.test_seconds:.1f} s + checkpoint {self.checkpoint_seconds:.2f} s = "
                f"{self.epoch_seconds:.1f} s/epoch (+{PLAN_MARGIN - 1:.0%} margin) -> {self.epochs} epochs "
                f"({self.total_steps} steps{self._partial()}){closing}")

    def _partial(self) -> str:
        last = self.total_steps - (self.epochs - 1) * self.steps_per_epoch
        return f"; the last epoch {last} of {self.steps_per_epoch}" if last < self.steps_per_epoch else ""


def plan_steps(available_seconds: float, steps_per_epoch: int, step_seconds: float, epoch_overhead: float,
               margin: float = 1.0, max_epochs: int | None = None) -> int:
    """Training steps that fit ``available_seconds``: whole epochs, then a last partial epoch of
    the steps that still fit before its test pass and checkpoint (``epoch_overhead``); at least 1.

    Every epoch end, a partial last one too, costs ``epoch_overhead``; ``margin`` stretches the
    step and overhead times (a long run averages slower than its calibration).
    """
    step, overhead = step_seconds * margin, epoch_overhead * margin
    epoch = steps_per_epoch * step + overhead
    if epoch <= 0:
        return steps_per_epoch
    full = max(0, math.floor(available_seconds / epoch))
    rest = available_seconds - full * epoch
    partial = math.floor((rest - overhead) / step) if step > 0 else 0
    steps = full * steps_per_epoch + min(max(partial, 0), steps_per_epoch - 1)
    if max_epochs is not None:
        steps = min(steps, max_epochs * steps_per_epoch)
    return max(steps, 1)


def step_times(step: Callable[[torch.Tensor], Any], batches: Iterable[torch.Tensor], device: torch.device,
               max_seconds: float | None = None) -> list[float]:
    """Seconds of each of :data:`WARMUP_STEPS` + up to :data:`TIMED_STEPS` calls of ``step``;
    ``max_seconds`` ends the timing early (after at least one timed step) on a very busy machine."""
    started = time.perf_counter()
    times: list[float] = []
    for batch in itertools.islice(_cycle(batches), WARMUP_STEPS + TIMED_STEPS):
        times.append(measure_seconds(lambda: step(to_device(batch, device)), device))
        if len(times) > WARMUP_STEPS and max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
    return times


def measure_step_seconds(step: Callable[[torch.Tensor], Any], batches: Iterable[torch.Tensor],
                         device: torch.device, max_seconds: float | None = None) -> float:
    """Median seconds of ``step`` over the timed steps of :func:`step_times`: one step caught in a
    burst of other work on a shared machine must not set the plan."""
    return statistics.median(step_times(step, batches, device, max_seconds)[WARMUP_STEPS:])


#: a calibration step this many times slower than the median means other work fights for the cores
STALL_RATIO = 5.0


def warn_if_stalling(times: list[float], device: torch.device) -> None:
    """Say what to do when some calibration steps stall (CPU threads descheduled by other jobs)."""
    timed = times[WARMUP_STEPS:] or times
    median = statistics.median(timed)
    worst = max(times[1:] or times)  # the very first step compiles and allocates: never a stall
    if device.type == "cpu" and median > 0 and worst > STALL_RATIO * median:
        log.warning("a calibration step took %.1f s, %.0fx the median %.2f s: other work competes for the CPU cores "
                    "and this process's threads stall waiting for each other; on a shared machine set "
                    "OMP_WAIT_POLICY=PASSIVE (steady steps, about 1.8x slower on an idle machine here) or fewer "
                    "threads (OMP_NUM_THREADS) (docs/training.md)", worst, worst / median, median)


def _cycle(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """``batches`` over and over (an epoch may hold fewer batches than the calibration needs)."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("the training loader gave no batch to time a step")


def measure_seconds(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of one call of ``fn`` (device work included)."""
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


def serialise_seconds(*states: dict[str, Any]) -> float:
    """Seconds to serialise ``states`` in memory: a checkpoint's cost, less the disk write."""
    started = time.perf_counter()
    torch.save(states, io.BytesIO())
    return time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (no-op on the CPU), so wall clocks measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BudgetClock:
    """Keeps a budgeted run inside its deadline: re-plans the length after each epoch and cuts
    an epoch by steps when the deadline comes first.

    The calibration measures a handful of steps; a shared machine can then run faster or
    slower for minutes. After every epoch the run asks :meth:`replan_steps` how many steps fit
    before the deadline at its recent pace (the slower of the mean epoch so far and the last
    one, so a slowdown is believed at once and a speed-up only on average) and lengthens or
    shortens itself (its LR schedule follows; a gamma schedule, fixed to its planned length,
    only lets it shorten). Within an epoch, :meth:`step_done` says when to stop so that the
    epoch's test pass and checkpoint (``reserve_seconds``, scaled by how much slower the steps
    now run than at calibration) still end by the deadline.
    """

    #: EMA weight of the newest step's duration in the pace estimate
    PACE_SMOOTHING = 0.2
    #: under DDP the ranks agree on a cut (one collective) every this many steps
    DDP_CHECK_EVERY = 10

    def __init__(self, budget_seconds: float, started: float, max_epochs: int | None = None,
                 can_grow: bool = True, reserve_seconds: float = 0.0, step_seconds: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.deadline = started + budget_seconds
        self.max_epochs = max_epochs
        self.can_grow = can_grow
        self.reserve_seconds = reserve_seconds
        self.calibrated_step = step_seconds
        self.clock = clock
        self.epoch_times: list[float] = []
        self.pace: float | None = None  # smoothed seconds per step
        self.cut = False
        self._last = clock()
        self._steps = 0

    def record_epoch(self, seconds: float) -> None:
        self.epoch_times.append(seconds)
        self._last = self.clock()  # the test pass and checkpoint are not a step

    def replan_steps(self, done_steps: int, planned_steps: int, steps_per_epoch: int, now: float | None = None) -> int:
        """Total training steps for the run, re-planned at an epoch's end from the pace kept so far:
        whole epochs at the recent epoch pace, then a partial epoch at the recent step pace (see
        :func:`plan_steps`). Capped by ``max_epochs``; only shortens when it may not grow."""
        if not self.epoch_times:
            return planned_steps
        now = self.clock() if now is None else now
        epoch = max(statistics.fmean(self.epoch_times), self.epoch_times[-1])
        step = self.pace if self.pace else epoch / max(steps_per_epoch, 1)
        overhead = max(epoch - steps_per_epoch * step, self.reserve())
        left = self.deadline - now
        full = max(0, math.floor(left / epoch))
        partial = math.floor((left - full * epoch - overhead) / step) if step > 0 else 0
        total = done_steps + full * steps_per_epoch + min(max(partial, 0), steps_per_epoch - 1)
        if self.max_epochs is not None:
            total = min(total, self.max_epochs * steps_per_epoch)
        if not self.can_grow:
            total = min(total, planned_steps)
        return max(total, done_steps)

    def steps_left(self) -> int:
        """Steps that still fit before the deadline less :meth:`reserve`, at the current pace."""
        if not self.pace:
            return 0
        return max(0, math.floor((self.deadline - self.clock() - self.reserve()) / self.pace))

    def reserve(self) -> float:
        """Seconds to keep for the epoch's test pass and checkpoint, at the current pace."""
        slowdown = 1.0
        if self.calibrated_step and self.pace:
            slowdown = max(1.0, self.pace / self.calibrated_step)
        return self.reserve_seconds * slowdown

    def step_done(self, dist: Any = None) -> bool:
        """Record one training step; True (and :attr:`cut`) when the epoch must end here: one more
        step would finish after the deadline less :meth:`reserve`."""
        now = self.clock()
        seconds, self._last = now - self._last, now
        self.pace = seconds if self.pace is None else (1 - self.PACE_SMOOTHING) * self.pace + self.PACE_SMOOTHING * seconds
        self._steps += 1
        late = now + self.pace + self.reserve() > self.deadline
        if dist is not None and getattr(dist, "enabled", False):
            if self._steps % self.DDP_CHECK_EVERY:
                return False
            from lictrain.training.distributed import gather_objects

            late = any(gather_objects(late, dist))  # every rank cuts at the same step
        self.cut = self.cut or late
        return late


def estimate_closing_seconds(model: torch.nn.Module, name: str, quality: int, device: torch.device,
                             crop: Any, photos: int, total_pixels: int, checkpoint_seconds: float = 0.0) -> float:
    """Seconds the closing evaluation (real bitstreams of ``photos`` test photos of ``total_pixels``
    in all + JPEG's curve) will take.

    Times what that evaluation runs — :func:`evaluate_codec` (encode, two decodes, PSNR and
    MS-SSIM) and the JPEG anchor — on ``crop`` and on twice its pixels: the difference is the
    cost per pixel, the rest a cost per photo (scaling one small crop by pixels alone counted
    its fixed costs ~100 times over: 31 s estimated, 21 s taken). Plus the codec's set-up and the
    best checkpoint's load (about ``checkpoint_seconds``). From an untrained model; 0 when it
    cannot be measured.
    """
    try:
        started = time.perf_counter()
        info = codec_from_model(model, name, quality)
        setup = time.perf_counter() - started

        gains = rate_gains(model)  # a variable-rate model is evaluated at each trained λ
        rates, lmbda = (gains.count, gains.lambda_of(0)) if gains is not None else (1, None)

        def code(image: Any) -> float:
            ours = measure_seconds(lambda: evaluate_codec(model, info, [image], check_decode=True, lmbda=lmbda), device)
            return rates * ours + measure_seconds(
                lambda: evaluate_anchor("jpeg420", [image], REPORT_QUALITIES, ms_ssim=False), torch.device("cpu"))

        pixels = crop.height * crop.width
        one = code(crop)
        two = code(NamedImage(crop.name, torch.cat([crop.pixels, crop.pixels.flip(-1)], dim=-1)))
    except Exception as exc:  # an untrained model may not code every input: the plan goes on without it
        log.debug("closing evaluation not estimated: %s", exc)
        return 0.0
    per_pixel = (two - one) / pixels if two > one else one / pixels  # noise: fall back to all-per-pixel
    per_photo = max(one - per_pixel * pixels, 0.0)
    return setup + checkpoint_seconds + photos * per_photo + per_pixel * total_pixels


def plan_budget(cfg: Any, device: torch.device, dist: Any, alignment: int, train_loader: Any, test_loader: Any,
                started: float) -> BudgetPlan:
    """Calibrate a throwaway copy of the run and plan ``cfg.budget_minutes`` into epochs.

    ``started`` is when the run began (``time.perf_counter()``): setup and calibration count
    against the budget. Under DDP every rank calibrates and all take the smallest plan.
    """
    probe = build_parts(replace(cfg, epochs=1), device, DistInfo(), alignment)
    train_loader.set_epoch(0)
    # the timing stops early when the machine is so busy that it would eat a tenth of the budget
    times = step_times(probe.strategy.step, train_loader, device, max_seconds=cfg.budget_minutes * 60.0 * CALIBRATION_SHARE)
    step_seconds = statistics.median(times[WARMUP_STEPS:])
    warn_if_stalling(times, device)
    test_seconds = measure_seconds(lambda: test_epoch(probe.model, probe.criterion, test_loader, device), device)
    test_seconds *= len(cfg.lambdas) if cfg.lambdas else 1  # a variable-rate run tests every trained λ
    checkpoint_seconds = serialise_seconds(probe.model.state_dict(), probe.strategy.optimizer.state_dict())
    closing_seconds = 0.0
    if getattr(cfg, "final_eval", False) and dist.is_main:
        from lictrain.data import load_test_crops
        from lictrain.data.loaders import test_photo_pixels

        crops = load_test_crops(cfg.dataset, cfg.test_patch_size)
        closing_seconds = estimate_closing_seconds(probe.model, cfg.model, cfg.quality, device, crops[0], len(crops),
                                                   test_photo_pixels(cfg.dataset, cfg.test_patch_size),
                                                   checkpoint_seconds)

    budget = cfg.budget_minutes * 60.0
    measured = BudgetPlan(budget, time.perf_counter() - started, step_seconds, test_seconds, checkpoint_seconds,
                          len(train_loader), epochs=0, closing_seconds=closing_seconds)
    steps = plan_steps(budget - measured.calibration_seconds, measured.steps_per_epoch, step_seconds,
                       test_seconds + checkpoint_seconds, PLAN_MARGIN, cfg.epochs)
    steps = int(min(gather_objects(steps, dist)))
    plan = replace(measured, epochs=math.ceil(steps / measured.steps_per_epoch), steps=steps)
    log.info("%s", plan.describe())
    available = budget - measured.calibration_seconds
    if measured.epoch_seconds * PLAN_MARGIN > available:
        # an epoch is one pass over the data: on a large set, longer than the whole budget
        fitting = max(1, int(available / PLAN_MARGIN / max(measured.step_seconds, 1e-9))) * cfg.batch_size * dist.world_size
        log.warning("one epoch (%d steps, ~%.0f s) is longer than the %.1f-minute budget: the run trains part of it "
                    "and ends at the deadline (resumable there); --epoch-size %d (crops per epoch) gives whole "
                    "epochs that fit", len(train_loader), measured.epoch_seconds, cfg.budget_minutes,
                    max(cfg.batch_size, fitting // 10))
    return plan
