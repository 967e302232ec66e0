"""Sweeps: grid specs, grid and Optuna runs, resume, failures, pruning, dead workers.

Most tests replace ``fit`` by a stand-in that writes the same run records in milliseconds, so
the sweep logic (names, resume, failure handling, pruning, counting, retries) is tested fast;
two tests train for real (tiny crops, 2 epochs) to check the whole path end to end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shlex
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

from lictrain.cli.main import main
from lictrain.config import TrainConfig
from lictrain.errors import ConfigError, StopRun
from lictrain.search.grid import apply_params, grid_combinations, parse_grid, trial_name
from lictrain.search.study import StudySettings, open_study, run_optuna, spent_trials
from lictrain.tracking.records import RunRecord, read_metrics
from lictrain.training.fit import RunResult

os.environ.setdefault("WANDB_SILENT", "true")

TINY = ["--epochs", "2", "--patch-size", "64", "--test-patch-size", "64", "--batch-size", "2", "--test-batch-size",
        "2", "--epoch-size", "4", "--model", "bmshj2018-factorized"]


# --------------------------------------------------------------------------- a stand-in for fit()
class FakeFit:
    """Writes run.json/metrics.jsonl like fit(); metrics from the config; can fail or be interrupted."""

    def __init__(self, fail_gamma: float | None = None, interrupt_calls: tuple[int, ...] = (),
                 worse_each_call: bool = False) -> None:
        self.fail_gamma = fail_gamma
        self.interrupt_calls = interrupt_calls
        self.worse_each_call = worse_each_call
        self.calls: list[TrainConfig] = []

    def __call__(self, cfg: TrainConfig, show_progress: bool | None = None, epoch_callback: Any = None) -> RunResult:
        self.calls.append(cfg)
        run_dir = Path(cfg.save_path)
        run_dir.mkdir(parents=True, exist_ok=True)
        record = RunRecord(run_dir, cfg.to_dict(), resumed=bool(cfg.resume))
        if self.fail_gamma is not None and cfg.use_balanced and math.isclose(cfg.gamma, self.fail_gamma):
            record.finish("failed", error="RuntimeError: boom")
            raise RuntimeError("boom")
        base = 1.0 + 100 * cfg.gamma * cfg.use_balanced + (len(self.calls) if self.worse_each_call else 0)
        for epoch in range(cfg.epochs):
            loss = base / (epoch + 1)
            metrics = {"epoch": epoch, "loss": loss, "bpp": 0.1 / cfg.lmbda * 0.01 + 0.01 * epoch,
                       "psnr": 25 + 1000 * cfg.lmbda - 10 * cfg.gamma, "mse": 0.001, "ms_ssim": 0.9}
            record.log_epoch(metrics)
            if len(self.calls) in self.interrupt_calls and epoch == 0:
                record.finish("interrupted")
                return RunResult(run_dir, "interrupted", record.data["summary"])
            if epoch_callback is not None:
                try:
                    epoch_callback(epoch, metrics)
                except StopRun as stop:
                    record.finish("stopped", reason=stop.reason)
                    return RunResult(run_dir, "stopped", record.data["summary"])
        record.finish("finished", best_loss=base / cfg.epochs)
        return RunResult(run_dir, "finished", record.data["summary"])


@pytest.fixture
def fake_fit(monkeypatch: pytest.MonkeyPatch):
    def install(**kw: Any) -> FakeFit:
        fake = FakeFit(**kw)
        monkeypatch.setattr("lictrain.training.fit.fit", fake)
        return fake
    return install


def status_of(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text())["status"]


# --------------------------------------------------------------------------- specs and combinations
def test_parse_grid_lists_ranges_aliases_and_types() -> None:
    space = parse_grid(["lambda=0.0018,0.0035", "gamma=0.001:0.01:log", "w-lr=0.01:0.05", "quality=1:3",
                        "use_balanced=true,false", "model=mbt2018,bmshj2018-factorized"])
    assert list(space) == ["lmbda", "gamma", "w_lr", "quality", "use_balanced", "model"]
    assert space["lmbda"].values == (0.0018, 0.0035) and space["lmbda"].label == "lambda"
    assert space["gamma"].is_range and space["gamma"].log and space["gamma"].low == 0.001
    assert space["w_lr"].is_range and not space["w_lr"].log
    assert space["quality"].kind == "int" and space["quality"].high == 3
    assert space["use_balanced"].values == (True, False)
    assert space["model"].values == ("mbt2018", "bmshj2018-factorized")


@pytest.mark.parametrize("spec, message", [
    ("gamma", "key=v1"), ("nope=1,2", "unknown parameter"), ("save_path=a,b", "cannot be searched"),
    ("gamma=abc", "not a valid float"), ("gamma=0.01:0.001", "low < high"), ("gamma=0:0.1:log", "low > 0"),
    ("gamma=0.001:0.01:cubic", "log or linear"),
])
def test_parse_grid_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_grid([spec])


def test_parse_grid_rejects_repeated_key() -> None:
    with pytest.raises(ConfigError, match="twice"):
        parse_grid(["lambda=0.1", "lmbda=0.2"])


def test_grid_combinations_order_baseline_and_collapse() -> None:
    space = parse_grid(["lambda=0.0018,0.0035", "gamma=0.001,0.003", "w_lr=0.01,0.025"])
    combos = grid_combinations(space)
    assert len(combos) == 8
    assert combos[0] == {"lmbda": 0.0018, "gamma": 0.001, "w_lr": 0.01}
    assert combos[1] == {"lmbda": 0.0018, "gamma": 0.001, "w_lr": 0.025}  # last key fastest
    with_base = grid_combinations(space, baseline=True)
    assert with_base[-2:] == [{"lmbda": 0.0018, "use_balanced": False}, {"lmbda": 0.0035, "use_balanced": False}]
    collapsed = grid_combinations(parse_grid(["use_balanced=true,false", "gamma=0.001,0.003"]))
    assert collapsed == [{"use_balanced": True, "gamma": 0.001}, {"use_balanced": True, "gamma": 0.003},
                         {"use_balanced": False}]
    with pytest.raises(ConfigError, match="--optuna"):
        grid_combinations(parse_grid(["gamma=0.001:0.01"]))


def test_trial_names_are_stable_and_safe() -> None:
    assert trial_name({"lmbda": 0.0035, "gamma": 0.003, "w_lr": 0.025}) == "lambda0.0035-gamma0.003-w_lr0.025"
    assert trial_name({"lmbda": 0.0035, "use_balanced": False}) == "standard-lambda0.0035"
    assert "/" not in trial_name({"dataset": "a/b"})


def test_apply_params_validates_and_names_the_trial() -> None:
    base = TrainConfig(use_balanced=True)
    assert apply_params(base, {"gamma": 0.01}).gamma == 0.01
    with pytest.raises(ConfigError, match="gamma=-1"):
        apply_params(base, {"gamma": -1.0})
    standard = apply_params(TrainConfig(use_balanced=True, adaptive_gamma=True), {"use_balanced": False})
    assert not standard.use_balanced and not standard.adaptive_gamma


# --------------------------------------------------------------------------- grid sweeps (fake fit)
def test_grid_cli_runs_every_combination_records_failures_and_resumes(
        fake_fit: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fake = fake_fit(fail_gamma=0.003)
    out = tmp_path / "sweep"
    argv = ["sweep", "--grid", "lambda=0.0018,0.0035", "gamma=0.001,0.003", "--baseline", "--out", str(out),
            "--epochs", "2", "--wandb-mode", "disabled"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["lambda0.0018-gamma0.001", "lambda0.0018-gamma0.003", "lambda0.0035-gamma0.001",
                     "lambda0.0035-gamma0.003", "standard-lambda0.0018", "standard-lambda0.0035"]
    assert len(fake.calls) == 6
    assert all(c.use_balanced for c in fake.calls[:4]) and not any(c.use_balanced for c in fake.calls[4:])
    assert status_of(out / "lambda0.0018-gamma0.003") == "failed"  # recorded, and the sweep went on
    assert status_of(out / "lambda0.0035-gamma0.001") == "finished"
    assert "use_balanced" in err  # the implied flag is announced
    lines = [line for line in err.splitlines() if line.startswith("[")]
    assert len(lines) == 6 and "psnr" in lines[0] and "bpp" in lines[0] and "loss" in lines[0]
    assert any("failed" in line and "boom" in line for line in lines)
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["mode"] == "grid" and sweep["base_config"]["epochs"] == 2

    # resume: finished trials are not rerun; the failed ones are, from scratch (old folder kept aside)
    fake2 = fake_fit()
    assert main(argv) == 0
    assert sorted(trial_name_of(c) for c in fake2.calls) == ["lambda0.0018-gamma0.003", "lambda0.0035-gamma0.003"]
    assert status_of(out / "lambda0.0018-gamma0.003") == "finished"
    assert len(list((out / ".superseded").iterdir())) == 2
    fake3 = fake_fit()
    assert main(argv) == 0 and fake3.calls == []

    # other training flags on the same folder: refused, naming the difference
    assert main(argv[:-4] + ["--epochs", "3", "--wandb-mode", "disabled"]) == 2


def trial_name_of(cfg: TrainConfig) -> str:
    return Path(cfg.save_path).name


def test_grid_resumes_an_interrupted_trial_from_its_checkpoint(fake_fit: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fake_fit(interrupt_calls=(1,))
    out = tmp_path / "sweep"
    argv = ["sweep", "--grid", "gamma=0.001,0.003", "--out", str(out), "--epochs", "2", "--wandb-mode", "disabled"]
    assert main(argv) == 130  # Ctrl-C: the trial saved a resumable checkpoint, the sweep stops
    assert status_of(out / "gamma0.001") == "interrupted"
    monkeypatch.setattr("lictrain.search.trial.has_checkpoint", lambda run_dir: True)
    fake = fake_fit()
    assert main(argv) == 0
    assert fake.calls[0].resume == str(out / "gamma0.001")  # continued, not restarted
    assert fake.calls[1].resume is None


@pytest.mark.parametrize("argv, message", [
    (["sweep"], "nothing to search"),
    (["sweep", "--grid", "gamma=0.001", "--save_path", "x"], "set per trial"),
    (["sweep", "--grid", "gamma=0.001:0.01"], "range"),
    (["sweep", "--optuna", "2", "--grid", "lambda=0.001,0.002"], "fixed λ"),
    (["sweep", "--optuna", "0"], "positive"),
    (["sweep", "--grid", "gamma=-1,0.1"], "gamma"),
    (["sweep", "--grid", "quality=1,99", "--model", "bmshj2018-factorized"], "--quality 99 is not available"),
    (["sweep", "--grid", "patch_size=64,100", "--model", "bmshj2018-factorized"], "not a multiple of 16"),
])
def test_sweep_cli_errors_are_one_line_exit_2(argv: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lictrain sweep: error:") and message in err[-1]


# --------------------------------------------------------------------------- Optuna sweeps (fake fit)
def optuna_argv(out: Path, n: int, *extra: str) -> list[str]:
    return ["sweep", "--optuna", str(n), "--grid", "gamma=0.001:0.01:log", "w_lr=0.01,0.05", "--out", str(out),
            "--epochs", "4", "--wandb-mode", "disabled", *extra]


def load(out: Path, name: str | None = None) -> Any:
    import optuna

    return optuna.load_study(study_name=name or out.name, storage=f"sqlite:///{out / 'study.db'}")


def test_optuna_sweep_prunes_resumes_and_extends(fake_fit: Any, tmp_path: Path) -> None:
    from optuna.trial import TrialState

    fake_fit(worse_each_call=True)  # every trial worse than the last: the median rule prunes
    out = tmp_path / "opt"
    assert main(optuna_argv(out, 5)) == 0
    study = load(out)
    states = [t.state for t in study.trials]
    assert len(states) == 5
    assert states[:3] == [TrialState.COMPLETE] * 3  # pruning starts after 3 complete trials
    assert TrialState.PRUNED in states[3:]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED][0]
    assert status_of(Path(pruned.user_attrs["run_dir"])) == "stopped"
    assert all(0.001 <= t.params["gamma"] <= 0.01 for t in study.trials)
    assert study.user_attrs["lictrain_objective"] == "loss"

    fake = fake_fit()
    assert main(optuna_argv(out, 5)) == 0 and fake.calls == []  # complete: nothing rerun
    assert main(optuna_argv(out, 7)) == 0 and len(fake.calls) == 2  # extended by two
    assert len(load(out).trials) == 7


def test_optuna_failed_trial_is_recorded_and_the_sweep_goes_on(fake_fit: Any, tmp_path: Path) -> None:
    from optuna.trial import TrialState

    fake_fit(fail_gamma=0.001)
    out = tmp_path / "opt"
    argv = ["sweep", "--optuna", "3", "--grid", "gamma=0.001,0.005", "--out", str(out), "--epochs", "2",
            "--wandb-mode", "disabled", "--objective", "bpp-psnr", "--study", "mo"]
    assert main(argv) in (0, 1)
    study = load(out, "mo")
    assert len(study.trials) == 3 and len(study.directions) == 2
    for t in study.trials:
        if t.params["gamma"] == 0.001:
            assert t.state == TrialState.FAIL and "boom" in t.user_attrs["error"]
            assert status_of(Path(t.user_attrs["run_dir"])) == "failed"
        else:
            assert t.state == TrialState.COMPLETE and len(t.values) == 2
    # a study made for another objective is not silently reused
    assert main(argv[:-4] + ["--objective", "loss", "--study", "mo"]) == 2


def test_interrupted_optuna_trial_is_requeued_and_resumed(fake_fit: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from optuna.trial import TrialState

    fake_fit(interrupt_calls=(2,))
    out = tmp_path / "opt"
    assert main(optuna_argv(out, 3, "--no-prune")) == 130
    first = load(out).trials
    assert [t.state for t in first] == [TrialState.COMPLETE, TrialState.FAIL]
    assert first[1].user_attrs["status"] == "interrupted"
    monkeypatch.setattr("lictrain.search.trial.has_checkpoint", lambda run_dir: True)
    fake = fake_fit()
    assert main(optuna_argv(out, 3, "--no-prune")) == 0
    assert fake.calls[0].resume == first[1].user_attrs["run_dir"]  # the same run directory, resumed
    trials = load(out).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert trials[2].system_attrs["failed_trial"] == 1 and trials[2].params == first[1].params


# --------------------------------------------------------------------------- real training
def _backdate_heartbeat(study: Any, trial_id: int, age: dt.timedelta) -> None:
    """Set trial ``trial_id``'s last heartbeat to ``age`` before the storage's own clock."""
    import sqlalchemy
    from optuna.storages._rdb.models import TrialHeartbeatModel

    storage = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache wrapper
    with storage.engine.begin() as conn:
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        if isinstance(now, str):  # SQLite's CURRENT_TIMESTAMP comes back as text
            now = dt.datetime.fromisoformat(now)
        conn.execute(sqlalchemy.update(TrialHeartbeatModel).where(TrialHeartbeatModel.trial_id == trial_id)
                     .values(heartbeat=now.replace(tzinfo=None) - age))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_dead_worker_trial_is_failed_by_heartbeat_and_resumed_from_checkpoint(image_folder: Path,
                                                                            tmp_path: Path) -> None:
    """A worker killed mid-trial leaves a RUNNING trial (heartbeat stops) and a run directory with
    a checkpoint and ``status: running``; the next sweep fails it, re-queues it and resumes it."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from lictrain.training.fit import fit

    out = tmp_path / "opt"
    base = TrainConfig(dataset=str(image_folder), model="bmshj2018-factorized", patch_size=64, test_patch_size=64,
                       batch_size=2, test_batch_size=2, epoch_size=4, epochs=2, use_balanced=True,
                       wandb_mode="disabled")
    space = parse_grid(["gamma=0.001:0.01:log"])
    settings = StudySettings(n_trials=1, out=out, heartbeat=60, show_bar=False)
    study = open_study(settings, space, base)
    trial = study.ask({"gamma": FloatDistribution(0.001, 0.01, log=True)})
    run_dir = out / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    study._storage.record_heartbeat(trial._trial_id)

    def die_after_first_epoch(epoch: int, metrics: dict) -> None:
        raise StopRun("simulated kill")

    cfg = dataclasses.replace(apply_params(base, {"gamma": trial.params["gamma"]}), save_path=str(run_dir))
    fit(cfg, show_progress=False, epoch_callback=die_after_first_epoch)
    record = json.loads((run_dir / "run.json").read_text())
    record["status"] = "running"  # what a kill -9 leaves behind
    (run_dir / "run.json").write_text(json.dumps(record))
    # The worker died long ago: its last heartbeat is far older than the grace period (2 x 60 s).
    # Back-dating it, rather than sleeping past a short grace period, keeps the test free of the
    # clock: Optuna compares whole-second SQLite timestamps, so "sleep 2.2 s past a 2 s grace"
    # was stale only when the seconds happened to tick over (about half of the runs).
    _backdate_heartbeat(study, trial._trial_id, dt.timedelta(hours=1))

    summary = run_optuna(base, space, settings)
    assert summary.finished == 1
    trials = load(out, settings.study_name).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].user_attrs["run_dir"] == str(run_dir)
    assert status_of(run_dir) == "finished"
    assert [m["epoch"] for m in read_metrics(run_dir)] == [0, 1]  # epoch 0 kept, epoch 1 resumed
    assert json.loads((run_dir / "run.json").read_text()).get("resumed") == 1
    assert spent_trials(load(out, settings.study_name)) == 1


@pytest.mark.slow
def test_grid_cli_end_to_end_with_wandb(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "hparam"
    argv = ["sweep", "--grid", "gamma=0.003", "--out", str(out), "--dataset", str(image_folder), *TINY,
            "--wandb-mode", "offline"]
    assert main(argv) == 0
    run_dir = out / "gamma0.003"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["use_balanced"] is True
    # the trial's own train command (trains this trial alone), not the sweep's; the sweep's is kept beside it
    command = shlex.split(record["command"])
    assert command[:2] == ["lictrain", "train"] and "--use-balanced" in command and "launched_by" in record
    assert command[command.index("--dataset") + 1] == str(image_folder)  # gamma=0.003 is the default: no flag
    assert command[command.index("--save-path") + 1] == str(run_dir)
    assert [m["epoch"] for m in read_metrics(run_dir)] == [0, 1]
    assert len(list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    started = time.perf_counter()
    assert main(argv) == 0  # resumed: finished, nothing retrained
    assert time.perf_counter() - started < 15

    from lictrain.analysis.analyzer import HyperparameterAnalyzer

    df = HyperparameterAnalyzer(out).load_results()
    assert len(df) == 1  # run.json and its W&B run are one row
    row = df.iloc[0]
    assert row["source"] == "run.json+wandb-offline" and row["state"] == "finished"
    assert row["run_id"] == record["wandb_run_id"] and row["gamma"] == 0.003
    assert row["psnr"] == pytest.approx(record["summary"]["psnr"])


def test_an_early_stopped_trial_is_done_not_pruned(tmp_path: Path) -> None:
    """--early-stop ends a trial with status stopped: a sweep counts it finished (never reruns it);
    a pruned trial (stopped without early_stopped) stays stopped."""
    from lictrain.search.trial import trial_status

    early, pruned = tmp_path / "early", tmp_path / "pruned"
    for folder, summary in ((early, {"early_stopped": True, "reason": "early stop: ..."}),
                            (pruned, {"reason": "pruned by the median rule"})):
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps({"status": "stopped", "summary": summary}))
    assert trial_status(early) == "finished"
    assert trial_status(pruned) == "stopped"


def test_seeds_repeat_every_configuration_and_its_baseline(fake_fit: Any, tmp_path: Path) -> None:
    """`sweep --seeds 2`: each configuration (and each λ's standard baseline) once per seed; the
    analyzer then ranks configurations by their mean over seeds, with a 95% interval."""
    fake_fit()
    out = tmp_path / "sweep"
    argv = ["sweep", "--grid", "lambda=0.0018", "gamma=0.001,0.003", "--seeds", "2", "--baseline", "--out", str(out),
            "--epochs", "1", "--wandb-mode", "disabled"]
    assert main(argv) == 0
    records = [json.loads(p.read_text()) for p in out.glob("*/run.json")]
    seen = sorted((r["config"]["use_balanced"], r["config"]["gamma"] if r["config"]["use_balanced"] else None,
                   r["config"]["seed"]) for r in records)
    assert seen == [(False, None, 0), (False, None, 1), (True, 0.001, 0), (True, 0.001, 1), (True, 0.003, 0),
                    (True, 0.003, 1)]
    from lictrain import HyperparameterAnalyzer

    top = HyperparameterAnalyzer(out).recommend_parameters(top_k=5)
    assert list(top["runs"]) == [2, 2] and top["ci95"].notna().all()
    assert main(["sweep", "--grid", "gamma=0.001", "--seeds", "0", "--out", str(out)]) == 2
