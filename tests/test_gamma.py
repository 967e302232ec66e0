"""Tests for lictrain.schedules.gamma: formulas, validation, adaptive cuts, resume, optimisers."""

from __future__ import annotations

import argparse
import json
import logging
import math

import pytest

from lictrain.errors import CheckpointError, ConfigError, LictrainError
from lictrain.schedules import (
    STRATEGIES,
    AdaptiveGammaScheduler,
    HPCMGammaScheduler,
    MultiScaleGammaScheduler,
    build_gamma_scheduler,
    gamma_scheduler_from_args,
)

G0, GF, T = 0.006, 0.001, 3000


class AttrOpt:
    """Stands in for BalancedOptimizer: a writable ``gamma`` (a property, like the real one)."""

    def __init__(self) -> None:
        self._gamma = 0.123
        self.sets: list = []

    @property
    def gamma(self):
        return self._gamma

    @gamma.setter
    def gamma(self, value) -> None:
        self.sets.append(value)
        self._gamma = value


class GroupsOpt:
    """Stands in for a torch optimiser whose param groups carry ``gamma``."""

    def __init__(self, n: int = 2) -> None:
        self.param_groups = [{"params": [], "lr": 1e-4, "gamma": 0.5} for _ in range(n)]


def sched(strategy: str, **kw):
    kw.setdefault("initial_gamma", G0)
    kw.setdefault("final_gamma", GF)
    kw.setdefault("total_epochs", T)
    return AdaptiveGammaScheduler(kw.pop("optimizer", None), strategy=strategy, **kw)


# --------------------------------------------------------------------------- formulas
@pytest.mark.parametrize("t", [0, 1, 7, 750, 1500, 2999, 3000])
def test_linear_formula(t):
    assert sched("linear").step(t) == pytest.approx(G0 - (G0 - GF) * t / T, rel=1e-12)


@pytest.mark.parametrize("t", [0, 1, 7, 750, 1500, 2999, 3000])
def test_cosine_formula(t):
    want = GF + 0.5 * (G0 - GF) * (1 + math.cos(math.pi * t / T))
    assert sched("cosine").step(t) == pytest.approx(want, rel=1e-12)


def test_linear_and_cosine_endpoints():
    for s in ("linear", "cosine"):
        sc = sched(s)
        assert sc.step(0) == pytest.approx(G0, rel=1e-12)
        assert sc.step(T) == pytest.approx(GF, rel=1e-12)
    assert sched("cosine").step(T // 2) == pytest.approx((G0 + GF) / 2, rel=1e-12)


def test_step_formula_defaults():
    s = sched("step")
    assert s.step_epochs == (1000, 2000) and s.gamma_decay == 0.5
    assert [s.step(t) for t in (0, 999, 1000, 1999, 2000, 3000)] == [
        G0, G0, G0 * 0.5, G0 * 0.5, G0 * 0.25, G0 * 0.25
    ]


def test_step_counts_epochs_le_t_unsorted_and_repeated():
    s = sched("step", step_epochs=[20, 5, 5], gamma_decay=0.1, total_epochs=30)
    assert s.step(4) == G0
    assert s.step(5) == pytest.approx(G0 * 0.01)  # both 5s count
    assert s.step(20) == pytest.approx(G0 * 0.001)


def test_step_ignores_final_gamma():
    # step may go below final_gamma and final_gamma may exceed initial_gamma
    s = sched("step", final_gamma=0.01, step_epochs=[1], gamma_decay=0.01, total_epochs=2)
    assert s.step(2) == pytest.approx(G0 * 0.01)


def guide_hpcm(epoch: int, initial_gamma: float) -> float:
    """The guide's code, verbatim (T = 3000)."""
    if epoch < 300:  # Warmup
        gamma = initial_gamma * (1.0 + 0.2 * epoch / 300)
    elif epoch < 2000:  # Scaling
        progress = (epoch - 300) / (2000 - 300)
        gamma = initial_gamma * (1.0 + 0.2) * (1.0 - 0.5 * progress)
    else:  # Refinement
        progress = (epoch - 2000) / (3000 - 2000)
        gamma = initial_gamma * 0.7 * (1.0 - 0.3 * progress)
    return gamma


def test_hpcm_matches_guide_exactly_at_3000():
    s = HPCMGammaScheduler(None, total_epochs=3000, initial_gamma=G0)
    assert s._p1 == 300.0 and s._p2 == 2000.0
    assert all(s.step(t) == guide_hpcm(t, G0) for t in range(3001))


def test_hpcm_phase_values():
    s = HPCMGammaScheduler(None, total_epochs=3000, initial_gamma=1.0)
    assert s.step(0) == 1.0
    assert s.step(299) == pytest.approx(1 + 0.2 * 299 / 300)
    assert s.step(300) == pytest.approx(1.2)
    assert s.step(1999) == pytest.approx(1.2 * (1 - 0.5 * 1699 / 1700))
    assert s.step(2000) == pytest.approx(0.7)  # the guide's jump up from 0.6
    assert s.step(3000) == pytest.approx(0.49)


def test_hpcm_ten_epochs_has_all_three_phases():
    s = HPCMGammaScheduler(None, total_epochs=10, initial_gamma=1.0)
    assert s._p1 == 1.0 and s._p2 == pytest.approx(20 / 3)
    got = [s.step(t) for t in range(11)]
    assert got[0] == 1.0  # warm-up: epoch 0 only
    p1, p2 = 1.0, 20 / 3
    for t in range(1, 7):  # scaling
        assert got[t] == pytest.approx(1.2 * (1 - 0.5 * (t - p1) / (p2 - p1)), rel=1e-12)
    for t in range(7, 11):  # refinement
        assert got[t] == pytest.approx(0.7 * (1 - 0.3 * (t - p2) / (10 - p2)), rel=1e-12)
    assert got[10] == pytest.approx(0.49)


@pytest.mark.parametrize("total", [1, 2, 3, 7, 30, 31, 299, 3001])
def test_hpcm_boundaries_exact_for_any_T(total):
    s = HPCMGammaScheduler(None, total_epochs=total, initial_gamma=1.0)
    for t in range(total + 1):
        g = s.step(t)
        if t * 10 < total:
            assert g == pytest.approx(1 + 0.2 * t / (total / 10))
        elif t * 3 < 2 * total:
            assert 0.6 - 1e-12 <= g <= 1.2 + 1e-12
        else:
            assert 0.49 - 1e-12 <= g <= 0.7 + 1e-12


def test_hpcm_ignores_final_gamma_and_strategy_alias():
    a = HPCMGammaScheduler(None, total_epochs=100, initial_gamma=G0, final_gamma=0.5)
    b = sched("hpcm", total_epochs=100)
    assert isinstance(a, AdaptiveGammaScheduler) and a.strategy == "hpcm"
    assert [a.step(t) for t in range(101)] == [b.step(t) for t in range(101)]


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kw",
    [
        {"strategy": "exp"},
        {"initial_gamma": 0.0},
        {"initial_gamma": -1e-3},
        {"initial_gamma": float("nan")},
        {"final_gamma": 0.0},
        {"final_gamma": -0.1},
        {"final_gamma": None},
        {"final_gamma": 0.01},  # > initial for a decaying strategy
        {"total_epochs": 0},
        {"total_epochs": -5},
        {"total_epochs": 2.5},
        {"gamma_decay": 0.0},
        {"gamma_decay": 1.5},
        {"window_size": 0},
        {"window_size": 2.5},
        {"threshold": float("inf")},
        {"step_epochs": [-1]},
        {"step_epochs": "1000"},
        {"windowsize": 5},  # typo
    ],
)
def test_construction_errors(kw):
    kw = {"strategy": "cosine", **kw}
    with pytest.raises(ConfigError) as err:
        sched(kw.pop("strategy"), **kw)
    assert isinstance(err.value, ValueError) and isinstance(err.value, LictrainError)


@pytest.mark.parametrize("strategy", ["linear", "cosine", "adaptive"])
def test_final_above_initial_rejected_for_decaying(strategy):
    with pytest.raises(ConfigError, match="gamma_final"):
        sched(strategy, final_gamma=0.01)


@pytest.mark.parametrize("strategy", ["step", "hpcm"])
def test_final_above_initial_allowed_where_unused(strategy):
    sched(strategy, final_gamma=0.01)
    sched(strategy, final_gamma=None)


def test_final_equal_initial_is_constant():
    s = sched("cosine", final_gamma=G0)
    assert {s.step(t) for t in range(0, 3001, 100)} == {G0}


def test_float_integral_total_epochs_accepted():
    assert sched("linear", total_epochs=3000.0).total_epochs == 3000


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("epoch", [-1, T + 1])
def test_out_of_range_epoch(strategy, epoch):
    s = sched(strategy)
    with pytest.raises(ValueError, match="outside"):
        s.step(epoch, 1.0)


def test_adaptive_requires_loss():
    s = sched("adaptive")
    with pytest.raises(ValueError, match="current_loss"):
        s.step(0)


def test_unused_kwargs_accepted_and_none_means_default():
    s = sched("linear", step_epochs=None, window_size=None, threshold=None, gamma_decay=None)
    assert (s.window_size, s.threshold, s.gamma_decay) == (50, 0.01, 0.5)


# --------------------------------------------------------------------------- adaptive
def run_adaptive(losses, **kw):
    s = sched("adaptive", **kw)
    return s, [s.step(t, loss) for t, loss in enumerate(losses)]


def test_adaptive_no_cut_while_improving():
    losses = [100 * 0.9**t for t in range(200)]  # 10 % per epoch
    s, gs = run_adaptive(losses, window_size=10, total_epochs=300)
    assert set(gs) == {G0} and s.num_cuts == 0


def test_adaptive_cuts_on_plateau_then_waits_a_window():
    s, gs = run_adaptive([1.0] * 40, window_size=10, total_epochs=100)
    # first comparison at epoch 10 (loss 10 epochs ago exists), then a cut every 10 epochs
    assert gs[:10] == [G0] * 10
    assert gs[10] == G0 * 0.5
    assert gs[11:20] == [G0 * 0.5] * 9
    assert gs[20] == G0 * 0.25
    assert gs[30] == GF  # 0.00075 floored at final
    assert s.num_cuts == 3


def test_adaptive_relative_improvement_threshold():
    # loss falls 0.5 % per window of 10 -> below 1 % threshold; 2 % per window -> above
    slow = [1.0 - 0.0005 * t for t in range(11)]
    fast = [1.0 - 0.002 * t for t in range(11)]
    assert run_adaptive(slow, window_size=10, total_epochs=20)[1][10] == G0 * 0.5
    assert run_adaptive(fast, window_size=10, total_epochs=20)[1][10] == G0
    # uses |old loss|: a negative loss that improves is not a plateau
    neg = [-1.0 - 0.05 * t for t in range(11)]
    assert run_adaptive(neg, window_size=10, total_epochs=20)[1][10] == G0


def test_adaptive_never_below_final_never_up():
    losses = [1.0] * 200 + [1.0 + t for t in range(100)]  # plateau, then worse
    s, gs = run_adaptive(losses, window_size=5, total_epochs=300, gamma_decay=0.9)
    assert min(gs) == GF
    assert all(b <= a for a, b in zip(gs, gs[1:]))


def test_adaptive_non_finite_loss_ignored(caplog):
    s = sched("adaptive", window_size=3, total_epochs=20)
    with caplog.at_level(logging.WARNING, logger="lictrain.schedules.gamma"):
        gs = [s.step(t, x) for t, x in enumerate([1.0, float("nan"), float("inf"), 1.0, 1.0])]
    assert gs == [G0] * 5  # only three finite losses: no window yet, no cut
    assert "non-finite" in caplog.text
    assert s.step(5, 1.0) == G0 * 0.5  # 4th finite loss: a plateau over 3


def test_adaptive_accepts_tensor_like_loss():
    class Scalar:
        def __float__(self):
            return 1.0

    s = sched("adaptive", window_size=1, total_epochs=5)
    s.step(0, Scalar())
    assert s.step(1, Scalar()) == G0 * 0.5


def test_adaptive_history_is_bounded():
    s, _ = run_adaptive([1.0 / (t + 1) for t in range(500)], window_size=7, total_epochs=600)
    assert len(s._loss_history) == 8 and s._loss_history.maxlen == 8


# --------------------------------------------------------------------------- resume
def plateauing(n):
    return [1.0 + 4.0 * math.exp(-t / 15.0) + 0.001 * ((t * 7919) % 13) for t in range(n)]


def test_resume_adaptive_continues_exactly():
    losses = plateauing(100)
    kw = dict(window_size=8, threshold=0.02, total_epochs=100)
    straight, gs = run_adaptive(losses, **kw)
    assert straight.num_cuts >= 2  # the check exercises cuts on both sides of the split

    first = sched("adaptive", **kw)
    resumed = [first.step(t, losses[t]) for t in range(40)]
    state = json.loads(json.dumps(first.state_dict()))  # plain values survive JSON
    opt = AttrOpt()
    second = sched("adaptive", optimizer=opt, **kw)
    second.load_state_dict(state)
    assert opt.gamma == first.gamma  # the restored gamma reaches the optimiser
    resumed += [second.step(t, losses[t]) for t in range(40, 100)]
    assert resumed == gs
    assert second.state_dict()["loss_history"] == straight.state_dict()["loss_history"]


def test_resume_cut_straddles_split():
    losses = [1.0] * 60
    kw = dict(window_size=10, total_epochs=100)
    _, gs = run_adaptive(losses, **kw)
    a = sched("adaptive", **kw)
    out = [a.step(t, 1.0) for t in range(15)]  # cut at 10, next allowed at 20
    b = sched("adaptive", **kw)
    b.load_state_dict(a.state_dict())
    out += [b.step(t, 1.0) for t in range(15, 60)]
    assert out == gs


def test_load_state_dict_errors(caplog):
    a = sched("adaptive")
    with pytest.raises(CheckpointError, match="gamma_strategy"):
        sched("cosine").load_state_dict(a.state_dict())
    with pytest.raises(CheckpointError, match="malformed"):
        a.load_state_dict({"strategy": "adaptive"})
    with caplog.at_level(logging.WARNING):
        sched("adaptive", total_epochs=4000).load_state_dict(a.state_dict())
    assert "changed settings" in caplog.text


def test_state_dict_of_epoch_strategies_roundtrip():
    a = sched("cosine")
    a.step(1234)
    b = sched("cosine")
    b.load_state_dict(a.state_dict())
    assert b.gamma == a.gamma and b.last_epoch == 1234
    assert b.step(1235) == a.step(1235)


# --------------------------------------------------------------------------- optimisers
def test_attr_optimizer_is_set():
    opt = AttrOpt()
    s = sched("linear", optimizer=opt)
    assert opt.sets == []  # construction leaves the optimiser alone
    g = s.step(1500)
    assert opt.gamma == g == s.gamma


def test_param_groups_optimizer_is_set():
    opt = GroupsOpt(3)
    g = sched("cosine", optimizer=opt).step(100)
    assert [grp["gamma"] for grp in opt.param_groups] == [g, g, g]


def test_none_optimizer_just_computes():
    assert sched("step", optimizer=None).step(1000) == G0 * 0.5


def test_optimizer_without_gamma_is_a_clear_error():
    class Adam:
        param_groups = [{"params": [], "lr": 1e-3}]

    with pytest.raises(ConfigError, match="use_balanced"):
        sched("cosine", optimizer=Adam())
    with pytest.raises(ConfigError):
        sched("cosine", optimizer=object())


def test_real_torch_optimizer_param_groups():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p], "gamma": 0.5}], lr=0.1)
    g = sched("linear", optimizer=opt).step(3000)
    assert opt.param_groups[0]["gamma"] == g == pytest.approx(GF)


# --------------------------------------------------------------------------- multi-scale
TASKS = ["distortion", "z", "s1", "s2", "s3"]
BASE = {"strategy": "cosine", "initial_gamma": G0, "final_gamma": GF, "total_epochs": 100}


def test_multiscale_one_gamma_per_task():
    opt = AttrOpt()
    ms = MultiScaleGammaScheduler(
        opt,
        group_configs={"s1": {"initial_gamma": 0.008}, "s3": {"strategy": "hpcm"}},
        task_groups=TASKS,
        default=BASE,
    )
    g = ms.step(0)
    assert g == [G0, G0, 0.008, G0, G0] and opt.gamma == g
    g = ms.step(100)
    assert g[0] == pytest.approx(GF) and g[2] == pytest.approx(GF)
    assert g[4] == pytest.approx(G0 * 0.49)  # hpcm end
    assert ms.gamma == g and ms.group_gammas["s3"] == g[4]


def test_multiscale_shared_groups_and_group_losses():
    ms = MultiScaleGammaScheduler(
        None,
        group_configs={
            "distortion": {"strategy": "linear"},
            "rate": {"strategy": "adaptive", "window_size": 2},
        },
        task_groups=["distortion", "rate", "rate", "rate"],
        default=BASE,
    )
    out = [ms.step(t, current_loss=1.0, group_losses={"rate": 10.0 - t}) for t in range(3)]
    assert out[-1][1:] == [G0] * 3  # rate improves -> no cut
    out = [ms.step(t, current_loss=1.0) for t in range(3, 6)]  # falls back to current_loss
    assert out[-1][1] == out[-1][2] == out[-1][3] < G0


def test_multiscale_param_groups_get_list():
    opt = GroupsOpt(1)
    ms = MultiScaleGammaScheduler(opt, {}, ["a", "b"], default=BASE)
    assert opt.param_groups[0]["gamma"] is not None
    assert ms.step(50) == opt.param_groups[0]["gamma"]


def test_multiscale_errors():
    with pytest.raises(ConfigError, match="match no task"):
        MultiScaleGammaScheduler(None, {"s4": {}}, TASKS, default=BASE)
    with pytest.raises(ConfigError, match="non-empty"):
        MultiScaleGammaScheduler(None, {}, [], default=BASE)
    with pytest.raises(ConfigError, match="'s2'"):
        MultiScaleGammaScheduler(None, {"s2": {"initial_gamma": -1}}, TASKS, default=BASE)
    with pytest.raises(ConfigError, match="'z'"):
        MultiScaleGammaScheduler(None, {"z": {"bogus": 1}}, TASKS, default=BASE)


def test_multiscale_resume():
    cfg = {"rate": {"strategy": "adaptive", "window_size": 3}}
    losses = plateauing(30)
    a = MultiScaleGammaScheduler(None, cfg, ["d", "rate"], default=BASE)
    full = [a.step(t, losses[t]) for t in range(30)]
    b = MultiScaleGammaScheduler(None, cfg, ["d", "rate"], default=BASE)
    part = [b.step(t, losses[t]) for t in range(12)]
    c = MultiScaleGammaScheduler(AttrOpt(), cfg, ["d", "rate"], default=BASE)
    c.load_state_dict(b.state_dict())
    part += [c.step(t, losses[t]) for t in range(12, 30)]
    assert part == full
    with pytest.raises(CheckpointError):
        MultiScaleGammaScheduler(None, {}, ["d"], default=BASE).load_state_dict(b.state_dict())


# --------------------------------------------------------------------------- builders
def train_args(**kw):
    base = dict(gamma_strategy="cosine", gamma=G0, gamma_final=GF, epochs=T,
                step_epochs=[1000, 2000], adaptive_window=50, adaptive_threshold=0.01)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_from_args_every_strategy(strategy):
    s = gamma_scheduler_from_args(AttrOpt(), train_args(gamma_strategy=strategy))
    assert s.strategy == strategy
    assert isinstance(s, HPCMGammaScheduler) == (strategy == "hpcm")
    assert s.step(0, 1.0) == G0


def test_from_args_missing_optional_flags_take_defaults():
    ns = argparse.Namespace(gamma_strategy="adaptive", gamma=G0, gamma_final=GF, epochs=10)
    s = gamma_scheduler_from_args(None, ns)
    assert (s.window_size, s.threshold) == (50, 0.01)


def test_build_gamma_scheduler_errors():
    with pytest.raises(ConfigError, match="choose one of"):
        build_gamma_scheduler(None, "nope", G0, GF, T)
