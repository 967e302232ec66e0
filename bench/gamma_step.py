"""Benchmark: median microseconds per ``step()`` of each gamma strategy (goal: < 5 µs).

Each strategy steps through epochs ``0..T`` repeatedly, writing gamma into a stand-in
optimiser with a ``gamma`` property (as lictrain's BalancedOptimizer has). The adaptive
strategy gets a plateauing loss and ``gamma_decay=1.0``, so gamma never reaches its floor and
every call past the first window takes the full path (window comparison, and a "cut" with its
log call once per window) instead of the cheap at-the-floor exit. Timings are taken over
batches of calls; the median batch time per call is reported, along with the multi-scale
scheduler (5 tasks in 3 groups) for comparison.

Usage::

    python bench/gamma_step.py [--calls 200000] [--batch 1000] [--check]

``--check`` exits 1 if any single-schedule strategy misses the goal.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

try:
    from lictrain.schedules.gamma import (
        STRATEGIES,
        AdaptiveGammaScheduler,
        MultiScaleGammaScheduler,
    )
except ImportError:  # run from a checkout without installing
    import pathlib

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))
    from lictrain.schedules.gamma import (
        STRATEGIES,
        AdaptiveGammaScheduler,
        MultiScaleGammaScheduler,
    )

GOAL_US = 5.0
T = 3000


class FakeBalanced:
    """A stand-in optimiser with a trivial ``gamma`` property."""

    def __init__(self) -> None:
        self._gamma = 0.0

    @property
    def gamma(self) -> float:
        return self._gamma

    @gamma.setter
    def gamma(self, value: float) -> None:
        self._gamma = value


def time_calls(step, losses: list[float], calls: int, batch: int) -> float:
    """Return the median µs per call of ``step(epoch, loss)`` over batches of ``batch`` calls."""
    per_call: list[float] = []
    n_batches = max(1, calls // batch)
    epoch = 0
    clock = time.perf_counter_ns
    for _ in range(n_batches):
        if epoch + batch > T:
            epoch = 0
        start = clock()
        for e in range(epoch, epoch + batch):
            step(e, losses[e])
        per_call.append((clock() - start) / batch / 1000.0)
        epoch += batch
    return statistics.median(per_call)


def make(strategy: str, opt: object) -> AdaptiveGammaScheduler:
    return AdaptiveGammaScheduler(
        opt, strategy=strategy, initial_gamma=0.006, final_gamma=0.001, total_epochs=T,
        step_epochs=[1000, 2000], window_size=50, threshold=0.01,
        gamma_decay=1.0 if strategy == "adaptive" else 0.5,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200_000, help="step() calls per strategy")
    ap.add_argument("--batch", type=int, default=1000, help="calls per timed batch")
    ap.add_argument("--check", action="store_true", help=f"exit 1 if any strategy >= {GOAL_US} µs")
    args = ap.parse_args(argv)
    batch = min(args.batch, T)

    losses = [1.0 + 4.0 * math.exp(-5.0 * t / T) for t in range(T + 1)]
    print(
        f"gamma step() timing: {args.calls} calls, batches of {batch}, T={T}, "
        f"goal < {GOAL_US} µs"
    )
    print(f"python {sys.version.split()[0]}")
    worst = 0.0
    for strategy in STRATEGIES:
        for label, opt in (("attr", FakeBalanced()), ("none", None)):
            sched = make(strategy, opt)
            # Epochs wrap to 0 after T (valid for step()); adaptive just keeps comparing.
            us = time_calls(sched.step, losses, args.calls, batch)
            if label == "attr":
                worst = max(worst, us)
            print(f"  {strategy:<9} optimizer={label:<9} {us:6.3f} µs/step")
    ms = MultiScaleGammaScheduler(
        FakeBalanced(),
        group_configs={"rate": {"strategy": "adaptive"}, "s3": {"strategy": "hpcm"}},
        task_groups=["distortion", "rate", "rate", "rate", "s3"],
        default={"strategy": "cosine", "initial_gamma": 0.006, "final_gamma": 0.001,
                 "total_epochs": T},
    )
    us = time_calls(ms.step, losses, args.calls // 4, batch)
    print(f"  multi-scale (5 tasks, 3 groups)     {us:6.3f} µs/step")
    ok = worst < GOAL_US
    print(f"worst single-schedule step(): {worst:.3f} µs -> {'OK' if ok else 'MISSES GOAL'}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
