"""HyperparameterAnalyzer: run readers (W&B offline/synced, run.json), tables, figures, report, CLI.

Real W&B offline runs are written once per module by wandb itself (in a subprocess, a few
seconds); lictrain runs are written directly as run.json/metrics.jsonl, so the tests stay fast.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lictrain.analysis.analyzer import HyperparameterAnalyzer, bd_rate_table, pareto_table, rd_table
from lictrain.analysis.readers import (encode_wandb_log, iter_wandb_log, read_wandb_offline, read_wandb_synced,
                                       record_type, scan_runs)
from lictrain.checkpoint.lock import LOCK_NAME, RunDirLock
from lictrain.cli.main import main
from lictrain.errors import DataError
from lictrain.tracking.records import effective_status

os.environ.setdefault("WANDB_SILENT", "true")
PNG = b"\x89PNG\r\n\x1a\n"

WANDB_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["WANDB_SILENT"] = "true"
    import wandb
    root = sys.argv[1]
    def one(sub, run_id, config, exit_code, epochs=3, psnr0=30.0, summary=None):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
        run = wandb.init(project="t", dir=os.path.join(root, sub), mode="offline", id=run_id, config=config,
                         reinit="finish_previous")
        for e in range(epochs):
            row = {"loss": 2.0 / (e + 1), "bpp": 0.3 + 0.01 * e, "psnr": psnr0 + e, "weight/rate": 0.5, "gamma": 0.0029}
            if e == 0:
                row["first_only"] = 7  # logged once, early: must survive in the summary
            run.log(row, step=e)
        for k, v in (summary or {}).items():
            run.summary[k] = v
        run.finish(exit_code=exit_code)
    one("good", "goodrun1", {"lambda": 0.0035, "gamma": 0.003, "w_lr": 0.025, "use_balanced": True,
                             "nested": {"a": 1, "b": {"c": 2}}}, 0, summary={"best_loss": 0.5})
    one("bad", "badrun01", {"lambda": 0.0035, "gamma": 0.006, "w_lr": 0.01, "use_balanced": True}, 1, epochs=1)
    one("mine/wandb_home", "mergerun", {"lambda": 0.0067, "gamma": 0.001, "w_lr": 0.05, "use_balanced": True,
                                        "extra_setting": "from-wandb"}, 0, psnr0=20.0)
""")


@pytest.fixture(scope="module")
def wandb_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real offline runs written by wandb: finished (nested config), failed, one to merge."""
    root = tmp_path_factory.mktemp("wandb_runs")
    subprocess.run([sys.executable, "-c", WANDB_SCRIPT, str(root)], check=True, timeout=180,
                   env={**os.environ, "WANDB_SILENT": "true"})
    return root


def wandb_file(root: Path, sub: str) -> Path:
    files = list((root / sub).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return files[0]


def renamed(data: bytes, old: str, new: str) -> bytes:
    """A copy of a .wandb log with another run id (same length), re-framed with valid checksums."""
    return encode_wandb_log([p.replace(old.encode(), new.encode()) for p in iter_wandb_log(data)])


def write_run(run_dir: Path, config: dict[str, Any], summary: dict[str, Any], status: str = "finished",
              wandb_run_id: str | None = None) -> Path:
    """A lictrain run directory as fit() leaves it (run.json + metrics.jsonl)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"model": "bmshj2018-factorized", "lmbda": 0.0035, "gamma": 0.003, "w_lr": 0.025, "use_balanced": True,
           "epochs": 2, "seed": 0, **config}
    (run_dir / "run.json").write_text(json.dumps({"config": cfg, "status": status, "summary": summary,
                                                  "wandb_run_id": wandb_run_id}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 0, **summary}) + "\n")
    return run_dir


def sweep_folder(root: Path) -> Path:
    """A 3x2 gamma/w_lr grid at 2 λ plus standard runs, one failed and one NaN run."""
    for lam in (0.0018, 0.0035):
        for gamma in (0.001, 0.003, 0.006):
            for w_lr in (0.01, 0.025):
                psnr = 28 + 1000 * lam + 100 * gamma - 20 * abs(w_lr - 0.025)
                write_run(root / f"l{lam}-g{gamma}-w{w_lr}", {"lmbda": lam, "gamma": gamma, "w_lr": w_lr},
                          {"psnr": psnr, "bpp": 100 * lam, "loss": 1.0 - gamma, "ms_ssim": 0.9})
        write_run(root / f"standard-l{lam}", {"lmbda": lam, "use_balanced": False},
                  {"psnr": 28 + 1000 * lam - 0.5, "bpp": 100 * lam * 1.1, "loss": 1.2})
    write_run(root / "failed", {"lmbda": 0.0035, "gamma": 0.1}, {"psnr": 99.0, "bpp": 0.1}, status="failed")
    write_run(root / "nan", {"lmbda": 0.0035, "gamma": 0.05}, {"psnr": float("nan"), "bpp": 0.1})
    write_run(root / "running", {"lmbda": 0.0035, "gamma": 0.07}, {"psnr": 98.0, "bpp": 0.1}, status="running")
    return root


# --------------------------------------------------------------------------- W&B offline logs
def test_wandb_framing_round_trips_byte_for_byte(wandb_runs: Path) -> None:
    data = wandb_file(wandb_runs, "good").read_bytes()
    records = list(iter_wandb_log(data))
    assert len(records) > 5 and encode_wandb_log(records) == data
    big = [b"x" * 70_000, b"y", b"z" * 32_760, b""]  # records split over 32 KiB blocks
    assert list(iter_wandb_log(encode_wandb_log(big))) == big


def test_offline_run_config_summary_exit_and_history(wandb_runs: Path) -> None:
    run = read_wandb_offline(wandb_file(wandb_runs, "good"), history=True)
    assert run.run_id == "goodrun1" and run.state == "finished" and run.exit_code == 0
    assert run.config["lambda"] == 0.0035 and run.config["use_balanced"] is True
    assert run.config["nested.a"] == 1 and run.config["nested.b.c"] == 2  # nested keys flattened
    assert run.summary["psnr"] == 32 and run.summary["loss"] == pytest.approx(2 / 3)  # last values
    assert run.summary["best_loss"] == 0.5 and run.summary["weight/rate"] == 0.5 and run.summary["first_only"] == 7
    assert not any(k.startswith("_") for k in run.summary)
    assert [row["psnr"] for row in run.history] == [30, 31, 32]
    exact = read_wandb_offline(wandb_file(wandb_runs, "good"), exact=True)  # protobuf for every record
    assert exact.summary == run.summary and exact.config == run.config
    failed = read_wandb_offline(wandb_file(wandb_runs, "bad"))
    assert failed.state == "failed" and failed.exit_code == 1


def test_corrupt_and_truncated_logs_warn_and_the_rest_is_read(wandb_runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(wandb_runs / "good", root / "good", symlinks=True)
    data = wandb_file(wandb_runs, "good").read_bytes()
    garbage = root / "garbage" / "wandb" / "offline-run-20250101_000000-garbage1" / "run-garbage1.wandb"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not a wandb file at all")
    cut = root / "cut" / "wandb" / "offline-run-20250101_000000-cutrun01" / "run-cutrun01.wandb"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(renamed(data, "goodrun1", "cutrun01")[: len(data) // 2])
    payloads = list(iter_wandb_log(renamed(data, "goodrun1", "fliprun1")))
    last_summary = max(k for k, p in enumerate(payloads) if record_type(p)[0] == 3)
    flipped = bytearray(encode_wandb_log(payloads))
    flipped[len(encode_wandb_log(payloads[:last_summary])) + 7 + 4] ^= 0xFF  # damage the last summary record
    damaged = root / "flip" / "wandb" / "offline-run-20250101_000000-fliprun1" / "run-fliprun1.wandb"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(bytes(flipped))
    runs, warnings = scan_runs(root)
    ids = {r.run_id: r for r in runs}
    assert set(ids) == {"goodrun1", "cutrun01", "fliprun1"}
    assert ids["cutrun01"].state == "running"  # killed mid-write: read up to the cut, no exit record
    assert any("garbage1" in w and "skipped" in w for w in warnings)
    assert any("fliprun1" in w and "kept the records before it" in w for w in warnings)
    assert ids["fliprun1"].config["lambda"] == 0.0035


def test_synced_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "wandb" / "run-20250101_120000-sync1234"
    (run_dir / "files").mkdir(parents=True)
    (run_dir / "files" / "config.yaml").write_text(textwrap.dedent("""
        _wandb:
          value:
            cli_version: 0.31.0
        lambda:
          desc: null
          value: 0.013
        gamma:
          value: 0.006
        w_lr:
          value: 0.05
        opts:
          value:
            depth: 3
    """))
    (run_dir / "files" / "wandb-summary.json").write_text(json.dumps(
        {"psnr": 31.5, "bpp": 0.8, "_runtime": 12, "_wandb": {"runtime": 12}, "weights": {"d": 0.4}}))
    run = read_wandb_synced(run_dir)
    assert run.run_id == "sync1234" and run.state == "finished"
    assert run.config == {"lambda": 0.013, "gamma": 0.006, "w_lr": 0.05, "opts.depth": 3}
    assert run.summary == {"psnr": 31.5, "bpp": 0.8, "weights.d": 0.4}
    df = HyperparameterAnalyzer(tmp_path).load_results()
    assert len(df) == 1 and df.loc[0, "source"] == "wandb-synced" and df.loc[0, "psnr"] == 31.5


def test_lictrain_run_and_its_wandb_run_are_one_row(wandb_runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    mine = root / "mine"
    shutil.copytree(wandb_runs / "mine" / "wandb_home", mine, symlinks=True)  # wandb/ inside the run dir
    write_run(mine, {"lmbda": 0.0067, "gamma": 0.001, "w_lr": 0.05}, {"psnr": 25.0, "bpp": 0.5, "loss": 1.0},
              wandb_run_id="mergerun")
    shutil.copytree(wandb_runs / "good", root / "other", symlinks=True)
    assert (mine / "wandb" / "latest-run").is_symlink()  # W&B's link: must not count twice
    df = HyperparameterAnalyzer(root).load_results()
    assert len(df) == 2
    row = df[df["run_id"] == "mergerun"].iloc[0]
    assert row["source"] == "run.json+wandb-offline" and row["path"] == str(mine)
    assert row["psnr"] == 25.0  # run.json wins
    assert row["extra_setting"] == "from-wandb" and row["summary/gamma"] == pytest.approx(0.0029)  # gaps filled
    assert row["lambda"] == 0.0067 and "lmbda" not in df.columns


def test_crashed_run_is_failed_when_its_lock_owner_is_dead(tmp_path: Path) -> None:
    import socket

    run = write_run(tmp_path / "crashed", {}, {"psnr": 30.0, "bpp": 0.3}, status="running")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (run / ".lictrain.lock").write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname()}))
    df = HyperparameterAnalyzer(tmp_path).load_results()
    assert df.loc[0, "state"] == "failed" and df.loc[0, "status"] == "crashed"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_effective_status_of_a_running_record(tmp_path: Path) -> None:
    import socket

    run = write_run(tmp_path / "run", {}, {}, status="running")
    record = json.loads((run / "run.json").read_text())
    assert effective_status(run, record) == "crashed"  # no lock file: nobody runs it
    with RunDirLock(run):
        assert effective_status(run, record) == "running"  # held by this (live) process
    lock = run / LOCK_NAME
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": 0.0}))
    assert effective_status(run, record) == "crashed"  # a dead pid, not flocked
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    assert effective_status(run, record) == "crashed"  # a live pid (reused) that holds no flock
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": "another-machine"}))
    assert effective_status(run, record) == "running"  # cannot be checked from here: assumed alive
    lock.unlink()
    for status in ("finished", "failed", "interrupted", "stopped"):
        assert effective_status(run, {**record, "status": status}) == status
    (run / "run.json").write_text(json.dumps({**record, "status": "finished"}))
    assert effective_status(run, record) == "finished"  # ended after record was read: not a crash


def test_crashed_trial_is_resumed_like_an_interrupted_one(tmp_path: Path) -> None:
    from lictrain.search.trial import trial_status

    run = write_run(tmp_path / "trial", {}, {}, status="running")
    assert trial_status(run) == "interrupted"
    with RunDirLock(run):
        assert trial_status(run) == "running"


def test_missing_or_empty_folder_is_a_data_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DataError, match="does not exist"):
        HyperparameterAnalyzer(tmp_path / "nope").load_results()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no runs found"):
        HyperparameterAnalyzer(tmp_path / "empty").load_results()
    for target in ("nope", "empty"):
        assert main(["analyze", str(tmp_path / target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lictrain analyze: error:")


# --------------------------------------------------------------------------- tables
def test_load_results_columns_and_states(tmp_path: Path) -> None:
    root = sweep_folder(tmp_path)
    with RunDirLock(root / "running"):  # a live run holds its directory's lock
        df = HyperparameterAnalyzer(root).load_results()
    assert len(df) == 17
    assert list(df.columns[:9]) == ["name", "state", "status", "run_id", "source", "path", "lambda", "gamma", "w_lr"]
    assert {"psnr", "bpp", "loss", "ms_ssim"} <= set(df.columns)
    assert df["state"].value_counts().to_dict() == {"finished": 15, "failed": 1, "running": 1}
    df = HyperparameterAnalyzer(root).load_results()  # its process gone: crashed, not running
    assert df["state"].value_counts().to_dict() == {"finished": 15, "failed": 2}
    assert df.set_index("name").loc["running", "status"] == "crashed"
    assert df["lambda"].dtype == float and df["epochs"].dtype.kind == "i"


def test_recommendations_skip_failed_running_nan_and_standard_runs(tmp_path: Path) -> None:
    analyzer = HyperparameterAnalyzer(sweep_folder(tmp_path))
    top = analyzer.recommend_parameters(top_k=3, lambda_value=0.0035)
    assert list(top.columns[:3]) == ["gamma", "w_lr", "psnr"]
    assert len(top) == 3 and top.loc[0, "gamma"] == 0.006 and top.loc[0, "w_lr"] == 0.025
    assert top["psnr"].is_monotonic_decreasing and 99.0 not in top["psnr"].tolist()
    assert any("nan" in w and "'psnr'" in w for w in analyzer.warnings)  # the NaN run is named
    every = analyzer.recommend_parameters(top_k=50)
    assert len(every) == 12 and set(every["lambda"]) == {0.0018, 0.0035}  # balanced runs of all λ
    low = analyzer.recommend_parameters(top_k=1, metric="loss", maximize=False)
    assert low.loc[0, "loss"] == pytest.approx(0.994)
    with pytest.raises(DataError, match="0.0018, 0.0035"):
        analyzer.recommend_parameters(lambda_value=0.5)
    with pytest.raises(DataError, match="no run has the metric 'lpips'"):
        analyzer.recommend_parameters(metric="lpips")


def test_heatmap_and_comparison_figures(tmp_path: Path) -> None:
    root = sweep_folder(tmp_path / "runs")
    for i, lam in enumerate((0.0067, 0.013, 0.025)):  # five λ in all: the comparison grid wraps
        write_run(root / f"extra{i}", {"lmbda": lam, "gamma": 0.003, "w_lr": 0.025}, {"psnr": 33.0 + i, "bpp": 1.0})
    analyzer = HyperparameterAnalyzer(root, output_dir=tmp_path / "figs")
    one = analyzer.plot_heatmap("gamma", "w_lr", "psnr", lambda_value=0.0035)
    assert one.parent == tmp_path / "figs" and one.read_bytes()[:8] == PNG
    comparison = analyzer.plot_comparison("gamma")
    assert comparison.name == "comparison_gamma.png" and comparison.read_bytes()[:8] == PNG
    with pytest.raises(DataError, match="parameter 'nope'"):
        analyzer.plot_comparison("nope")


def test_bd_rate_of_a_configuration_against_the_standard_runs() -> None:
    import bjontegaard as bd

    lambdas = [0.0018, 0.0035, 0.0067, 0.013]
    rows = []
    for i, lam in enumerate(lambdas):
        psnr = 28.0 + 1.5 * i
        rows.append({"name": f"s{i}", "state": "finished", "lambda": lam, "use_balanced": False, "gamma": 0.003,
                     "w_lr": 0.025, "bpp": 0.2 * 1.6 ** i, "psnr": psnr})
        rows.append({"name": f"b{i}", "state": "finished", "lambda": lam, "use_balanced": True, "gamma": 0.003,
                     "w_lr": 0.025, "bpp": 0.9 * 0.2 * 1.6 ** i, "psnr": psnr})
    df = pd.DataFrame(rows)
    rd = rd_table(df)
    assert set(rd["config"]) == {"standard", "balanced"} and len(rd) == 8
    table = bd_rate_table(rd)
    assert table.loc[0, "config"] == "balanced" and table.loc[0, "anchor"] == "standard"
    expected = bd.bd_rate([0.2 * 1.6 ** i for i in range(4)], [28 + 1.5 * i for i in range(4)],
                          [0.18 * 1.6 ** i for i in range(4)], [28 + 1.5 * i for i in range(4)], method="pchip")
    assert table.loc[0, "bd_rate_pct"] == pytest.approx(expected) and expected == pytest.approx(-10.0, abs=0.01)
    lonely = bd_rate_table(rd[rd["config"] == "balanced"])
    assert math.isnan(lonely.loc[0, "bd_rate_pct"]) and "no standard" in lonely.loc[0, "note"]


def test_pareto_front() -> None:
    df = pd.DataFrame({"name": list("abcde"), "state": "finished", "bpp": [0.1, 0.2, 0.3, 0.25, 0.4],
                       "psnr": [28.0, 30.0, 29.0, 31.0, 31.0]})
    table = pareto_table(df)
    assert table[table["pareto"]]["name"].tolist() == ["a", "b", "d"]


def test_parameter_importance(tmp_path: Path) -> None:
    analyzer = HyperparameterAnalyzer(sweep_folder(tmp_path))
    table = analyzer.parameter_importance("psnr", lambda_value=0.0035)
    # gamma/w_lr do not apply to the standard runs: the split is by use_balanced over all runs,
    # then gamma and w_lr among the balanced runs alone
    assert table["param"].iloc[0] == "use_balanced"
    assert set(table["param"].iloc[1:]) == {"gamma (balanced runs)", "w_lr (balanced runs)"}
    assert table["importance"].iloc[0] == pytest.approx(1.0)
    assert table["importance"].iloc[1:].sum() == pytest.approx(1.0)
    df = analyzer.load_results()
    standard = df[df["use_balanced"] == False]  # noqa: E712 - a pandas mask
    assert len(standard) and standard["gamma"].isna().all() and standard["w_lr"].isna().all()
    few = HyperparameterAnalyzer(tmp_path)  # same runs, but a λ with too few: a note, no table
    write_run(tmp_path / "lonely", {"lmbda": 0.5}, {"psnr": 40.0, "bpp": 2.0})
    assert few.parameter_importance("psnr", lambda_value=0.5).empty
    assert any("importance needs" in w for w in few.warnings)


# --------------------------------------------------------------------------- report and CLI
def test_analyze_cli_writes_a_markdown_report_with_every_section(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    root = sweep_folder(tmp_path / "runs")
    garbage = root / "junk" / "wandb" / "offline-run-20250101_000000-junk0001" / "run-junk0001.wandb"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"\x00" * 50)
    out = tmp_path / "report"
    assert main(["analyze", str(root), "--out", str(out), "--lambda", "0.0035"]) == 0
    captured = capsys.readouterr()
    assert "junk0001" in captured.err  # the corrupt file is named, the rest analysed
    assert captured.out.strip() == f"wrote {out / 'report.md'}"
    report = (out / "report.md").read_text()
    for section in ("Recommended settings", "gamma × w_lr", "PSNR and bpp per setting", "BD-rate", "Pareto front",
                    "Parameter importance", "All runs", "Warnings"):
        assert section in report
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert "heatmap_psnr_gamma_w_lr_lambda-0.0035.png" in figures and "rd_curves.png" in figures
    assert "pareto.png" in figures and "comparison_gamma.png" in figures and "comparison_w_lr.png" in figures
    assert all((out / "figures" / f).read_bytes()[:8] == PNG for f in figures)
    assert "![RD curve of each configuration](figures/rd_curves.png)" in report
    assert (out / "runs.csv").exists()
    bd_section = report[report.index("RD curves and BD-rate"):report.index("Pareto front (bpp")]
    assert "| balanced gamma=0.006 w_lr=0.025 | standard | 2 |" in bd_section


def test_analyze_cli_html_report(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_run(root / "a", {"gamma": 0.001}, {"psnr": 30.0, "bpp": 0.3, "loss": 1.0})
    write_run(root / "b", {"gamma": 0.003}, {"psnr": 31.0, "bpp": 0.35, "loss": 0.9})
    assert main(["analyze", str(root), "--format", "html"]) == 0
    html = (root / "analysis" / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and '<img src="figures/' in html
    assert "<td>0.003</td>" in html


def test_analyze_cli_unknown_metric_or_lambda_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = sweep_folder(tmp_path / "runs")
    assert main(["analyze", str(root), "--metric", "lpips", "--out", str(tmp_path / "o")]) == 2
    assert "no run has the metric 'lpips'" in capsys.readouterr().err
    assert main(["analyze", str(root), "--lambda", "0.9", "--out", str(tmp_path / "o")]) == 2
    assert "no run has lambda 0.9" in capsys.readouterr().err


def test_latest_run_link_and_cloned_runs_counted_once(wandb_runs: Path, tmp_path: Path) -> None:
    """Clones re-encoded with wandb's Record classes read back with their new values, once each."""
    from wandb.proto import wandb_internal_pb2 as pb

    source = wandb_file(wandb_runs, "good")
    records = [pb.Record.FromString(p) for p in iter_wandb_log(source.read_bytes())]
    for i, gamma in enumerate((0.001, 0.002, 0.004)):
        run_id = f"clone{i:03d}"
        payloads = []
        for rec in records:
            if rec.WhichOneof("record_type") == "run":
                rec = pb.Record.FromString(rec.SerializeToString())
                rec.run.run_id = run_id
                for item in rec.run.config.update:
                    if item.key == "gamma":
                        item.value_json = json.dumps(gamma)
            payloads.append(rec.SerializeToString())
        folder = tmp_path / f"t{i}" / "wandb" / f"offline-run-20250101_00000{i}-{run_id}"
        folder.mkdir(parents=True)
        (folder / f"run-{run_id}.wandb").write_bytes(encode_wandb_log(payloads))
        (folder.parent / "latest-run").symlink_to(folder.name)
    df = HyperparameterAnalyzer(tmp_path).load_results()
    assert sorted(df["gamma"]) == [0.001, 0.002, 0.004] and df["run_id"].is_unique
    assert np.allclose(df["psnr"], 32)


def test_continuous_settings_are_binned_for_heatmaps() -> None:
    from lictrain.analysis.analyzer import heatmap_tables

    rng = np.random.default_rng(0)
    n = 40
    df = pd.DataFrame({"name": [f"t{i}" for i in range(n)], "state": "finished", "lambda": 0.0035,
                       "gamma": np.exp(rng.uniform(np.log(5e-4), np.log(2e-2), n)),
                       "w_lr": np.exp(rng.uniform(np.log(5e-3), np.log(0.1), n)), "psnr": rng.normal(30, 1, n)})
    table = heatmap_tables(df, "gamma", "w_lr", "psnr")[0.0035]
    assert table.shape[0] <= 6 and table.shape[1] <= 6
    assert table.index.min() > 5e-4 and table.index.max() < 2e-2


def _lic_hpcm_balanced_run(root: Path, run_id: str, lmbda: float, gamma: float, psnr: float, bpp: float) -> None:
    """A synced W&B run as LIC-HPCM-Balanced's train.py logs it: ``lmbda``, ``test/psnr``, ``test/bpp_loss``."""
    run_dir = root / "wandb" / f"run-20250101_1200{len(list(root.glob('wandb/run-*'))):02d}-{run_id}"
    (run_dir / "files").mkdir(parents=True)
    (run_dir / "files" / "config.yaml").write_text(textwrap.dedent(f"""
        lmbda:
          value: {lmbda}
        learning_rate:
          value: 5.0e-05
        gamma:
          value: {gamma}
        w_lr:
          value: 0.025
        use_balanced:
          value: true
    """))
    (run_dir / "files" / "wandb-summary.json").write_text(json.dumps(
        {"test/psnr": psnr, "test/bpp_loss": bpp, "test/loss": bpp + 1, "test/mse_loss": 1e-3, "train/psnr": 99.0,
         "epoch": 3000}))


def test_runs_logged_by_lic_hpcm_balanced_use_lictrain_names(tmp_path: Path) -> None:
    for i, (gamma, psnr) in enumerate(((0.003, 30.0), (0.006, 30.4), (0.012, 29.8))):
        _lic_hpcm_balanced_run(tmp_path, f"lhb{i}", 0.013, gamma, psnr, 0.5 + i / 10)
    analyzer = HyperparameterAnalyzer(tmp_path)
    df = analyzer.load_results()
    assert {"lambda", "lr", "psnr", "bpp", "loss", "mse"} <= set(df.columns)
    assert "lmbda" not in df.columns and "test/psnr" not in df.columns and "train/psnr" in df.columns
    assert sorted(df["psnr"]) == [29.8, 30.0, 30.4] and set(df["lambda"]) == {0.013}
    best = analyzer.recommend_parameters(top_k=1)
    assert best.iloc[0]["gamma"] == 0.006 and best.iloc[0]["psnr"] == 30.4


@pytest.mark.parametrize("record", ['{"status": 5, "config": "x"}', '{"config": {"gamma": [1, 2]}, "summary": 3}'])
def test_malformed_run_json_is_skipped_with_a_warning(record: str, tmp_path: Path) -> None:
    write_run(tmp_path / "good", {"lmbda": 0.01, "gamma": 0.003}, {"psnr": 30.0, "bpp": 0.5})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text(record)
    analyzer = HyperparameterAnalyzer(tmp_path)
    df = analyzer.load_results()
    assert len(df) == 1 and any("bad" in w and "not a JSON object" in w for w in analyzer.warnings)


def test_analyze_defaults_to_the_metric_the_runs_optimised(tmp_path: Path) -> None:
    import pandas as pd

    from lictrain.analysis.objective import optimised_metric

    (tmp_path / "sweep.json").write_text(json.dumps({"mode": "optuna", "objective": "loss", "base_config": {}}))
    assert optimised_metric(tmp_path)[0] == "loss"
    (tmp_path / "sweep.json").write_text(json.dumps({"mode": "optuna", "objective": "bpp-psnr",
                                                     "base_config": {"metric": "ms-ssim"}}))
    assert optimised_metric(tmp_path)[0] == "ms_ssim"
    (tmp_path / "sweep.json").unlink()
    assert optimised_metric(tmp_path, pd.DataFrame({"metric": ["ms-ssim", "ms-ssim"]}))[0] == "ms_ssim"
    assert optimised_metric(tmp_path, pd.DataFrame({"metric": ["ms-ssim", "mse"]}))[0] == "psnr"
    assert optimised_metric(tmp_path)[0] == "psnr"


def test_html_report_renders_inline_markdown_and_escapes_run_text() -> None:
    from lictrain.analysis.report import inline_html

    assert inline_html("Metric: **psnr**, see `runs.csv`") == "Metric: <strong>psnr</strong>, see <code>runs.csv</code>"
    assert "<script>" not in inline_html("run <script>alert(1)</script>")  # names from folders are text
    assert "href" not in inline_html("[x](javascript:alert(1))")  # not made a link


def test_budgeted_runs_are_keyed_on_their_budget_not_their_planned_epochs() -> None:
    """Issue 23: each budgeted run became its own configuration (epochs=20, epochs=22, ...)."""
    from lictrain.analysis.analyzer import config_labels, runs_frame
    from lictrain.analysis.readers import RunData

    def run(name: str, balanced: bool, epochs: int, lam: float) -> RunData:
        config = {"model": "hpcm-tiny", "lmbda": lam, "use_balanced": balanced, "gamma": 0.003, "epochs": epochs,
                  "budget_minutes": 2.0}
        return RunData(path=Path(name), name=name, config=config, summary={"bpp": 0.3, "psnr": 28.0},
                       state="finished", status="finished", source="run.json", run_id=name)

    df = runs_frame([run("a", True, 20, 0.01), run("b", True, 22, 0.02), run("c", False, 21, 0.01),
                     run("d", False, 23, 0.02)])
    labels = config_labels(df)
    assert sorted(set(labels)) == ["balanced", "standard"]
    assert list(df["planned_epochs"]) == [20, 22, 21, 23]


def test_a_single_seed_ranking_says_it_has_no_uncertainty(tmp_path: Path) -> None:
    analyzer = HyperparameterAnalyzer(sweep_folder(tmp_path))
    top = analyzer.recommend_parameters(top_k=3, lambda_value=0.0035)
    assert list(top["runs"]) == [1, 1, 1] and top["ci95"].isna().all()
    assert any("one seed" in w and "--seeds" in w for w in analyzer.warnings)


def test_a_variable_rate_run_is_one_row_per_trained_lambda(tmp_path: Path) -> None:
    """A ``--lambdas`` run's per-rate metrics become rows at each λ, beside the fixed runs there."""
    per_rate = {"psnr@0.0018": 27.0, "bpp@0.0018": 0.2, "loss@0.0018": 0.6,
                "psnr@0.0067": 29.0, "bpp@0.0067": 0.4, "loss@0.0067": 1.1}
    write_run(tmp_path / "vr", {"lmbda": None, "lambdas": [0.0018, 0.0067], "use_balanced": False},
              {**per_rate, "psnr": 28.0, "bpp": 0.3, "loss": 0.85, "lr": 1e-4, "trained_steps": 400})
    write_run(tmp_path / "fixed", {"lmbda": 0.0018, "use_balanced": False}, {"psnr": 26.5, "bpp": 0.18, "loss": 0.7})
    df = HyperparameterAnalyzer(tmp_path).load_results().set_index("name")
    assert sorted(df.index) == ["fixed", "vr@0.0018", "vr@0.0067"]
    assert df.loc["vr@0.0067", ["lambda", "psnr", "bpp", "loss"]].tolist() == [0.0067, 29.0, 0.4, 1.1]
    assert df.loc["vr@0.0018", "summary/trained_steps" if "summary/trained_steps" in df else "trained_steps"] == 400
    assert df["variable_rate"].to_dict() == {"fixed": False, "vr@0.0018": True, "vr@0.0067": True}
    assert not any("@" in str(column) for column in df.columns)  # no psnr@0.0018 column left over
    top = HyperparameterAnalyzer(tmp_path).recommend_parameters(lambda_value=0.0018, metric="psnr")
    assert top[["variable_rate", "psnr", "name"]].values.tolist() == [[True, 27.0, "vr@0.0018"],
                                                                      [False, 26.5, "fixed"]]
