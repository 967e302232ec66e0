"""Stop only at safe points: real signals at many points of a step, exact resume, requeue with
--auto-resume, SIGTERM to a whole process group with data-loading workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from lictrain.config import TrainConfig
from lictrain.errors import ConfigError
from lictrain.tracking.records import read_metrics
from lictrain.training.fit import fit
from lictrain.training.stopping import StopSignals

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")


def small_cfg(data: Path, run: Path, **kw: Any) -> TrainConfig:
    base = dict(dataset=str(data), model="bmshj2018-factorized", patch_size=64, test_patch_size=64, batch_size=2,
                epoch_size=8, test_batch_size=2, save_path=str(run), wandb_mode="disabled", epochs=2,
                lr_schedule="cosine", final_eval=False)
    return TrainConfig(**{**base, **kw})


def epoch_rows(run: Path) -> list[tuple[float, float, float]]:
    return [(m["loss"], m["train/loss"], m["lr"]) for m in read_metrics(run)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import write_images

    root = tmp_path_factory.mktemp("stopping")
    write_images(root / "data" / "train", 4, seed=1)
    write_images(root / "data" / "test", 2, seed=2)
    return root / "data"


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[float, float, float]]:
    run = tmp_path_factory.mktemp("straight") / "run"
    assert fit(small_cfg(data, run), show_progress=False).status == "finished"
    return epoch_rows(run)


def _signal_once(sig: int = signal.SIGTERM) -> Callable[[], None]:
    fired = {"done": False}

    def fire() -> None:
        if not fired["done"]:
            fired["done"] = True
            signal.raise_signal(sig)
    return fire


# Each point arms a signal that lands at a different place inside the 3rd step (of 8, 4 per epoch),
# or while testing/saving: the run must stop between steps, and the resumed run end exactly as the
# uninterrupted one.
def _in_forward(monkeypatch: pytest.MonkeyPatch, count: dict, at: int = 3) -> None:
    from compressai.models import FactorizedPrior

    real = FactorizedPrior.forward
    fire = _signal_once()

    def forward(self, x):  # noqa: ANN001
        if self.training:
            count["n"] += 1
            if count["n"] == at:
                out = real(self, x)  # after the forward drew this step's noise
                fire()
                return out
        return real(self, x)
    monkeypatch.setattr(FactorizedPrior, "forward", forward)


def _in_adam(monkeypatch: pytest.MonkeyPatch, count: dict, which: int) -> None:
    """``which`` 1: inside the network's Adam update; 2: between the network's and the aux step."""
    real = torch.optim.Adam.step
    fire = _signal_once()

    def step(self, *args, **kwargs):  # noqa: ANN001
        count["n"] += 1
        if count["n"] == 2 * 2 + which:  # the 3rd training step's first (network) or second (aux) Adam step
            fire()
        return real(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.Adam, "step", step)


def _in_test(monkeypatch: pytest.MonkeyPatch, count: dict) -> None:
    import lictrain.training.run as run_module

    real = run_module.test_epoch
    fire = _signal_once()

    def test_epoch(*args, **kwargs):  # noqa: ANN002
        fire()  # epoch 1's test pass: the epoch is tested and saved, then the run stops
        return real(*args, **kwargs)
    monkeypatch.setattr(run_module, "test_epoch", test_epoch)


def _in_save(monkeypatch: pytest.MonkeyPatch, count: dict) -> None:
    from lictrain.checkpoint import CheckpointManager

    real = CheckpointManager.save_checkpoint
    fire = _signal_once(signal.SIGINT)

    def save(self, *args, **kwargs):  # noqa: ANN001
        fire()  # a second Ctrl-C-like signal while the epoch's checkpoint is being copied
        return real(self, *args, **kwargs)
    monkeypatch.setattr(CheckpointManager, "save_checkpoint", save)


POINTS = {
    "after-forward": _in_forward,
    "last-step-of-epoch": lambda mp, c: _in_forward(mp, c, 4),
    "inside-adam": lambda mp, c: _in_adam(mp, c, 1),
    "between-optimisers": lambda mp, c: _in_adam(mp, c, 2),
    "while-testing": _in_test,
    "while-saving": _in_save,
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(POINTS))
def test_a_signal_anywhere_stops_between_steps_and_resumes_exactly(point: str, data: Path, tmp_path: Path,
                                                                    straight: list, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        POINTS[point](patch, {"n": 0})
        result = fit(small_cfg(data, run), show_progress=False)
    assert result.status == "interrupted" and result.exit_code in (75, 130)
    from lictrain.checkpoint import load_checkpoint, resolve_checkpoint

    ckpt = load_checkpoint(resolve_checkpoint(run))
    if point.startswith("while"):
        assert ckpt["completed"] is True and ckpt["epoch"] == 0  # epoch 1 finished and saved, then stopped
    elif point == "last-step-of-epoch":  # trained to its end, not yet tested: the resumed run tests it first
        assert ckpt["completed"] is False and ckpt["batches_done"] == 4
    else:
        assert ckpt["completed"] is False and ckpt["batches_done"] == 3  # the 3rd step whole, never half
    resumed = fit(small_cfg(data, run, resume=str(run)), show_progress=False)
    assert resumed.status == "finished"
    assert epoch_rows(run) == straight


@pytest.mark.slow
def test_auto_resume_starts_then_continues_then_leaves_a_finished_run_alone(data: Path, tmp_path: Path,
                                                                            straight: list,
                                                                            interrupt_after_steps) -> None:
    run = tmp_path / "run"
    interrupt_after_steps(5, signal.SIGUSR1)
    first = fit(small_cfg(data, run, auto_resume=True), show_progress=False)  # nothing there yet: starts
    assert first.status == "interrupted" and first.exit_code == 75
    interrupt_after_steps.disarm()
    again = fit(small_cfg(data, run, auto_resume=True), show_progress=False)  # the same settings: continues
    assert again.status == "finished" and epoch_rows(run) == straight
    done = fit(small_cfg(data, run, auto_resume=True), show_progress=False)
    assert done.already_done and done.status == "finished" and epoch_rows(run) == straight


def test_auto_resume_takes_over_a_folder_left_before_its_first_checkpoint(data: Path, tmp_path: Path) -> None:
    from lictrain.training.rundir import auto_resume_action

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "running", "config": {}}))
    (run / "metrics.jsonl").write_text("")
    assert auto_resume_action(str(run)).action == "start"
    with pytest.raises(ConfigError, match="already holds a run"):  # without --auto-resume: refused, as before
        fit(small_cfg(data, run, epochs=1), show_progress=False)
    result = fit(small_cfg(data, run, epochs=1, auto_resume=True), show_progress=False)
    assert result.status == "finished" and [m["epoch"] for m in read_metrics(run)] == [0]
    with pytest.raises(ConfigError, match="--save-path"):
        auto_resume_action(None)


def test_stop_signals_set_a_flag_and_restore_the_handlers() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals(["SIGUSR1", "SIGHUP"]) as signals:
        signals.defer()  # the loop runs: signals only set the flag
        signal.raise_signal(signal.SIGUSR1)
        signal.raise_signal(signal.SIGHUP)  # a second signal while stopping: noted, never fatal
        assert signals.received == "SIGUSR1" and signals.repeats == 1
    assert signal.getsignal(signal.SIGUSR1) is before


def test_a_signal_during_setup_stops_at_once_with_nothing_saved(data: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading data or waiting for torchrun's peers can take long: a stop then must not wait for a
    first step (the scheduler kills the job when its grace period ends)."""
    import lictrain.training.run as run_module

    real = run_module.build_parts

    def slow_setup(*args: Any, **kwargs: Any) -> Any:
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("the setup went on after the signal")
    monkeypatch.setattr(run_module, "build_parts", slow_setup)
    result = fit(small_cfg(data, tmp_path / "run"), show_progress=False)
    assert result.status == "interrupted" and result.exit_code == 75
    assert not list((tmp_path / "run").glob("checkpoint_*.pt"))
    monkeypatch.setattr(run_module, "build_parts", real)
    assert fit(small_cfg(data, tmp_path / "run", epochs=1, auto_resume=True), show_progress=False).status == "finished"


def test_stop_signal_names_are_checked() -> None:
    from lictrain.config import signal_names

    assert signal_names("term,USR1, sigint,15") == ["SIGTERM", "SIGUSR1", "SIGINT"]
    for bad, message in (("KILL", "cannot be caught"), ("SIGFOO", "not a signal")):
        with pytest.raises(ConfigError, match=message):
            signal_names(bad)


# -- a real job: SIGTERM to the whole process group, data-loading workers included ----------------

def _command(data: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "lictrain", "train", "--dataset", str(data), "--model", "bmshj2018-factorized",
            "--patch-size", "64", "--test-patch-size", "64", "--batch-size", "2", "--epoch-size", "8",
            "--epochs", "2", "--num-workers", "2", "--log-every", "1", "--wandb-mode", "disabled",
            "--no-final-eval", "--save-path", str(run), "--auto-resume"]


def _steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum('"kind": "step"' in line for line in path.read_text().splitlines())


def _run_and_kill(command: list[str], run: Path, after_steps: int, sig: int) -> int:
    """Start ``command`` in its own process group; after ``after_steps`` logged steps, send ``sig``
    to the whole group twice, 20 ms apart (SLURM and a batch script's trap both forward it)."""
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _steps_logged(run) < after_steps and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    for _ in range(2):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        time.sleep(0.02)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err.decode(), err.decode()[-3000:]
    return proc.returncode


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_is_requeued_to_an_exact_end(data: Path, tmp_path: Path) -> None:
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert subprocess.run(_command(data, straight), capture_output=True, timeout=300).returncode == 0
    for steps, sig in ((3, signal.SIGTERM), (6, signal.SIGHUP)):
        assert _run_and_kill(_command(data, cut), cut, steps, sig) == 75
        record = json.loads((cut / "run.json").read_text())
        assert record["status"] == "interrupted" and record["summary"]["signal"] == signal.Signals(sig).name
        assert not [p.name for p in cut.iterdir() if p.name.startswith(".tmp-lictrain")]
    assert subprocess.run(_command(data, cut), capture_output=True, timeout=300).returncode == 0
    assert json.loads((cut / "run.json").read_text())["status"] == "finished"
    assert epoch_rows(cut) == epoch_rows(straight)
    steps = [(r["step"], r["train/loss"]) for r in read_metrics(cut, steps=True)]
    assert steps == [(r["step"], r["train/loss"]) for r in read_metrics(straight, steps=True)]


@pytest.mark.slow
def test_a_checkpoint_of_the_format_before_the_callbacks_still_resumes_exactly(data: Path, tmp_path: Path,
                                                                               straight: list,
                                                                               interrupt_after_steps) -> None:
    """lictrain 0.1 checkpoints: no ``progress``/``hooks``, early stopping under ``early_stop``, the
    LR schedule as a LambdaLR(WarmupDecay) state. They resume at their batch with the same LR."""
    from lictrain.checkpoint import load_checkpoint, resolve_checkpoint

    run = tmp_path / "run"
    interrupt_after_steps(3)
    assert fit(small_cfg(data, run), show_progress=False).status == "interrupted"
    interrupt_after_steps.disarm()
    path = resolve_checkpoint(run)
    ckpt = load_checkpoint(path)
    lr = ckpt.pop("lr_scheduler_state")
    ckpt["lr_scheduler_state"] = {"base_lrs": [1e-4], "last_epoch": 3, "_step_count": 4, "verbose": False,
                                  "_get_lr_called_within_step": False, "_last_lr": [1e-4],
                                  "lr_lambdas": [{"total_steps": lr["total_steps"], "warmup_steps": lr["warmup_steps"],
                                                  "shape": "cosine"}]}
    ckpt["early_stop"] = ckpt.pop("hooks")["selection"]
    del ckpt["progress"], ckpt["epoch_tally"], ckpt["lictrain"]
    torch.save(ckpt, path)
    (run / "checkpoint_tracking.json").unlink()  # the scan adopts the rewritten file
    assert fit(small_cfg(data, run, resume=str(run)), show_progress=False).status == "finished"
    rows = epoch_rows(run)
    assert [(loss, lr) for loss, _, lr in rows] == [(loss, lr) for loss, _, lr in straight]


def test_a_resume_keeps_the_command_that_started_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lictrain.tracking.records import RunRecord

    monkeypatch.setattr(sys, "argv", ["lictrain", "train", "--lambda", "0.01", "--save-path", "r"])
    RunRecord(tmp_path, {"model": "x"})
    monkeypatch.setattr(sys, "argv", ["lictrain", "train", "--resume", "r"])
    RunRecord(tmp_path, {"model": "x"}, resumed=True)
    monkeypatch.setattr(sys, "argv", ["lictrain", "train", "--save-path", "r", "--auto-resume"])
    record = RunRecord(tmp_path, {"model": "x"}, resumed=True).data
    assert record["command"] == "lictrain train --lambda 0.01 --save-path r"
    assert record["resume_commands"] == ["lictrain train --resume r", "lictrain train --save-path r --auto-resume"]


def test_a_resumed_run_forgets_how_the_previous_process_ended(tmp_path: Path) -> None:
    from lictrain.tracking.records import RunRecord

    first = RunRecord(tmp_path, {"model": "x"})
    first.set("signal", "SIGTERM")
    first.finish("interrupted", signal="SIGTERM", best_loss=1.0)
    again = RunRecord(tmp_path, {"model": "x"}, resumed=True).data
    assert "signal" not in again and "signal" not in again["summary"] and again["summary"]["best_loss"] == 1.0
