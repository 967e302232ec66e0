"""LR schedules: HPCM's milestones, scaled; warm-up + cosine/linear per batch."""

from __future__ import annotations

import pytest
import torch

from lictrain.errors import ConfigError
from lictrain.schedules.lr import (
    FINAL_LR_FACTOR,
    LRSchedule,
    default_warmup_steps,
    hpcm_milestones,
    is_per_step,
    multistep_factor,
    warmup_decay_factor,
)


def test_hpcm_milestones_at_3000_epochs() -> None:
    m = hpcm_milestones(3000)
    assert m == [(2750, 0.3), (2850, 0.1), (2950, 0.01)]
    lrs = [1e-4 * multistep_factor(e, m) for e in (0, 2749, 2750, 2849, 2850, 2950, 2999)]
    assert lrs == pytest.approx([1e-4, 1e-4, 3e-5, 3e-5, 1e-5, 1e-6, 1e-6])


def test_milestones_scale_with_epochs() -> None:
    assert hpcm_milestones(300) == [(275, 0.3), (285, 0.1), (295, 0.01)]


def test_multistep_scheduler_drives_the_optimizer() -> None:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = LRSchedule(opt, "multistep", 300)
    seen = []
    for step in range(300):
        sched.apply(step)
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
    assert seen[274] == pytest.approx(1e-4) and seen[275] == pytest.approx(3e-5) and seen[299] == pytest.approx(1e-6)


def test_plateau_scheduler_cuts_on_stagnation() -> None:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = LRSchedule(opt, "plateau", 100)
    for step in range(12):
        sched.apply(step)  # the plateau's LR is its state: the step does not set it
        sched.end_epoch(1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_warmup_then_cosine_reaches_peak_and_final_factor() -> None:
    total, warmup = 100, 10
    f = [warmup_decay_factor(s, total, warmup, "cosine") for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[4] == pytest.approx(0.5) and f[9] == pytest.approx(1.0)
    assert f[-1] == pytest.approx(FINAL_LR_FACTOR)
    # half-way through the decay the cosine is at the mean of peak and floor
    mid = 9 + (total - 1 - 9) // 2
    assert f[mid] == pytest.approx((1 + FINAL_LR_FACTOR) / 2)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))  # monotone after the peak
    assert warmup_decay_factor(500, total, warmup) == pytest.approx(FINAL_LR_FACTOR)  # stays at the floor


def test_linear_decay_is_a_straight_line_and_zero_warmup_starts_at_peak() -> None:
    f = [warmup_decay_factor(s, 11, 0, "linear") for s in range(11)]
    assert f[0] == pytest.approx(1.0) and f[10] == pytest.approx(FINAL_LR_FACTOR)
    assert f[5] == pytest.approx(1 - 0.5 * (1 - FINAL_LR_FACTOR))


def test_cosine_scheduler_steps_per_batch_over_epochs_times_steps() -> None:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = LRSchedule(opt, "cosine", 4, steps_per_epoch=25, warmup_steps=5)
    assert is_per_step("cosine") and not is_per_step("multistep")
    seen = []
    for step in range(100):
        sched.apply(step)
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
    assert seen[0] == pytest.approx(2e-4) and seen[4] == pytest.approx(1e-3)
    assert seen[99] == pytest.approx(1e-3 * FINAL_LR_FACTOR)
    # a pure function of the step: any order, any number of calls, the same LR
    assert [sched.lr(s) for s in (99, 4, 0)] == pytest.approx([seen[99], seen[4], seen[0]])


def test_lr_follows_each_groups_base_and_a_new_length() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-5}])
    sched = LRSchedule(opt, "linear", 10, warmup_steps=0)
    sched.apply(9)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 * FINAL_LR_FACTOR, 1e-5 * FINAL_LR_FACTOR])
    sched.set_length(20)  # a budget's re-plan: step 9 is now half-way
    sched.apply(9)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 9 / 19 * (1 - FINAL_LR_FACTOR)))


def test_an_old_lambdalr_state_keeps_its_warmup() -> None:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = LRSchedule(opt, "cosine", 10)
    old = {"base_lrs": [1e-3], "last_epoch": 7, "lr_lambdas": [{"total_steps": 10, "warmup_steps": 3, "shape": "cosine"}]}
    sched.load_state_dict(old)  # lictrain 0.1's LambdaLR(WarmupDecay) state
    assert sched.warmup_steps == 3
    plateau = LRSchedule(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0), "plateau", 10)
    state = plateau.state_dict()
    plateau.end_epoch(1.0)
    restored = LRSchedule(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0), "plateau", 10)
    restored.load_state_dict(plateau.state_dict())
    assert restored.plateau.best == 1.0 and state["plateau"]["best"] != 1.0


def test_default_warmup_is_five_percent() -> None:
    assert default_warmup_steps(1000) == 50 and default_warmup_steps(3) == 1


def test_unknown_schedule_names_the_choices() -> None:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ConfigError, match="cosine"):
        LRSchedule(opt, "exponential", 10)


def test_default_lr_is_high_for_budgets_and_conventional_otherwise() -> None:
    from lictrain.config import CONVENTIONAL_LR, SHORT_BUDGET_LR, TrainConfig

    assert TrainConfig().validate().lr == SHORT_BUDGET_LR > CONVENTIONAL_LR == 1e-4  # the main job
    assert TrainConfig(budget_minutes=15, epochs=100).validate().lr == SHORT_BUDGET_LR
    assert TrainConfig(epochs=3000).validate().lr == pytest.approx(CONVENTIONAL_LR)  # a long run: 1e-4
    assert TrainConfig(lr_schedule="multistep").validate().lr == pytest.approx(CONVENTIONAL_LR)
    assert TrainConfig(epochs=5).peak_lr == pytest.approx(CONVENTIONAL_LR)  # also before validate()
    assert TrainConfig(lr=3e-4).validate().lr == pytest.approx(3e-4)
    # each model its own short-budget peak: CompressAI's hyperprior diverged at 2e-3
    assert TrainConfig(model="bmshj2018-hyperprior").validate().lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="--lr must be a positive number"):
        TrainConfig(lr=-1.0).validate()


def test_length_plan_round_trips_and_says_which_length_holds_at_a_step() -> None:
    from lictrain.schedules.lr import format_length_plan, length_at, parse_length_plan

    plan = parse_length_plan("120,24:130, 48:118")
    assert plan == [[0, 120], [24, 130], [48, 118]]
    assert format_length_plan(plan) == "120,24:130,48:118"
    assert [length_at(plan, s) for s in (0, 23, 24, 47, 48, 500)] == [120, 120, 130, 130, 118, 118]
    for bad in ("", "5:10", "10,x:3", "10,4:0", "10,4:8,4:9"):
        with pytest.raises(ConfigError, match="--lr-plan"):
            parse_length_plan(bad)
