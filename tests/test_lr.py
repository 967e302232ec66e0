"""LR schedules: HPCM's milestones, scaled."""

from __future__ import annotations

import pytest
import torch

from lictrain.schedules.lr import build_lr_scheduler, hpcm_milestones, multistep_factor


def test_hpcm_milestones_at_3000_epochs() -> None:
    m = hpcm_milestones(3000)
    assert m == [(2750, 0.3), (2850, 0.1), (2950, 0.01)]
    lrs = [1e-4 * multistep_factor(e, m) for e in (0, 2749, 2750, 2849, 2850, 2950, 2999)]
    assert lrs == pytest.approx([1e-4, 1e-4, 3e-5, 3e-5, 1e-5, 1e-6, 1e-6])


def test_milestones_scale_with_epochs() -> None:
    assert hpcm_milestones(300) == [(275, 0.3), (285, 0.1), (295, 0.01)]


def test_multistep_scheduler_drives_the_optimizer() -> None:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = build_lr_scheduler(opt, "multistep", 300)
    seen = []
    for _ in range(300):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[274] == pytest.approx(1e-4) and seen[275] == pytest.approx(3e-5) and seen[299] == pytest.approx(1e-6)


def test_plateau_scheduler_cuts_on_stagnation() -> None:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_lr_scheduler(opt, "plateau", 100)
    for _ in range(12):
        sched.step(1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
