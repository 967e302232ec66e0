"""Shared Optuna study on PostgreSQL: 2 concurrent sweep workers, one SIGKILLed mid-trial.

Starts a throw-away PostgreSQL server on loopback (Debian's package; ``.ci/run`` installs it
when missing), runs two ``lictrain sweep --optuna`` workers against one study, kills one with
SIGKILL while both are inside a trial, and checks that the study still completes with every
trial accounted for (the dead worker's trial failed by heartbeat and retried).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

pytestmark = pytest.mark.slow

N_TRIALS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("PostgreSQL server binaries not found: install Debian's package (apt-get install -y postgresql); "
                    ".ci/run does this")
    return found[-1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="lictrain-pg-"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run([*as_postgres, _pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_postgres, _pg_bin("pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w", "-o",
                    f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        subprocess.run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "lictrain"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/lictrain"
    finally:
        subprocess.run([*as_postgres, _pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _worker(url: str, data: Path, out: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lictrain", "sweep", "--optuna", str(N_TRIALS), "--storage", url, "--study", "ci",
           "--out", str(out), "--no-prune", "--heartbeat", "2", "--grid", "gamma=0.001:0.01:log",
           "--dataset", str(data), "--model", "bmshj2018-factorized", "--patch-size", "64", "--test-patch-size", "64",
           "--batch-size", "2", "--epoch-size", "4", "--test-batch-size", "2", "--epochs", "3",
           "--wandb-mode", "disabled"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _holds_a_trial(pid: int, out: Path) -> bool:
    """Whether process ``pid`` holds the lock of a trial directory under ``out`` (is training it)."""
    for lock in out.glob("trial-*/.lictrain.lock"):
        try:
            if f'"pid": {pid},' in lock.read_text():
                return True
        except OSError:  # released (unlinked) while we looked
            continue
    return False


def test_two_workers_one_killed_study_completes(postgres_url: str, image_folder: Path, tmp_path: Path) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = tmp_path / "sweep"
    survivor = _worker(postgres_url, image_folder, out, tmp_path / "a.log")
    victim = _worker(postgres_url, image_folder, out, tmp_path / "b.log")
    try:
        # Kill the victim while it is inside a trial: its run directory's lock names its pid. (Polling
        # the study for two RUNNING trials at once missed trials of 1-3 s: the old wait was a race.)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not _holds_a_trial(victim.pid, out):
            if victim.poll() is not None:
                pytest.fail("the victim worker ended before it ran a trial:\n" + (tmp_path / "b.log").read_text()[-2000:])
            time.sleep(0.02)
        else:
            if time.monotonic() >= deadline:
                pytest.fail("the victim worker never ran a trial:\n" + (tmp_path / "b.log").read_text()[-2000:])
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert survivor.wait(timeout=400) == 0, (tmp_path / "a.log").read_text()[-3000:]
    finally:
        for proc in (survivor, victim):
            if proc.poll() is None:
                proc.kill()

    trials = optuna.load_study(study_name="ci", storage=postgres_url).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.WAITING not in states
    assert len(done) == N_TRIALS, states
    assert failed, "the killed worker's trial is recorded as failed"
    # each failed trial was retried: some finished trial carries its number as 'failed_trial'
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    assert all(t.number in retried for t in failed), [(t.number, t.system_attrs) for t in trials]
