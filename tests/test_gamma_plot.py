"""Tests for the gamma curve data, the plot and the ``gamma-plot`` subcommand."""

from __future__ import annotations

import argparse
import math

import pytest

from lictrain.analysis.gamma_plot import gamma_curves, plot_gamma_curves, simulated_loss
from lictrain.cli import gamma_plot as cli
from lictrain.errors import ConfigError
from lictrain.schedules import STRATEGIES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- curve data
def test_all_five_by_default_with_endpoints():
    curves = gamma_curves(epochs=300)
    assert list(curves) == list(STRATEGIES)
    assert all(len(v) == 301 for v in curves.values())
    assert curves["linear"][0] == pytest.approx(0.006)
    assert curves["linear"][-1] == pytest.approx(0.001)
    assert curves["cosine"][-1] == pytest.approx(0.001)
    assert curves["hpcm"][-1] == pytest.approx(0.006 * 0.49)


def test_curves_follow_settings():
    c = gamma_curves(["step", "linear", "step"], 10, initial_gamma=1.0, final_gamma=0.5,
                     step_epochs=[3], gamma_decay=0.1)
    assert list(c) == ["step", "linear"]  # repeats dropped, order kept
    assert c["step"][:3] == [1.0] * 3 and c["step"][3] == pytest.approx(0.1)
    assert c["linear"][5] == pytest.approx(0.75)


def test_adaptive_simulated_loss_plateaus_and_cuts():
    loss = simulated_loss(3000)
    assert loss[0] == 5.0 and all(b < a for a, b in zip(loss, loss[1:]))
    c = gamma_curves(["adaptive"], 3000)["adaptive"]
    assert c[0] == 0.006 and c[-1] == 0.001  # cuts happen, floor holds
    assert all(b <= a for a, b in zip(c, c[1:]))


def test_adaptive_real_losses():
    c = gamma_curves(["adaptive"], 20, losses=[1.0] * 21, window_size=5)["adaptive"]
    assert c[4] == 0.006 and c[5] == 0.003
    with pytest.raises(ConfigError, match="losses"):
        gamma_curves(["adaptive"], 20, losses=[1.0] * 5)


@pytest.mark.parametrize(
    "args,kw",
    [
        (["bogus"], {}),
        ([], {}),
        (None, {"epochs": 0}),
        (None, {"initial_gamma": -1.0}),
        (None, {"final_gamma": 0.5}),  # above initial for linear/cosine/adaptive
        (None, {"window": 5}),
    ],
)
def test_curve_errors(args, kw):
    kw.setdefault("epochs", 10)
    with pytest.raises(ConfigError):
        gamma_curves(args, **kw)


# --------------------------------------------------------------------------- drawing
def test_plot_writes_png(tmp_path):
    out = plot_gamma_curves(gamma_curves(epochs=50), tmp_path / "sub" / "g.png",
                            notes={"adaptive": "simulated"})
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_plot_single_curve(tmp_path):
    out = plot_gamma_curves({"hpcm": [1.0, 2.0, 1.5]}, tmp_path / "one.png")
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_plot_errors(tmp_path):
    with pytest.raises(ConfigError):
        plot_gamma_curves({}, tmp_path / "x.png")
    with pytest.raises(ConfigError):
        plot_gamma_curves({"a": []}, tmp_path / "x.png")
    with pytest.raises(ConfigError):
        plot_gamma_curves({"a": [1.0, math.nan]}, tmp_path / "x.png")
    with pytest.raises(ConfigError, match=".png"):
        plot_gamma_curves({"a": [1.0]}, tmp_path / "x.jpeg")


# --------------------------------------------------------------------------- CLI
def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lictrain")
    sub = root.add_subparsers(dest="command")
    cli.add_parser(sub)
    return root


def test_cli_defaults_all_five(tmp_path, capsys):
    args = parser().parse_args(["gamma-plot", "--epochs", "60", "--out", str(tmp_path / "a.png")])
    assert args.func is cli.run and args.strategy == list(STRATEGIES)
    assert cli.run(args) == 0
    assert (tmp_path / "a.png").read_bytes().startswith(PNG_MAGIC)
    out, err = capsys.readouterr()
    assert "wrote" in out and "simulated" in err


def test_cli_underscore_and_dashed_spellings_agree():
    under = parser().parse_args(
        ["gamma-plot", "--strategy", "step", "adaptive", "--gamma_final", "0.002",
         "--step_epochs", "5", "8", "--gamma_decay", "0.25", "--adaptive_window", "7",
         "--adaptive_threshold", "0.05"]
    )
    dashed = parser().parse_args(
        ["gamma-plot", "--strategy", "step", "adaptive", "--gamma-final", "0.002",
         "--step-epochs", "5", "8", "--gamma-decay", "0.25", "--adaptive-window", "7",
         "--adaptive-threshold", "0.05"]
    )
    assert vars(under) == vars(dashed)
    assert under.gamma_final == 0.002 and under.step_epochs == [5, 8]
    assert under.adaptive_window == 7 and under.adaptive_threshold == 0.05


def test_cli_subset_no_adaptive_note(tmp_path, capsys):
    args = cli.build_parser().parse_args(
        ["--strategy", "hpcm", "--epochs", "10", "--gamma", "0.01", "--out",
         str(tmp_path / "h.png")]
    )
    assert cli.run(args) == 0
    out, err = capsys.readouterr()
    assert "hpcm 0.01->0.0049" in out and "simulated" not in err


@pytest.mark.parametrize(
    "flags",
    [
        ["--epochs", "0"],
        ["--gamma", "-0.1"],
        ["--gamma_final", "0.5"],
        ["--gamma_decay", "2"],
        ["--adaptive_window", "0"],
        ["--out", "plot.gif"],
    ],
)
def test_cli_bad_values_raise_config_error(tmp_path, flags):
    args = cli.build_parser().parse_args(flags)
    if args.out == "gamma_schedules.png":
        args.out = str(tmp_path / "x.png")
    with pytest.raises(ConfigError):
        cli.run(args)


def test_cli_unknown_strategy_is_argparse_error():
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--strategy", "exp"])
    assert exc.value.code == 2
