"""Balanced training through ``lictrain train``: the guide's integration run, modes, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lictrain.cli.main import main
from lictrain.schedules.gamma import HPCMGammaScheduler
from lictrain.schedules.lr import warmup_decay_factor
from lictrain.tracking.records import read_metrics

pytestmark = pytest.mark.slow

SMALL = ["--patch-size", "64", "--test-patch-size", "64", "--batch-size", "2", "--epoch-size", "4",
         "--test-batch-size", "2", "--wandb-mode", "disabled"]


def train(data: Path, run: Path, *argv: str) -> list[dict]:
    code = main(["train", "--dataset", str(data), *SMALL, "--save_path", str(run), *argv])
    assert code == 0
    return read_metrics(run)


def test_guide_integration_command(image_folder: Path, tmp_path: Path) -> None:
    metrics = train(image_folder, tmp_path / "test_outputs", "--epochs", "10", "--use_balanced", "--adaptive_gamma",
                    "--gamma_strategy", "hpcm")
    assert len(metrics) == 10
    expected = HPCMGammaScheduler(None, total_epochs=10, initial_gamma=0.003)
    assert [m["gamma"] for m in metrics] == pytest.approx([expected.step(e) for e in range(10)])
    weights = [(m["weight/distortion"], m["weight/rate"]) for m in metrics]
    assert all(abs(d + r - 1) < 1e-9 for d, r in weights)
    assert weights[-1] != weights[0]  # the logits moved
    record = json.loads((tmp_path / "test_outputs" / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["gamma_strategy"] == "hpcm"


@pytest.mark.parametrize("extra", [
    ["--balanced-update", "next-batch"],
    ["--balanced-tasks", "hierarchical"],
    ["--balanced-method", "qp", "--cautious", "false"],
])
def test_balanced_variants_train(image_folder: Path, tmp_path: Path, extra: list[str]) -> None:
    metrics = train(image_folder, tmp_path / "run", "--epochs", "2", "--use_balanced", *extra)
    assert len(metrics) == 2 and metrics[-1]["skipped_steps"] == 0
    if "hierarchical" in extra:  # the default model, hpcm-tiny, reports the rate of each coding scale
        weights = {k for k in metrics[-1] if k.startswith("weight/")}
        assert weights == {"weight/distortion", "weight/rate/z", "weight/rate/s1", "weight/rate/s2", "weight/rate/s3"}
        assert abs(sum(metrics[-1][k] for k in weights) - 1) < 1e-9


def test_balanced_adaptive_resume_is_exact(image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    import lictrain.training.run as fit_module

    flags = ["--epochs", "4", "--use_balanced", "--adaptive_gamma", "--gamma_strategy", "adaptive",
             "--adaptive_window", "1", "--adaptive_threshold", "0.5", "--gamma", "0.006"]
    straight = train(image_folder, tmp_path / "a", *flags)
    real = fit_module.train_one_epoch
    calls = {"n": 0}

    def stop_in_third_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            signal.raise_signal(signal.SIGINT)  # during epoch 3's first step: it stops after that step
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "train_one_epoch", stop_in_third_epoch)
    assert main(["train", "--dataset", str(image_folder), *SMALL, "--save_path", str(tmp_path / "b"), *flags]) == 130
    monkeypatch.setattr(fit_module, "train_one_epoch", real)
    assert main(["train", "--resume", str(tmp_path / "b"), "--wandb-mode", "disabled"]) == 0
    resumed = read_metrics(tmp_path / "b")
    for key in ("loss", "gamma", "weight/distortion", "train/loss"):
        assert [m[key] for m in resumed] == [m[key] for m in straight], key


def test_resume_with_more_epochs_follows_the_new_lr_schedule(image_folder: Path, tmp_path: Path) -> None:
    train(image_folder, tmp_path / "b", "--epochs", "2", "--lr-schedule", "multistep")  # E=2: LR drops at epoch 2
    assert main(["train", "--resume", str(tmp_path / "b"), "--epochs", "4", "--wandb-mode", "disabled"]) == 0
    assert [m["lr"] for m in read_metrics(tmp_path / "b")] == pytest.approx([1e-4] * 4)


def test_resume_with_more_epochs_stretches_the_cosine(image_folder: Path, tmp_path: Path) -> None:
    train(image_folder, tmp_path / "c", "--epochs", "2")  # 2 steps per epoch, warm-up 1 step, cosine over 4
    assert main(["train", "--resume", str(tmp_path / "c"), "--epochs", "4", "--wandb-mode", "disabled"]) == 0
    expected = [warmup_decay_factor(0, 4, 1), warmup_decay_factor(2, 4, 1),
                warmup_decay_factor(4, 8, 1), warmup_decay_factor(6, 8, 1)]
    assert [m["lr"] for m in read_metrics(tmp_path / "c")] == pytest.approx([1e-4 * f for f in expected])


def test_per_scale_gamma_schedules(image_folder: Path, tmp_path: Path) -> None:
    metrics = train(image_folder, tmp_path / "run", "--epochs", "2", "--use_balanced", "--balanced-tasks", "hierarchical",
                    "--adaptive_gamma", "--gamma_strategy", "cosine", "--gamma", "0.006", "--gamma_final", "0.001",
                    "--gamma-scale", "s1=0.008", "s3=0.002")
    first, second = metrics
    assert first["gamma/rate/s1"] == pytest.approx(0.008) and first["gamma/rate/s3"] == pytest.approx(0.002)
    assert first["gamma/rate/z"] == pytest.approx(0.006) and first["gamma/distortion"] == pytest.approx(0.006)
    # cosine over T=2 epochs, each scale from its own start to the shared final gamma: halfway at epoch 1
    assert second["gamma/rate/s1"] == pytest.approx(0.001 + 0.5 * 0.007)
    assert second["gamma/rate/s3"] == pytest.approx(0.001 + 0.5 * 0.001)
    assert second["gamma/rate/s2"] == pytest.approx(0.001 + 0.5 * 0.005)


def test_per_scale_gamma_needs_hierarchical_tasks(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code = main(["train", "--use_balanced", "--adaptive_gamma", "--gamma-scale", "s1=0.008", "--save_path",
                 str(tmp_path / "r"), "--wandb-mode", "disabled"])
    assert code == 2 and "needs --adaptive_gamma and --balanced-tasks hierarchical" in capsys.readouterr().err


def test_cautious_max_scale_reaches_the_optimiser() -> None:
    import torch

    from lictrain.config import TrainConfig
    from lictrain.training.build import build_parts
    from lictrain.training.distributed import DistInfo

    for flag, expected in ((10.0, 10.0), (None, None), (3.0, 3.0)):
        cfg = TrainConfig(model="bmshj2018-factorized", use_balanced=True, epochs=1, cautious_max_scale=flag).validate()
        parts = build_parts(cfg, torch.device("cpu"), DistInfo(), 16)
        assert parts.strategy.optimizer.cautious_max_scale == expected
