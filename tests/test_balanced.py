"""Tests for lictrain.optim.BalancedOptimizer (trajectory + QP) and the cautious Adam step.

The exactness tests compare against an *independent* reference written here: plain
``torch.optim.Adam`` on the network with the surrogate built by hand, and a numpy Adam on the
logits with an explicit softmax Jacobian.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from lictrain.errors import CheckpointError, ConfigError
from lictrain.optim import BalancedOptimizer

B1, B2, EPS = 0.9, 0.999, 1e-8


# ---------------------------------------------------------------------------- helpers
def make_model(k: int, seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, k)
    ).to(dtype)


def make_batches(k: int, n: int, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 4, generator=g, dtype=dtype), torch.randn(8, k, generator=g, dtype=dtype))
        for _ in range(n)
    ]


def task_losses(model, x, y) -> torch.Tensor:
    """k positive task losses (per-output MSE; the last one scaled so the tasks differ)."""
    per_task = (model(x) - y).pow(2).mean(0)
    scale = torch.linspace(1.0, 3.0, per_task.numel(), dtype=per_task.dtype)
    return per_task * scale


def np_softmax(w):
    e = np.exp(w - w.max())
    return e / e.sum()


class NumpyLogits:
    """Hand-written FAMO logit update: grad = J^T delta + gamma*w, then Adam (numpy, float64)."""

    def __init__(self, k, w_lr, gamma, m):
        self.w = np.zeros(k)
        self.m1 = np.zeros(k)
        self.m2 = np.zeros(k)
        self.t = 0
        self.w_lr = w_lr
        self.gamma = np.broadcast_to(np.asarray(gamma, dtype=np.float64), (k,))
        self.m = np.broadcast_to(np.asarray(m, dtype=np.float64), (k,))

    def update(self, L, Lp):
        delta = np.log(L - self.m + 1e-8) - np.log(Lp - self.m + 1e-8)
        z = np_softmax(self.w)
        jac = np.diag(z) - np.outer(z, z)  # dz_i / dw_j
        g = jac.T @ delta + self.gamma * self.w
        self.t += 1
        self.m1 = B1 * self.m1 + (1 - B1) * g
        self.m2 = B2 * self.m2 + (1 - B2) * g * g
        mhat = self.m1 / (1 - B1**self.t)
        vhat = self.m2 / (1 - B2**self.t)
        self.w = self.w - self.w_lr * mhat / (np.sqrt(vhat) + EPS)


def reference_run(model, batches, *, k, lr, gamma, w_lr, m, weight_decay, mode):
    adam = torch.optim.Adam(model.parameters(), lr=lr, betas=(B1, B2), eps=EPS,
                            weight_decay=weight_decay)
    logits = NumpyLogits(k, w_lr, gamma, m)
    m_t = torch.as_tensor(np.broadcast_to(np.asarray(m, dtype=np.float64), (k,)).copy())
    prev = None
    for x, y in batches:
        L = task_losses(model, x, y)
        L_np = L.detach().numpy().copy()
        if mode == "next-batch" and prev is not None:
            logits.update(prev, L_np)
        z = torch.from_numpy(np_softmax(logits.w))
        D = L - m_t + 1e-8
        c = (z / D.detach()).sum()
        surrogate = (z * D.log()).sum() / c
        adam.zero_grad()
        surrogate.backward()
        adam.step()
        if mode == "same-batch":
            with torch.no_grad():
                Lp = task_losses(model, x, y).numpy()
            logits.update(L_np, Lp)
        else:
            prev = L_np
    return logits.w


def balanced_run(model, opt, batches, mode):
    for x, y in batches:
        loss = opt.weighted_loss(task_losses(model, x, y))
        opt.zero_grad()
        loss.backward()
        assert opt.step() is True
        if mode == "same-batch":
            with torch.no_grad():
                assert opt.update_weights(task_losses(model, x, y)) is True


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "k,gamma,m,weight_decay,mode",
    [
        (2, 0.003, -1.0, 0.0, "same-batch"),
        (2, 0.01, -1.0, 0.0, "next-batch"),
        (5, [0.0, 0.003, 0.01, 0.03, 0.1], [-1.0, -0.5, 0.0, -1.0, -2.0], 0.01, "same-batch"),
        (5, 0.003, 0.0, 0.0, "next-batch"),
    ],
)
def test_matches_plain_adam_plus_numpy_logit_update(k, gamma, m, weight_decay, mode):
    batches = make_batches(k, 20)
    ref_model = make_model(k)
    ref_w = reference_run(ref_model, batches, k=k, lr=1e-2, gamma=gamma, w_lr=0.05, m=m,
                          weight_decay=weight_decay, mode=mode)

    model = make_model(k)
    opt = BalancedOptimizer(model.parameters(), lr=1e-2, n_tasks=k, gamma=gamma, w_lr=0.05,
                            min_losses=m, cautious=False, max_grad_norm=None,
                            weight_decay=weight_decay, balanced_update=mode)
    balanced_run(model, opt, batches, mode)

    assert opt.logits.dtype == torch.float64
    assert np.abs(ref_w).max() > 0.05  # the logits really moved
    np.testing.assert_allclose(opt.logits.numpy(), ref_w, rtol=1e-9, atol=1e-12)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    expected_updates = 20 if mode == "same-batch" else 19
    assert opt.num_weight_updates == expected_updates
    assert opt.num_steps == 20 and opt.skipped_steps == 0
    torch.testing.assert_close(opt.task_weights, torch.from_numpy(np_softmax(ref_w)))


def test_surrogate_value_and_gradient_match_the_equation():
    opt = BalancedOptimizer([torch.zeros(1, dtype=torch.float64)], n_tasks=3, min_losses=-1.0)
    opt._w = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)  # any logits
    L = torch.tensor([0.7, 2.0, 0.05], dtype=torch.float64, requires_grad=True)
    sur = opt.weighted_loss(L)
    sur.backward()
    z = np_softmax(np.array([0.3, -0.2, 0.1]))
    D = np.array([0.7, 2.0, 0.05]) + 1.0 + 1e-8
    c = (z / D).sum()
    assert sur.item() == pytest.approx((z * np.log(D)).sum() / c, rel=1e-14)
    # d surrogate / dL_i = z_i / (D_i c): the effective task weights of the network gradient
    np.testing.assert_allclose(L.grad.numpy(), z / D / c, rtol=1e-14)


# ---------------------------------------------------------------------------- cautious
def _adam_moments(grads):
    m = np.zeros_like(grads[0])
    v = np.zeros_like(grads[0])
    for g in grads:
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
    t = len(grads)
    return m, v, m / (1 - B1**t), v / (1 - B2**t)


@pytest.mark.parametrize("foreach", [False, True])
def test_cautious_mask_matches_hand_computation(foreach):
    lr = 0.1
    p0 = np.array([0.5, -1.0, 2.0, 0.0, 1.5, -0.3])
    g1 = np.array([1.0, -2.0, 0.0, 0.5, -1.0, 3.0])  # one zero gradient: masked at step 1
    g2 = np.array([-0.01, -1.0, 1.0, -5.0, -2.0, -0.2])  # flips in 0, 3, 5; m follows only in 3
    p = torch.tensor(p0, requires_grad=True)
    opt = BalancedOptimizer([p], lr=lr, cautious=True, max_grad_norm=None, foreach=foreach)

    expected = p0.copy()
    for t, g in enumerate([g1, g2], start=1):
        p.grad = torch.tensor(g)
        assert opt.step()
        m, _, mhat, vhat = _adam_moments([g1, g2][:t])
        u = lr * mhat / (np.sqrt(vhat) + EPS)
        mask = (m * g > 0).astype(np.float64)
        expected = expected - u * mask / max(mask.mean(), 1e-3)
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-12, atol=1e-15)
    # step 2 mask by hand: m2 = 0.9*0.1*g1 + 0.1*g2
    assert (_adam_moments([g1, g2])[0] * g2 > 0).tolist() == [False, True, True, True, True, False]


@pytest.mark.parametrize("foreach", [False, True])
def test_cautious_mask_mean_is_floored_at_1e_3(foreach):
    n, lr = 2000, 0.01
    p = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = BalancedOptimizer([p], lr=lr, cautious=True, max_grad_norm=None, foreach=foreach)
    g1 = np.ones(n)
    g2 = np.full(n, -0.5)  # m2 = 0.04 > 0, g2 < 0: masked ...
    g2[0] = 1.0  # ... except coordinate 0: mask mean 1/2000 < 1e-3
    p.grad = torch.tensor(g1)
    opt.step()
    after1 = p.detach().clone()
    p.grad = torch.tensor(g2)
    opt.step()
    _, _, mhat, vhat = _adam_moments([g1, g2])
    u0 = lr * mhat[0] / (np.sqrt(vhat[0]) + EPS)
    delta = (p.detach() - after1).numpy()
    assert delta[0] == pytest.approx(-u0 * 1000.0, rel=1e-12)  # 1/max(5e-4, 1e-3), not 2000
    assert np.all(delta[1:] == 0.0)

    # every coordinate masked: no movement at all
    q = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    opt2 = BalancedOptimizer([q], lr=lr, cautious=True, max_grad_norm=None, foreach=foreach)
    q.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    opt2.step()
    before = q.detach().clone()
    q.grad = torch.tensor([-0.01, -0.01], dtype=torch.float64)  # m stays > 0, g < 0
    opt2.step()
    assert torch.equal(q.detach(), before)


def test_cautious_max_scale_caps_the_rescale():
    q = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = BalancedOptimizer([q], lr=0.1, cautious=True, max_grad_norm=None, cautious_max_scale=2.0)
    q.grad = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # mask mean 1/4 -> scale 4
    opt.step()
    u = 0.1 * 1.0 / (1.0 + EPS)  # lr * mhat / (sqrt(vhat) + eps) with mhat = vhat = 1
    assert q[0].item() == pytest.approx(-2.0 * u, rel=1e-12)


@pytest.mark.parametrize("cautious", [True, False])
def test_foreach_and_loop_paths_agree(cautious):
    k = 3
    batches = make_batches(k, 8)
    runs = []
    for foreach in (False, True):
        model = make_model(k)
        opt = BalancedOptimizer(model.parameters(), lr=1e-2, n_tasks=k, cautious=cautious,
                                weight_decay=1e-3, cautious_max_scale=50.0, foreach=foreach)
        balanced_run(model, opt, batches, "same-batch")
        runs.append((list(model.parameters()), opt.logits))
    (pa, la), (pb, lb) = runs
    for p, q in zip(pa, pb):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(la, lb, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------- clipping / skipping
def test_clipping_matches_clip_grad_norm_and_reports_pre_clip_norm():
    k = 2
    batches = make_batches(k, 5)
    ref, model = make_model(k), make_model(k)
    adam = torch.optim.Adam(ref.parameters(), lr=1e-2)
    opt = BalancedOptimizer(model.parameters(), lr=1e-2, n_tasks=k, cautious=False,
                            max_grad_norm=0.05)
    for x, y in batches:
        for net, is_ref in ((ref, True), (model, False)):
            loss = task_losses(net, x, y).sum()
            (adam if is_ref else opt).zero_grad()
            loss.backward()
            if is_ref:
                ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.05).item()
                adam.step()
            else:
                assert opt.step()
        assert ref_norm > 0.05  # clipping was active
        assert opt.last_grad_norm == pytest.approx(ref_norm, rel=1e-12)
        total = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())).item()
        assert total == pytest.approx(0.05, rel=1e-5)  # grads clipped in place
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def _one_good_step(opt, model, x, y):
    loss = opt.weighted_loss(task_losses(model, x, y))
    opt.zero_grad()
    loss.backward()
    assert opt.step()
    with torch.no_grad():
        assert opt.update_weights(task_losses(model, x, y))


def test_non_finite_gradient_skips_step_and_logit_update():
    model = make_model(2)
    opt = BalancedOptimizer(model.parameters(), lr=1e-2)
    (x, y), = make_batches(2, 1)
    _one_good_step(opt, model, x, y)
    params = [p.detach().clone() for p in model.parameters()]
    moments = [opt.state[p]["exp_avg"].clone() for p in model.parameters()]
    logits = opt.logits

    loss = opt.weighted_loss(task_losses(model, x, y))
    opt.zero_grad()
    loss.backward()
    next(model.parameters()).grad[0, 0] = float("nan")
    assert opt.step() is False
    assert opt.skipped_steps == 1 and math.isnan(opt.last_grad_norm)
    assert all(torch.equal(a, b.detach()) for a, b in zip(params, model.parameters()))
    assert all(torch.equal(a, opt.state[p]["exp_avg"]) for a, p in zip(moments, model.parameters()))
    assert all(opt.state[p]["step"] == 1 for p in model.parameters())
    with torch.no_grad():
        assert opt.update_weights(task_losses(model, x, y)) is False
    assert torch.equal(opt.logits, logits) and opt.skipped_weight_updates == 1
    _one_good_step(opt, model, x, y)  # training goes on normally
    assert opt.num_steps == 2


def test_non_finite_losses_skip_network_and_logit_updates():
    model = make_model(2)
    opt = BalancedOptimizer(model.parameters(), lr=1e-2)
    (x, y), = make_batches(2, 1)
    params = [p.detach().clone() for p in model.parameters()]
    L = task_losses(model, x, y) * torch.tensor([float("nan"), 1.0], dtype=torch.float64)
    loss = opt.weighted_loss(L)
    assert not torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    assert opt.step() is False and opt.skipped_steps == 1
    assert all(torch.equal(a, b.detach()) for a, b in zip(params, model.parameters()))

    # a good step followed by a non-finite L': logits untouched, counted
    loss = opt.weighted_loss(task_losses(model, x, y))
    opt.zero_grad()
    loss.backward()
    assert opt.step()
    logits = opt.logits
    assert opt.update_weights(torch.tensor([float("inf"), 1.0])) is False
    assert torch.equal(opt.logits, logits)
    assert opt.skipped_weight_updates == 1 and opt.num_weight_updates == 0


def test_next_batch_mode_skips_pending_update_on_non_finite_losses():
    model = make_model(2)
    opt = BalancedOptimizer(model.parameters(), lr=1e-2, balanced_update="next-batch")
    (x, y), = make_batches(2, 1)
    loss = opt.weighted_loss(task_losses(model, x, y))
    opt.zero_grad()
    loss.backward()
    opt.step()
    logits = opt.logits
    bad = task_losses(model, x, y) * torch.tensor([1.0, float("nan")], dtype=torch.float64)
    opt.weighted_loss(bad)
    assert torch.equal(opt.logits, logits) and opt.skipped_weight_updates == 1


def test_zero_length_or_wrong_length_losses_raise_config_error():
    opt = BalancedOptimizer(make_model(3).parameters(), n_tasks=3)
    for bad in (torch.ones(2), torch.ones(4), torch.ones(3, 1), torch.ones(())):
        with pytest.raises(ConfigError, match="expected 3 task losses"):
            opt.weighted_loss(bad)
    opt.weighted_loss(torch.ones(3))
    with pytest.raises(ConfigError, match="expected 3 task losses"):
        opt.update_weights(torch.ones(2))
    qp = BalancedOptimizer(make_model(3).parameters(), n_tasks=3, method="qp")
    with pytest.raises(ConfigError, match="expected 3 task losses"):
        qp.qp_step(torch.ones(5, requires_grad=True))


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs,word",
    [
        (dict(n_tasks=1), "n_tasks"),
        (dict(n_tasks=0), "n_tasks"),
        (dict(n_tasks=2.0), "n_tasks"),
        (dict(w_lr=0.0), "w_lr"),
        (dict(w_lr=-0.1), "w_lr"),
        (dict(gamma=-0.001), "gamma"),
        (dict(gamma=[0.1]), "gamma"),
        (dict(gamma=[0.1, -0.1]), "gamma"),
        (dict(gamma=float("nan")), "gamma"),
        (dict(lr=0.0), "lr"),
        (dict(lr=-1e-4), "lr"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(method="sgd"), "method"),
        (dict(balanced_update="later"), "balanced_update"),
        (dict(betas=(1.0, 0.9)), "betas"),
        (dict(min_losses=[0.0, 0.0, 0.0]), "min_losses"),
        (dict(qp_ridge=-1.0), "qp_ridge"),
    ],
)
def test_bad_arguments_raise_one_line_config_error(kwargs, word):
    with pytest.raises(ConfigError) as info:
        BalancedOptimizer(make_model(2).parameters(), **kwargs)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert word in msg and "\n" not in msg and ":" in msg  # problem: fix


def test_property_setters_validate():
    opt = BalancedOptimizer(make_model(2).parameters())
    with pytest.raises(ConfigError, match="gamma"):
        opt.gamma = -1.0
    with pytest.raises(ConfigError, match="gamma"):
        opt.gamma = [0.1, 0.2, 0.3]
    with pytest.raises(ConfigError, match="w_lr"):
        opt.w_lr = 0
    assert opt.gamma == 0.003 and opt.w_lr == 0.025  # unchanged after the errors


def test_method_specific_calls_raise_config_error():
    traj = BalancedOptimizer(make_model(2).parameters())
    with pytest.raises(ConfigError, match="qp_step"):
        traj.qp_step(torch.ones(2, requires_grad=True))
    qp = BalancedOptimizer(make_model(2).parameters(), method="qp")
    with pytest.raises(ConfigError, match="weighted_loss"):
        qp.weighted_loss(torch.ones(2))
    with pytest.raises(ConfigError, match="graph"):
        qp.qp_step(torch.ones(2))


# ---------------------------------------------------------------------------- properties
def test_task_weights_gamma_and_w_lr_properties():
    model = make_model(5)
    opt = BalancedOptimizer(model.parameters(), n_tasks=5, w_lr=0.1)
    assert torch.equal(opt.task_weights, torch.full((5,), 0.2, dtype=torch.float64))
    for x, y in make_batches(5, 3):
        _one_good_step(opt, model, x, y)
    tw = opt.task_weights
    assert tw.shape == (5,) and not tw.requires_grad
    assert tw.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert not torch.allclose(tw, torch.full((5,), 0.2, dtype=torch.float64))

    assert opt.gamma == 0.003
    opt.gamma = 0.001
    assert opt.gamma == 0.001 and isinstance(opt.gamma, float)
    opt.gamma = [0.1, 0.0, 0.2, 0.3, 0.4]
    assert opt.gamma == [0.1, 0.0, 0.2, 0.3, 0.4]
    opt.gamma = (0.1, 0.1, 0.1, 0.1, 0.1)
    assert opt.gamma == (0.1, 0.1, 0.1, 0.1, 0.1)
    opt.w_lr = 0.5
    assert opt.w_lr == 0.5


def test_losses_as_sequence_and_call_order():
    model = make_model(2)
    opt = BalancedOptimizer(model.parameters())
    (x, y), = make_batches(2, 1)
    with pytest.raises(RuntimeError, match="before weighted_loss"):
        opt.update_weights(torch.ones(2))
    L = task_losses(model, x, y)
    a = opt.weighted_loss([L[0], L[1]])
    b = opt.weighted_loss(L)
    assert a.requires_grad and torch.equal(a, b)
    # update_weights without a step in between: nothing is due, logits untouched
    assert opt.update_weights(L.detach()) is False and torch.equal(opt.logits, torch.zeros(2,
                                                                       dtype=torch.float64))


def test_lr_schedulers_drive_param_group_lr_not_w_lr():
    model = make_model(2)
    opt = BalancedOptimizer(model.parameters(), lr=1e-3, w_lr=0.025)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2], gamma=0.1)
    (x, y), = make_batches(2, 1)
    for _ in range(3):
        _one_good_step(opt, model, x, y)
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert opt.w_lr == 0.025

    opt2 = BalancedOptimizer(make_model(2).parameters(), lr=1e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2, factor=0.5, patience=0)
    for metric in (1.0, 2.0, 3.0):
        plateau.step(metric)
    assert opt2.param_groups[0]["lr"] == pytest.approx(2.5e-4)


# ---------------------------------------------------------------------------- resume
def _train(model, opt, batches, method, mode):
    for x, y in batches:
        L = task_losses(model, x, y)
        opt.zero_grad()
        if method == "qp":
            opt.qp_step(L)
            continue
        opt.weighted_loss(L).backward()
        opt.step()
        if mode == "same-batch":
            with torch.no_grad():
                opt.update_weights(task_losses(model, x, y))


@pytest.mark.parametrize("method,mode", [("trajectory", "same-batch"),
                                         ("trajectory", "next-batch"), ("qp", "same-batch")])
def test_state_dict_round_trip_continues_bit_identically(method, mode):
    k = 3
    batches = make_batches(k, 12, dtype=torch.float32)
    kw = dict(lr=1e-2, n_tasks=k, w_lr=0.05, method=method, balanced_update=mode,
              max_grad_norm=0.5)
    model_a = make_model(k, dtype=torch.float32)
    opt_a = BalancedOptimizer(model_a.parameters(), **kw)
    _train(model_a, opt_a, batches[:6], method, mode)
    opt_a.gamma = [0.001, 0.002, 0.004]
    buf = io.BytesIO()
    torch.save({"model": model_a.state_dict(), "opt": opt_a.state_dict()}, buf)
    _train(model_a, opt_a, batches[6:], method, mode)

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model_b = make_model(k, seed=123, dtype=torch.float32)
    model_b.load_state_dict(ckpt["model"])
    opt_b = BalancedOptimizer(model_b.parameters(), **{**kw, "w_lr": 0.9})
    opt_b.load_state_dict(ckpt["opt"])
    assert opt_b.gamma == [0.001, 0.002, 0.004] and opt_b.w_lr == 0.05
    _train(model_b, opt_b, batches[6:], method, mode)

    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(opt_a.logits, opt_b.logits)
    assert torch.equal(opt_a.task_weights, opt_b.task_weights)
    for attr in ("num_steps", "skipped_steps", "num_weight_updates", "skipped_weight_updates",
                 "last_grad_norm"):
        assert getattr(opt_a, attr) == getattr(opt_b, attr), attr
    if method == "trajectory":
        assert opt_a.num_weight_updates == (12 if mode == "same-batch" else 11)
        assert not torch.equal(opt_a.logits, torch.zeros(k))


def test_load_state_dict_rejects_incompatible_state():
    opt = BalancedOptimizer(make_model(2).parameters(), n_tasks=2)
    other = BalancedOptimizer(make_model(3).parameters(), n_tasks=3)
    with pytest.raises(CheckpointError, match="n_tasks"):
        opt.load_state_dict(other.state_dict())
    adam = torch.optim.Adam(make_model(2).parameters())
    with pytest.raises(CheckpointError, match="balanced"):
        opt.load_state_dict(adam.state_dict())


# ---------------------------------------------------------------------------- QP
def test_qp_weights_for_orthogonal_gradients():
    a, b = 3.0, 0.5
    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = BalancedOptimizer([theta], lr=1e-3, method="qp", min_losses=0.0, qp_ridge=0.0,
                            cautious=False, max_grad_norm=None)
    # log L1 = a*theta0, log L2 = b*theta1: orthogonal gradients of norms a and b
    L = torch.stack([torch.exp(a * theta[0]), torch.exp(b * theta[1])])
    assert opt.qp_step(L) is True
    w = opt.task_weights
    expected = torch.tensor([b**2 / (a**2 + b**2), a**2 / (a**2 + b**2)], dtype=torch.float64)
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=0)
    # the step direction is sum_i w_i g_i (g_i of log D_i, D = L + 1e-8 = 1 + 1e-8 here)
    r = 1.0 / (1.0 + 1e-8)
    torch.testing.assert_close(theta.grad, torch.tensor([w[0] * a * r, w[1] * b * r],
                                                        dtype=torch.float64), rtol=1e-12, atol=0)
    assert theta[0].item() < 0 and theta[1].item() < 0  # both losses decrease
    # closed form directly
    q = torch.diag(torch.tensor([a**2, b**2], dtype=torch.float64))
    torch.testing.assert_close(BalancedOptimizer.qp_weights(q), expected, rtol=1e-14, atol=0)


def test_qp_direction_decreases_every_log_loss_equally():
    g = torch.Generator().manual_seed(3)
    G = torch.randn(3, 10, generator=g, dtype=torch.float64)  # 3 task gradients
    w = BalancedOptimizer.qp_weights(G @ G.T)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-14)
    d = w @ G
    inner = G @ d  # g_i . d, equal for all i (the balanced property)
    torch.testing.assert_close(inner, inner.mean().expand(3), rtol=1e-10, atol=0)
    assert inner.min() > 0
    # degenerate Q: identical gradients -> uniform; opposite gradients -> uniform; zero -> uniform
    g1 = G[:1]
    for GG in (torch.cat([g1, g1]), torch.cat([g1, -g1]), torch.zeros(2, 10, dtype=torch.float64)):
        torch.testing.assert_close(BalancedOptimizer.qp_weights(GG @ GG.T),
                                   torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert BalancedOptimizer.qp_weights(torch.full((2, 2), float("nan"))) is None


def test_qp_step_hierarchical_k5_and_non_finite_skip():
    k = 5
    model = make_model(k)
    opt = BalancedOptimizer(model.parameters(), lr=1e-2, n_tasks=k, method="qp")
    for x, y in make_batches(k, 3):
        opt.zero_grad()
        assert opt.qp_step(task_losses(model, x, y))
        assert opt.task_weights.sum().item() == pytest.approx(1.0, abs=1e-9)
    params = [p.detach().clone() for p in model.parameters()]
    (x, y), = make_batches(k, 1, seed=9)
    bad = task_losses(model, x, y) * torch.tensor([1, 1, float("inf"), 1, 1], dtype=torch.float64)
    assert opt.qp_step(bad) is False
    assert opt.skipped_steps == 1 and opt.num_steps == 3
    assert all(torch.equal(a, b.detach()) for a, b in zip(params, model.parameters()))
