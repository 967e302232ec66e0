"""``--config FILE`` / ``--print-config`` and the one declaration of every train setting."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import pytest

from lictrain.cli.common import FriendlyParser
from lictrain.cli.config_file import run_record_settings
from lictrain.cli.main import main
from lictrain.cli.train import add_train_arguments
from lictrain.config import NOT_SEARCHABLE, RESUME_OVERRIDABLE, TrainConfig
from lictrain.recipes import RECIPES
from lictrain.settings import GROUPS, setting_of
from lictrain.tracking.records import read_metrics

FIXTURES = Path(__file__).parent / "fixtures"
TINY = ["--model", "bmshj2018-factorized", "--patch-size", "64", "--test-patch-size", "64", "--batch-size", "2",
        "--epoch-size", "4", "--test-batch-size", "2", "--wandb-mode", "disabled", "--no-final-eval"]


def train_parser() -> FriendlyParser:
    parser = FriendlyParser(prog="lictrain train", argument_default=argparse.SUPPRESS,
                            description="Train a learned image codec on R + λ·D. With no flags: a short CPU run of "
                                        "hpcm-tiny on the built-in photos.")
    add_train_arguments(parser)
    return parser


def printed(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["train", *argv, "--print-config"]) == 0
    return capsys.readouterr().out


#: set to 1 to rewrite the golden files after adding a flag on purpose (then review the diff)
UPDATE = os.environ.get("LICTRAIN_UPDATE_GOLDEN") == "1"


def golden(name: str, text: str) -> str:
    if UPDATE:
        (FIXTURES / name).write_text(text)
    return (FIXTURES / name).read_text()


def test_every_spelling_of_every_flag_is_kept() -> None:
    """Golden: the option strings of lictrain train and the setting each one sets. A new flag adds
    lines (LICTRAIN_UPDATE_GOLDEN=1 rewrites the file); an existing line must never change."""
    spellings = {o: a.dest for a in train_parser()._actions for o in a.option_strings}
    pinned = json.loads(golden("train_spellings.json", json.dumps(spellings, indent=1, sort_keys=True)))
    assert {o: d for o, d in spellings.items() if o in pinned} == pinned


def test_train_help_is_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Golden: ``lictrain train --help`` at 100 columns (LICTRAIN_UPDATE_GOLDEN=1 rewrites it)."""
    monkeypatch.setenv("COLUMNS", "100")
    text = train_parser().format_help()
    assert text == golden("train_help.txt", text)


def test_each_setting_is_declared_once_with_a_group_and_help() -> None:
    titles = dict(GROUPS)
    for f in dataclasses.fields(TrainConfig):
        decl = setting_of(f)
        assert decl.group in titles and decl.help, f.name
    assert set(RESUME_OVERRIDABLE) == {"epochs", "device", "num_workers", "wandb_mode", "final_eval", "early_stop",
                                       "early_stop_min_delta", "log_every", "auto_resume", "stop_signals"}
    assert {"save_path", "resume", "step_epochs"} <= set(NOT_SEARCHABLE)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for recipe in RECIPES.values():  # recipes use the same schema
        assert set(recipe.values) <= names, recipe.name


def test_print_config_is_accepted_by_config_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = printed(capsys, "--lambda", "0.013", "--use_balanced", "--adaptive_gamma", "--balanced-tasks",
                   "hierarchical", "--gamma-scale", "s1=0.01", "--lr-groups", "g_a=1e-5", "--no-final-eval",
                   "--stop-signals", "TERM", "--steps", "40", "--lr-plan", "50,20:45", "--cautious", "false")
    (tmp_path / "run.yaml").write_text(text)
    assert printed(capsys, "--config", str(tmp_path / "run.yaml")) == text
    assert "lambda: 0.013" in text and "final_eval: false" in text and "gamma_scale:\n    s1: 0.01" in text


def test_files_in_three_formats_flat_or_grouped_either_spelling(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.toml").write_text('[optimisation]\nlr = "1e-4"\nepochs = 3\n[data]\npatch-size = 64\n')
    (tmp_path / "b.json").write_text('{"learning-rate": 3e-4, "no_final_eval": true, "stop-signals": "TERM,USR1"}')
    (tmp_path / "c.yaml").write_text("model and loss:\n  lambda: 1e-2\nbatch_size: auto\nunfreeze: [g_s, g_a]\n"
                                     "lr_groups: {g_s: 1e-5}\n")
    a = printed(capsys, "--config", str(tmp_path / "a.toml"))
    assert "  lr: 0.0001\n" in a and "  epochs: 3\n" in a and "  patch_size: 64\n" in a
    b = printed(capsys, "--config", str(tmp_path / "b.json"))
    assert "  lr: 0.0003\n" in b and "final_eval: false" in b and "- SIGTERM\n  - SIGUSR1\n" in b
    c = printed(capsys, "--config", str(tmp_path / "c.yaml"))
    assert "lambda: 0.01\n" in c and "batch_size: auto" in c and "- g_s\n  - g_a" in c and "g_s: 1.0e-05" in c


def test_flags_win_over_the_file_and_the_file_over_the_recipe(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f.yaml").write_text("epochs: 7\nlambda: 0.05\n")
    out = printed(capsys, "--recipe", "hpcm", "--config", str(tmp_path / "f.yaml"), "--lambda", "0.002")
    assert "  epochs: 7\n" in out  # the file over the recipe's 3000
    assert "lambda: 0.002\n" in out  # the flag over the file
    assert "model: hpcm-base\n" in out  # the recipe where neither says


@pytest.mark.parametrize("content, message", [
    ("lamda: 0.1\n", "unknown setting 'lamda'; did you mean 'lambda'?"),
    ("epochs: many\n", "epochs: invalid literal"),
    ("- 1\n- 2\n", "expected a mapping of settings"),
    ("a: [1,\n", "not valid YAML"),
    ("optimisation:\n  gama: 0.1\n", "did you mean 'gamma'?"),
])
def test_a_bad_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                       message: str) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(tmp_path / "bad.yaml")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_missing_file_and_a_bad_value_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "nope.yaml")])
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "v.yaml").write_text("gamma_decay: 3\n")
    assert main(["train", "--config", str(tmp_path / "v.yaml"), "--print-config"]) == 2
    assert "--gamma-decay must be a number in (0, 1], got 3" in capsys.readouterr().err


def test_a_runs_own_run_json_re_runs_it(image_folder: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert main(["train", "--dataset", str(image_folder), *TINY, "--epochs", "2", "--lambda", "0.02",
                 "--save-path", str(first)]) == 0
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "run.json"), "--save-path", str(again)]) == 0
    rows = [[r["loss"], r["bpp"], r["psnr"]] for r in read_metrics(first)]
    assert rows == [[r["loss"], r["bpp"], r["psnr"]] for r in read_metrics(again)] and len(rows) == 2
    assert json.loads((again / "run.json").read_text())["config"]["lmbda"] == 0.02


def test_a_budgeted_run_json_becomes_its_steps_replay() -> None:
    record = {"status": "finished", "config": {**TrainConfig(budget_minutes=2, epochs=5).to_dict(), "save_path": "/r",
                                               "resume": "/r"},
              "summary": {"trained_steps": 57}, "lr_plan": "60,24:57", "budget": {"steps": 60}}
    settings = run_record_settings(record)
    assert (settings["steps"], settings["lr_plan"], settings["budget_minutes"], settings["epochs"]) == (
        57, "60,24:57", None, None)
    assert "save_path" not in settings and "resume" not in settings
    record.pop("lr_plan")  # no re-plan happened: the plan is the budget's first
    assert run_record_settings(record)["lr_plan"] == "60"


def test_sweep_eval_and_data_prepare_take_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lictrain.cli.main import build_parser

    (tmp_path / "s.yaml").write_text("grid: {gamma: [0.003, 0.01], lambda: [0.0035]}\nseeds: 2\nbaseline: true\n"
                                     "optimisation: {epochs: 2}\n")
    args = build_parser().parse_args(["sweep", "--config", str(tmp_path / "s.yaml"), "--seeds", "3"])
    assert args.grid == ["gamma=0.003,0.01", "lambda=0.0035"] and args.seeds == 3 and args.baseline is True
    assert args.epochs == 2
    (tmp_path / "e.toml").write_text('checkpoints = ["runs/a", "runs/b"]\nanchors = "jpeg420"\nout-dir = "x"\n')
    args = build_parser().parse_args(["eval", "--config", str(tmp_path / "e.toml")])
    assert args.checkpoints == ["runs/a", "runs/b"] and args.out_dir == "x"
    (tmp_path / "d.json").write_text('{"tile": 256, "shard-samples": 10}')
    args = build_parser().parse_args(["data", "prepare", "SRC", "OUT", "--config", str(tmp_path / "d.json")])
    assert (args.tile, args.shard_samples) == (256, 10)
