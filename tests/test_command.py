"""``lictrain.command``: a train command line rendered from settings parses back into them."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

import pytest

from lictrain.cli.common import FriendlyParser
from lictrain.cli.train import add_train_arguments, config_from_args
from lictrain.command import reproduce_command, train_arguments, train_command
from lictrain.config import TrainConfig


def parse(tokens: list[str]) -> TrainConfig:
    parser = FriendlyParser(prog="lictrain train", argument_default=argparse.SUPPRESS)
    add_train_arguments(parser)
    return config_from_args(parser.parse_args(tokens))


@pytest.mark.parametrize("changes", [
    {},
    {"lmbda": 0.013, "use_balanced": True, "gamma": 0.01, "w_lr": 0.05, "cautious": False, "cautious_max_scale": None,
     "adaptive_gamma": True, "gamma_strategy": "step", "step_epochs": [3, 6], "balanced_tasks": "hierarchical",
     "gamma_scales": {"s1": 0.008, "z": 0.002}},
    {"epochs": 4, "lr": 3e-4, "clip_max_norm": None, "lr_schedule": "multistep", "final_eval": False,
     "batch_size": "auto", "num_workers": 2, "stop_signals": ["SIGTERM"], "keep_best": 1, "best_weights_only": True,
     "lr_groups": {"g_a": 1e-5, "context": 5e-5}, "unfreeze": ["g_s", "context"], "patch_size": 96},
    {"steps": 80, "lr_plan": [[0, 79], [24, 82], [48, 80]], "lr": 0.002, "seed": 3, "dataset": "/data/my photos"},
    {"lambdas": [0.0018, 0.0067, 0.0483], "lmbda": None, "use_balanced": True},  # one comma-separated token
])
def test_rendered_command_parses_back_into_the_same_settings(changes: dict) -> None:
    cfg = dataclasses.replace(TrainConfig(), **changes).validate()
    tokens = shlex.split(train_command(cfg))
    assert tokens[:2] == ["lictrain", "train"]
    assert parse(tokens[2:]).to_dict() == cfg.to_dict()


def test_run_location_flags_are_left_out_unless_kept() -> None:
    cfg = TrainConfig(resume="/r", auto_resume=True, save_path="/out", recipe="hpcm")
    assert train_arguments(cfg) == []
    assert train_arguments(cfg, keep=("save_path",)) == ["--save-path", "/out"]


def test_reproduce_command_swaps_the_budget_for_steps_and_fixes_the_lr() -> None:
    cfg = TrainConfig(budget_minutes=2, epochs=7, batch_size=6, lmbda=0.0035)
    tokens = shlex.split(reproduce_command(cfg, 150, [[0, 160], [48, 150]], "/runs/a-again"))
    assert "--budget-minutes" not in tokens and "--epochs" not in tokens
    again = parse(tokens[2:])
    assert (again.steps, again.lr_plan, again.batch_size, again.save_path) == (150, [[0, 160], [48, 150]], 6,
                                                                             "/runs/a-again")
    assert again.peak_lr == cfg.peak_lr == 2e-3  # the short-budget default, resolved
