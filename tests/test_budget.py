"""``--budget-minutes``: planning epochs from measured times, and what a budgeted run records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lictrain.cli.main import main
from lictrain.config import DEFAULT_BUDGET_MINUTES, TrainConfig
from lictrain.errors import ConfigError
from lictrain.schedules.lr import FINAL_LR_FACTOR
from lictrain.tracking.records import read_metrics
from lictrain.training.budget import BudgetClock, BudgetPlan, plan_steps
from lictrain.training.fit import fit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def small_cfg(data: Path, run: Path, **kw) -> TrainConfig:
    base = dict(dataset=str(data), model="bmshj2018-factorized", patch_size=64, test_patch_size=64, batch_size=2,
                epoch_size=4, test_batch_size=2, save_path=str(run), wandb_mode="disabled", final_eval=False,
                lr_schedule="cosine", lr=1e-3)
    return TrainConfig(**{**base, **kw})


def test_plan_steps_fills_the_budget_with_a_partial_last_epoch() -> None:
    # epochs of 10 steps x 1 s + 2 s of test and checkpoint = 12 s
    assert plan_steps(36.0, 10, 1.0, 2.0) == 30  # three whole epochs
    assert plan_steps(44.0, 10, 1.0, 2.0) == 36  # + 6 steps: 8 s left less the last epoch's 2 s end
    assert plan_steps(13.0, 10, 1.0, 2.0) == 10  # 1 s left: no room for a partial epoch's test
    assert plan_steps(5.0, 10, 1.0, 2.0) == 3
    assert plan_steps(-5.0, 10, 1.0, 2.0) == 1  # the calibration ate the budget: still one step
    assert plan_steps(1000.0, 10, 1.0, 2.0, max_epochs=4) == 40
    assert plan_steps(40.0, 10, 1.0, 2.0, margin=1.25) == 26  # 15 s epochs: two, then 10 s - 2.5 s -> 6 steps


def test_clock_replans_steps_from_the_recent_pace() -> None:
    fake = FakeClock()
    clock = BudgetClock(100.0, started=0.0, reserve_seconds=2.0, step_seconds=1.0, clock=fake)
    for _ in range(10):  # one epoch of 10 steps of 1 s, then 2 s of test and checkpoint
        fake.now += 1.0
        clock.step_done()
    fake.now += 2.0
    clock.record_epoch(12.0)
    # 88 s left: 7 epochs of 12 s (84 s), then 4 s - 2 s of test -> 2 steps
    assert clock.replan_steps(10, 50, 10) == 10 + 70 + 2
    fixed = BudgetClock(100.0, started=0.0, can_grow=False, clock=fake)
    fixed.record_epoch(12.0)
    assert fixed.replan_steps(10, 50, 10) == 50


def test_plan_epoch_seconds_add_steps_test_and_checkpoint() -> None:
    plan = BudgetPlan(budget_seconds=60, calibration_seconds=5, step_seconds=0.5, test_seconds=2.0,
                      checkpoint_seconds=0.5, steps_per_epoch=10, epochs=7)
    assert plan.epoch_seconds == pytest.approx(7.5)
    assert plan.to_dict()["epoch_seconds"] == pytest.approx(7.5)
    assert "7 epochs (70 steps)" in plan.describe()


def test_clock_replans_steps_from_the_pace_kept_so_far() -> None:
    """The epoch-level re-plan's rules (ported from the removed ``BudgetClock.replan``), as
    ``replan_steps`` applies them: epochs of 10 steps, no step timed, so the step pace is the
    epoch pace over 10."""
    clock = BudgetClock(100.0, started=0.0)
    assert clock.replan_steps(10, 50, 10, now=10.0) == 50  # nothing measured yet
    clock.record_epoch(20.0)
    clock.record_epoch(10.0)  # 15 s per epoch on average, the last one 10 s
    assert clock.replan_steps(20, 30, 10, now=30.0) == 20 + 40 + 6  # 70 s left: 4 epochs of 15 s + 6 steps (grows)
    assert clock.replan_steps(20, 50, 10, now=99.0) == 20  # 1 s left: stop here
    slowed = BudgetClock(100.0, started=0.0)
    slowed.record_epoch(10.0)
    slowed.record_epoch(20.0)  # the pace halved: the last epoch's 20 s is believed, not the 15 s mean
    assert slowed.replan_steps(20, 60, 10, now=30.0) == 20 + 30 + 5
    capped = BudgetClock(100.0, started=0.0, max_epochs=3)
    capped.record_epoch(10.0)
    assert capped.replan_steps(10, 30, 10, now=10.0) == 30  # --epochs caps the plan
    fixed = BudgetClock(100.0, started=0.0, can_grow=False)
    fixed.record_epoch(10.0)
    assert fixed.replan_steps(10, 40, 10, now=10.0) == 40  # a gamma schedule: shorten only
    assert fixed.replan_steps(10, 40, 10, now=75.0) == 10 + 20 + 5


def test_clock_cuts_the_epoch_so_that_test_and_checkpoint_end_by_the_deadline() -> None:
    """Steps of 1 s, then 2 s (the pace halves): the cut comes when one more step plus the reserve
    (4 s at calibration, scaled by the slowdown) would pass the 60 s deadline."""
    fake = FakeClock()
    clock = BudgetClock(60.0, started=0.0, reserve_seconds=4.0, step_seconds=1.0, clock=fake)
    cut_at = None
    for n in range(1, 100):
        fake.now += 1.0 if n <= 30 else 2.0
        if clock.step_done():
            cut_at = fake.now
            break
    assert clock.cut
    assert clock.pace is not None and 1.9 < clock.pace <= 2.0
    reserve = clock.reserve()
    assert 7.5 < reserve <= 8.0  # 4 s of test + checkpoint at twice the calibrated step time
    assert cut_at is not None and cut_at + clock.pace + reserve > 60.0  # one more step would be late
    assert cut_at - 2.0 + clock.pace + reserve <= 60.0 + 0.5  # ... and the step before was not (EMA slack)
    assert cut_at + reserve <= 60.0 + 0.5  # the run ends by the deadline


def test_length_defaults_to_the_budget_when_neither_is_given() -> None:
    assert TrainConfig().validate().budget_minutes == DEFAULT_BUDGET_MINUTES
    assert TrainConfig(epochs=3).validate().budget_minutes is None
    with pytest.raises(ConfigError, match="--budget-minutes must be a positive number"):
        TrainConfig(budget_minutes=0).validate()
    with pytest.raises(ConfigError, match="--warmup-steps"):
        TrainConfig(warmup_steps=-1).validate()


@pytest.mark.slow
def test_budget_run_is_the_epochs_run_it_planned(image_folder: Path, tmp_path: Path) -> None:
    budgeted = fit(small_cfg(image_folder, tmp_path / "budget", budget_minutes=10, epochs=2), show_progress=False)
    record = json.loads((budgeted.run_dir / "run.json").read_text())
    plan = record["budget"]
    assert plan["epochs"] == 2 == record["config"]["epochs"]  # capped by --epochs
    assert plan["step_seconds"] > 0 and plan["test_seconds"] > 0 and plan["steps_per_epoch"] == 2
    assert plan["calibration_seconds"] > 0
    plain = fit(small_cfg(image_folder, tmp_path / "plain", epochs=2), show_progress=False)
    a, b = read_metrics(budgeted.run_dir), read_metrics(plain.run_dir)
    for key in ("loss", "bpp", "mse", "lr", "train/loss"):
        assert [m[key] for m in a] == [m[key] for m in b]  # the calibration left no trace


@pytest.mark.slow
def test_budget_run_follows_its_replan_and_the_lr_schedule_with_it(image_folder: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BudgetClock, "replan_steps", lambda self, done, planned, spe, now=None: done)  # "no time left"
    result = fit(small_cfg(image_folder, tmp_path / "stop", budget_minutes=10, epochs=3), show_progress=False)
    assert result.status == "finished"
    assert [m["epoch"] for m in read_metrics(result.run_dir)] == [0]
    assert json.loads((result.run_dir / "run.json").read_text())["budget_epochs"] == 1

    monkeypatch.setattr(BudgetClock, "replan_steps", lambda self, done, planned, spe, now=None: 6)  # "faster"
    cfg = small_cfg(image_folder, tmp_path / "grow", budget_minutes=10, epochs=3, warmup_steps=0, lr_schedule="linear")
    monkeypatch.setattr("lictrain.training.budget.plan_steps", lambda *a, **k: 4)  # 2 epochs of 2 steps
    result = fit(cfg, show_progress=False)
    lrs = [m["lr"] for m in read_metrics(result.run_dir)]
    assert len(lrs) == 3
    # the linear decay was stretched from 4 to 6 steps after epoch 1: epoch 2 starts at step 2 of 6
    assert lrs[1] == pytest.approx(1e-3 * (1 - (2 / 5) * (1 - FINAL_LR_FACTOR)))
    assert lrs[2] == pytest.approx(1e-3 * (1 - (4 / 5) * (1 - FINAL_LR_FACTOR)))


@pytest.mark.slow
def test_resumed_budget_run_keeps_its_plan(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(small_cfg(image_folder, run, budget_minutes=10, epochs=2), show_progress=False)
    planned = json.loads((run / "run.json").read_text())["budget"]
    assert main(["train", "--resume", str(run), "--epochs", "3", "--wandb-mode", "disabled"]) == 0
    record = json.loads((run / "run.json").read_text())
    assert record["budget"] == planned
    assert [m["epoch"] for m in read_metrics(run)] == [0, 1, 2]


def test_cli_rejects_a_bad_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--budget-minutes", "-3", "--save_path", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--budget-minutes must be a positive number" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("epoch_size", [400, 40])
def test_budget_holds_when_the_pace_halves_mid_run(image_folder: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, epoch_size: int,
                                                   request: pytest.FixtureRequest) -> None:
    """Steps slowed to 0.1 s, then 0.2 s after 7 s (the calibration saw unslowed steps): the run ends
    by the deadline of a 15 s budget, cutting its last epoch by steps, and the cut epoch resumes
    where it stopped. 400 crops: one epoch longer than the budget; 40: many epochs, re-planned."""
    import time

    import lictrain.training.run as fit_module
    from lictrain.checkpoint import load_checkpoint, resolve_checkpoint

    real = fit_module.train_one_epoch
    started = time.perf_counter()

    def slowed(step, *args, **kwargs):
        def slow(batch):
            outcome = step(batch)
            time.sleep(0.1 if time.perf_counter() - started < 7 else 0.2)
            return outcome
        return real(slow, *args, **kwargs)

    monkeypatch.setattr(fit_module, "train_one_epoch", slowed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: another job on the cores slows it, but no thread barrier stalls
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    budget = 15.0
    result = fit(small_cfg(image_folder, tmp_path / "r", budget_minutes=budget / 60, epoch_size=epoch_size,
                           model="bmshj2018-factorized"), show_progress=False)
    elapsed = time.perf_counter() - started
    assert result.status == "finished"
    # the contract: within max(10%, 30 s) of the budget (exact deadlines: the fake-clock tests above);
    # a quiet machine ends within about 1 s of it
    assert budget * 0.5 <= elapsed <= budget + max(0.1 * budget, 30.0), elapsed
    rows = read_metrics(result.run_dir)
    if epoch_size == 400:
        assert "budget of 0.25 min reached after batch" in result.summary["budget_cut"]
        assert 0 < rows[-1]["epoch_fraction"] < 1
        ckpt = load_checkpoint(resolve_checkpoint(result.run_dir))
        assert ckpt["completed"] is False and 0 < ckpt["batches_done"] < 200
        monkeypatch.setattr(fit_module, "train_one_epoch", real)
        resumed = fit(small_cfg(image_folder, tmp_path / "r", resume=str(tmp_path / "r"), epochs=1,
                                epoch_size=epoch_size, model="bmshj2018-factorized", budget_minutes=None),
                      show_progress=False)
        assert resumed.status == "finished"
        last = read_metrics(result.run_dir)[-1]
        assert last["epoch"] == 0 and "epoch_fraction" not in last  # the epoch was completed from its cut
        assert last["train_images_per_second"] > 0


def test_a_stalling_calibration_says_what_to_do(caplog: pytest.LogCaptureFixture) -> None:
    from lictrain.training.budget import warn_if_stalling

    with caplog.at_level("WARNING"):
        warn_if_stalling([7.0, 0.3, 0.2, 0.21, 0.2, 0.22, 0.2], torch.device("cpu"))  # a first step is no stall
        assert not caplog.records
        warn_if_stalling([0.5, 0.3, 0.2, 25.0, 0.2, 0.22, 0.2], torch.device("cpu"))
    assert "OMP_WAIT_POLICY=PASSIVE" in caplog.text and "125x the median" in caplog.text


def test_a_budgeted_run_records_the_steps_and_lr_plan_that_reproduce_it(image_folder: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock chose the length (re-planned up after epoch 0, grown by a step inside the last
    epoch, re-planned down after it): run.json's ``reproduce`` trains the same steps at the same
    LRs, so the same losses, with no budget."""
    monkeypatch.setattr("lictrain.training.budget.plan_steps", lambda *a, **k: 5)  # 2 steps per epoch
    monkeypatch.setattr(BudgetClock, "replan_steps", lambda self, done, planned, spe, now=None: 7)
    cfg = small_cfg(image_folder, tmp_path / "budget", budget_minutes=10, warmup_steps=1, lr_schedule="linear",
                    lr=None)
    result = fit(cfg, show_progress=False)
    record = json.loads((result.run_dir / "run.json").read_text())
    assert result.summary["trained_steps"] == 8
    assert record["lr_plan"] == "5,2:7,7:8,8:7"
    command = record["reproduce"].split()
    assert command[:2] == ["lictrain", "train"] and "--budget-minutes" not in command
    assert command[command.index("--steps") + 1] == "8" and command[command.index("--lr-plan") + 1] == "5,2:7,7:8,8:7"
    again = tmp_path / "budget-again"
    command[command.index("--save-path") + 1] = str(again)
    monkeypatch.undo()  # no budget machinery is involved any more
    assert main([*command[1:], "--wandb-mode", "disabled"]) == 0
    keys = ("epoch", "loss", "bpp", "psnr", "lr", "train/loss")
    first = [[row[k] for k in keys] for row in read_metrics(result.run_dir)]
    second = [[row[k] for k in keys] for row in read_metrics(again)]
    assert first == second and len(first) == 4
    assert json.loads((again / "run.json").read_text())["summary"]["trained_steps"] == 8


def test_steps_and_lr_plan_are_checked() -> None:
    with pytest.raises(ConfigError, match="pass one of them"):
        TrainConfig(steps=10, budget_minutes=1).validate()
    with pytest.raises(ConfigError, match="give --steps N too"):
        TrainConfig(epochs=2, lr_plan=[[0, 10]]).validate()
    with pytest.raises(ConfigError, match="--steps must be a positive integer"):
        TrainConfig(steps=0).validate()
    with pytest.raises(ConfigError, match="must increase"):
        TrainConfig(steps=10, lr_plan=[[0, 10], [5, 8], [5, 9]]).validate()
    cfg = TrainConfig(steps=10).validate()
    assert cfg.budget_minutes is None and cfg.epochs is None  # --steps is a length: no default budget


def test_cli_steps_flag_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--steps", "5", "--budget-minutes", "1", "--save-path", str(tmp_path / "r")]) == 2
    assert "pass one of them" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--steps", "5", "--lr-plan", "10,x:3"])
    assert exit_info.value.code == 2 and "expected T0,S1:T1" in capsys.readouterr().err


def test_slow_steps_are_named_once(caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from lictrain.training.callbacks import Budget

    plan = BudgetPlan(60.0, 1.0, 0.5, 1.0, 0.1, 10, epochs=2)
    clock = BudgetClock(60.0, started=0.0, step_seconds=0.5, clock=FakeClock())
    budget = Budget(plan, clock, 1.0)
    notes: dict = {}
    run = SimpleNamespace(outputs=SimpleNamespace(note=notes.__setitem__),
                          train_loader=SimpleNamespace(describe=lambda: "2 workers"))
    clock.pace = 1.2  # 2.4x the calibration: not named
    budget._name_slow_steps(run)
    assert not caplog.records
    clock.pace = 2.0  # 4x
    with caplog.at_level("WARNING"):
        budget._name_slow_steps(run)
        budget._name_slow_steps(run)
    assert len(caplog.records) == 1 and "4.0x the 0.50 s the calibration measured" in caplog.text
    assert notes["slow_steps"] == {"step_seconds": 2.0, "calibrated_step_seconds": 0.5}
