"""CLI parsing: both flag spellings, resume overrides, one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from lictrain.cli.main import build_parser, main
from lictrain.cli.train import config_from_args
from lictrain.config import DEFAULT_BUDGET_MINUTES, TrainConfig


def cfg_of(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_defaults_when_no_flags() -> None:
    cfg = cfg_of()
    assert cfg == TrainConfig().validate()
    assert cfg.budget_minutes == DEFAULT_BUDGET_MINUTES and cfg.epochs is None and cfg.lr_schedule == "cosine"


def test_epochs_alone_means_no_budget_and_both_cap_the_plan() -> None:
    assert cfg_of("--epochs", "4").budget_minutes is None
    both = cfg_of("--epochs", "4", "--budget_minutes", "2.5")
    assert both.epochs == 4 and both.budget_minutes == 2.5
    assert cfg_of("--budget-minutes", "2.5", "--warmup-steps", "30").warmup_steps == 30


def test_guide_spellings_and_dashed_spellings_agree() -> None:
    guide = cfg_of("--use_balanced", "--adaptive_gamma", "--gamma_strategy", "cosine", "--gamma", "0.006",
                   "--gamma_final", "0.002", "--w_lr", "0.01", "--step_epochs", "5", "8", "--adaptive_window", "7",
                   "--adaptive_threshold", "0.02", "--save_path", "x", "--clip_max_norm", "2", "--batch_size", "4")
    dashed = cfg_of("--use-balanced", "--adaptive-gamma", "--gamma-strategy", "cosine", "--gamma", "0.006",
                    "--gamma-final", "0.002", "--w-lr", "0.01", "--step-epochs", "5", "8", "--adaptive-window", "7",
                    "--adaptive-threshold", "0.02", "--save-path", "x", "--clip-max-norm", "2", "--batch-size", "4")
    assert guide == dashed
    assert guide.use_balanced and guide.adaptive_gamma and guide.step_epochs == [5, 8] and guide.save_path == "x"


def test_lambda_and_clip_zero() -> None:
    cfg = cfg_of("--lambda", "0.013", "--clip_max_norm", "0")
    assert cfg.lmbda == 0.013 and cfg.clip_max_norm is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lambda", "-0.1"], "--lambda must be a positive number"),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--adaptive_gamma"], "add --use_balanced"),
        (["--gamma_strategy", "bogus", "--use_balanced"], "--gamma-strategy must be one of"),
        (["--device", "tpu"], "--device must be one of"),
        (["--gamma", "-1"], "--gamma must be a finite number >= 0"),
        (["--model", "bmshj2018-hyperprior", "--patch-size", "100"], "not a multiple of 64"),
        (["--dataset", "/no/such/folder"], "dataset not found"),
    ],
)
def test_bad_values_are_one_line_errors_with_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture,
                                                    tmp_path: Path) -> None:
    code = main(["train", "--save_path", str(tmp_path / "run"), "--wandb-mode", "disabled", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("lictrain train: error:") and message in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_unparseable_value_is_one_line_exit_2(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "ten"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid int value: 'ten'" in err[0]


def test_unwritable_save_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["train", "--save_path", str(blocker / "run"), "--wandb-mode", "disabled", "--epochs", "1"])
    assert code == 2
    assert "cannot write to --save_path" in capsys.readouterr().err


def test_models_lists_the_zoo(capsys: pytest.CaptureFixture) -> None:
    assert main(["models"]) == 0
    assert "bmshj2018-hyperprior" in capsys.readouterr().out


def test_speed_and_schedule_flags_parse_in_both_spellings() -> None:
    cfg = cfg_of("--precision", "bf16", "--channels_last", "--compile", "--lr_schedule", "linear", "--warmup_steps", "0")
    assert (cfg.precision, cfg.channels_last, cfg.compile, cfg.lr_schedule, cfg.warmup_steps) == ("bf16", True, True,
                                                                                                 "linear", 0)
    assert cfg_of("--channels-last").channels_last and cfg.lr == 2e-3


@pytest.mark.parametrize("argv, message", [
    (["--lr-schedule", "exponential"], "--lr-schedule must be one of multistep, plateau, cosine, linear"),
    (["--precision", "fp16"], "--precision must be one of fp32, bf16"),
    (["--warmup-steps", "-2"], "--warmup-steps must be a whole number >= 0"),
])
def test_bad_recipe_flags_are_one_line_errors(argv: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--save_path", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture, command: str = "train") -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"lictrain {command}: error:")
    return err[-1]


def test_a_folder_of_only_bad_photos_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.jpg", "b.png", "c.webp"):
        (data / name).write_bytes(b"not an image")
    line = _one_line_exit_2(["train", "--dataset", str(data), "--epochs", "1", "--wandb-mode", "disabled",
                             "--save-path", str(tmp_path / "run")], capsys)
    assert "no usable training photo among 2 file(s)" in line


def test_data_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = cfg_of("--num-workers", "auto", "--crops-per-image", "4", "--epoch_size", "64")
    assert cfg.num_workers is None and cfg.crops_per_image == 4 and cfg.epoch_size == 64
    assert cfg_of().epoch_size is None and cfg_of("--num_workers", "3").num_workers == 3
    with pytest.raises(SystemExit):
        main(["train", "--num-workers", "-1"])
    assert "expected a whole number >= 0 or auto" in capsys.readouterr().err
    line = _one_line_exit_2(["train", "--crops-per-image", "0", "--wandb-mode", "disabled",
                             "--save-path", str(tmp_path / "r")], capsys)
    assert "--crops-per-image must be a positive integer" in line


def test_data_prepare_and_info_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = _one_line_exit_2(["data", "prepare", str(tmp_path / "nope"), str(tmp_path / "out")], capsys, "data")
    assert "dataset not found" in line
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    (tmp_path / "src").mkdir()
    line = _one_line_exit_2(["data", "prepare", str(tmp_path / "src"), str(tmp_path / "out")], capsys, "data")
    assert "never overwrites" in line and (tmp_path / "out" / "keep.txt").read_text() == "mine"
    line = _one_line_exit_2(["data", "info", str(tmp_path / "src")], capsys, "data")
    assert "no images" in line


def test_compressai_spellings_are_aliases() -> None:
    cfg = cfg_of("-lr", "2e-4", "-n", "3", "--cuda", "--save", "--patch-size", "256", "256",
                 "--aux-learning-rate", "5e-4", "-e", "7", "--test-batch-size", "2")
    assert (cfg.lr, cfg.num_workers, cfg.device, cfg.patch_size, cfg.aux_lr, cfg.epochs) == \
        (2e-4, 3, "cuda", 256, 5e-4, 7)
    assert cfg_of("--patch_size", "192").patch_size == 192


def test_no_flag_abbreviation_is_ambiguous_or_silently_expanded(capsys: pytest.CaptureFixture) -> None:
    assert cfg_of("--save").save_path is None  # CompressAI's --save, not an abbreviation of --save_path
    with pytest.raises(SystemExit):
        main(["train", "--save_pa", "x"])
    assert "unrecognized arguments: --save_pa" in capsys.readouterr().err


def test_rectangular_patch_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = _one_line_exit_2(["train", "--patch-size", "256", "128", "--save-path", str(tmp_path / "r")], capsys)
    assert "square crops" in line


@pytest.mark.parametrize("name", ["hpcm", "lic-hpcm-balanced", "compressai"])
def test_recipes_set_their_values_and_flags_win(name: str, caplog: pytest.LogCaptureFixture) -> None:
    from lictrain.recipes import RECIPES

    with caplog.at_level("INFO"):
        cfg = cfg_of("--recipe", name, "--batch-size", "4")
    recipe = RECIPES[name]
    for key, value in recipe.values.items():
        assert getattr(cfg, key) == (4 if key == "batch_size" else value), key
    assert cfg.recipe == name and f"recipe {name}" in caplog.text and "batch_size=" in caplog.text


def test_published_recipe_values() -> None:
    hpcm, lhb, cai = (cfg_of("--recipe", n) for n in ("hpcm", "lic-hpcm-balanced", "compressai"))
    assert (hpcm.batch_size, hpcm.patch_size, hpcm.lr, hpcm.lr_schedule, hpcm.epochs, hpcm.epoch_size) == \
        (32, 256, 1e-4, "multistep", 3000, None)
    assert (lhb.lr, lhb.batch_size, lhb.cautious_max_scale, lhb.use_balanced, lhb.gamma, lhb.w_lr) == \
        (5e-5, 16, 10.0, True, 0.003, 0.025)
    assert (cai.model, cai.quality, cai.lr_schedule, cai.lmbda, cai.test_batch_size) == \
        ("bmshj2018-factorized", 3, "plateau", 0.01, 64)


def test_cautious_max_scale_flag() -> None:
    assert cfg_of().cautious_max_scale == 10.0
    assert cfg_of("--cautious-max-scale", "0").cautious_max_scale is None
    assert cfg_of("--cautious_max_scale", "4").cautious_max_scale == 4.0
    with pytest.raises(Exception, match="--cautious-max-scale must be a number >= 1"):
        cfg_of("--cautious-max-scale", "0.5")


@pytest.fixture
def small_codec(tmp_path: Path) -> tuple[Path, Path]:
    """A bmshj2018-factorized checkpoint and a 48x64 PNG."""
    import numpy as np
    import torch
    from PIL import Image

    from lictrain.models import build_model

    torch.manual_seed(0)
    ckpt = tmp_path / "w.pt"
    torch.save({"model_state": build_model("bmshj2018-factorized", 1).state_dict(),
                "config": {"model": "bmshj2018-factorized", "quality": 1}}, ckpt)
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    return ckpt, image


def test_no_command_replaces_what_the_user_did_not_name(small_codec: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    ckpt, image = small_codec
    original = image.read_bytes()
    assert main(["compress", str(image), "--checkpoint", str(ckpt)]) == 0  # photo.lic, new
    lic = image.with_suffix(".lic")
    capsys.readouterr()
    # decompress's default output is photo.png: the original
    assert "already exists (the original?)" in _one_line_exit_2(
        ["decompress", str(lic), "--checkpoint", str(ckpt)], capsys, "decompress")
    assert image.read_bytes() == original
    assert "would replace its input" in _one_line_exit_2(
        ["compress", str(image), "-o", str(image), "--checkpoint", str(ckpt), "--force"], capsys, "compress")
    assert image.read_bytes() == original
    assert "pass --force" in _one_line_exit_2(["compress", str(image), "--checkpoint", str(ckpt)], capsys, "compress")
    assert main(["compress", str(image), "--checkpoint", str(ckpt), "--force"]) == 0
    assert main(["decompress", str(lic), "--checkpoint", str(ckpt), "-o", str(tmp_path / "dec.png")]) == 0
    capsys.readouterr()
    assert "pass --force" in _one_line_exit_2(
        ["export", str(ckpt), "--out", str(tmp_path / "dec.png")], capsys, "export")
    assert "would replace its input" in _one_line_exit_2(
        ["export", str(ckpt), "--out", str(ckpt), "--force"], capsys, "export")


def test_save_path_onto_an_existing_run_points_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"status": "finished"}')
    (run / "checkpoint_epoch00001.pt").write_bytes(b"precious")
    line = _one_line_exit_2(["train", "--save_path", str(run), "--epochs", "1", "--wandb-mode", "disabled"], capsys)
    assert f"--resume {run}" in line and (run / "checkpoint_epoch00001.pt").read_bytes() == b"precious"


def test_ctrl_c_during_setup_is_one_line_exit_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import lictrain.cli.train as train_cli

    def interrupted(args):  # noqa: ANN001
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "config_from_args", interrupted)
    assert main(["train"]) == 130
    assert capsys.readouterr().err.strip() == "lictrain: interrupted"


def test_out_of_range_seed_and_huge_gamma_plot_are_one_line_exit_2(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    line = _one_line_exit_2(["train", "--seed", "99999999999999999999", "--save-path", str(tmp_path / "r")], capsys)
    assert "--seed must be a whole number from 0 to 2**63-1" in line
    line = _one_line_exit_2(["gamma-plot", "--epochs", "1000000000", "--out", str(tmp_path / "g.png")], capsys,
                            "gamma-plot")
    assert "more than gamma-plot simulates" in line


@pytest.mark.slow
def test_a_diverged_run_finishes_cleanly_and_eval_refuses_its_weights(image_folder: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "div"
    assert main(["train", "--dataset", str(image_folder), "--lr", "1e10", "--epochs", "1", "--epoch-size", "4",
                 "--batch-size", "2", "--model", "bmshj2018-factorized", "--patch-size", "64", "--test-patch-size",
                 "64", "--wandb-mode", "disabled", "--save-path", str(run)]) == 0
    err = capsys.readouterr().err
    assert "closing evaluation skipped" in err and "diverged" in err and "Traceback" not in err
    line = _one_line_exit_2(["eval", str(run), "--no-estimate", "--out-dir", str(tmp_path / "ev")], capsys, "eval")
    assert "diverged" in line


def test_a_run_killed_before_its_first_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """kill -9 before the first checkpoint: run.json says running and names a dead process; analyze
    reports it failed, --resume says there is nothing to resume."""
    import json
    import subprocess
    import sys

    from lictrain.analysis.analyzer import HyperparameterAnalyzer

    run = tmp_path / "runs" / "early"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "running", "config": {"lmbda": 0.01, "use_balanced": False},
                                              "summary": {}}))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (run / ".lictrain.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    df = HyperparameterAnalyzer(tmp_path / "runs").load_results()
    assert df.loc[0, "state"] == "failed"
    line = _one_line_exit_2(["train", "--resume", str(run)], capsys)
    assert "nothing to resume" in line


def test_plots_are_not_replaced_without_force(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    (tmp_path / "gamma_schedules.png").write_bytes(b"mine")
    assert "pass --force" in _one_line_exit_2(["gamma-plot", "--epochs", "30"], capsys, "gamma-plot")
    assert (tmp_path / "gamma_schedules.png").read_bytes() == b"mine"
    assert main(["gamma-plot", "--epochs", "30", "--force"]) == 0
    ours = {"name": "ours", "results": {"bpp": [0.1, 0.2, 0.3, 0.45], "psnr-rgb": [31.0, 33.0, 34.8, 36.5]}}
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    (tmp_path / "rd.png").write_bytes(b"mine")
    assert "already exists" in _one_line_exit_2(["rd", "ours.json"], capsys, "rd")
    assert "would replace its input" in _one_line_exit_2(["rd", "ours.json", "--out", "ours.json", "--force"],
                                                         capsys, "rd")
    assert (tmp_path / "rd.png").read_bytes() == b"mine"
    assert main(["rd", "ours.json", "--out", "new.png"]) == 0 and (tmp_path / "new.png").stat().st_size > 0


def test_eval_and_analyze_do_not_replace_earlier_results_without_force(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    import json

    out = tmp_path / "ev"
    out.mkdir()
    (out / "jpeg420.json").write_text("earlier results")
    line = _one_line_exit_2(["eval", "--anchors", "jpeg420", "--out-dir", str(out)], capsys, "eval")
    assert "pass --force" in line and (out / "jpeg420.json").read_text() == "earlier results"
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "run.json").write_text(json.dumps({"status": "finished", "config": {"gamma": 0.001},
                                                     "summary": {"psnr": 30.0, "bpp": 0.3}}))
    (runs / "analysis").mkdir()
    (runs / "analysis" / "report.md").write_text("my notes")
    line = _one_line_exit_2(["analyze", str(runs)], capsys, "analyze")
    assert "already exists" in line and (runs / "analysis" / "report.md").read_text() == "my notes"
    assert main(["analyze", str(runs), "--force"]) == 0


def test_listing_models_does_not_import_compressai(capsys: pytest.CaptureFixture) -> None:
    import subprocess
    import sys

    code = ("import sys, lictrain.cli.main as m; m.build_parser(); import lictrain.models as lm; "
            "lm.available_models(); lm.get_spec('hpcm-base'); print('compressai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-500:]  # CompressAI (~3 s of imports) loads on first use
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["model", "qualities"] and any(line.startswith("hpcm-base ") for line in lines)


def test_a_misspelt_flag_gets_the_closest_spelling(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["train", "--lamda", "0.01"])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean --lambda (for --lamda)?" in err
    with pytest.raises(SystemExit):
        main(["train", "--completely-unknown", "1"])
    assert "did you mean" not in capsys.readouterr().err
    with pytest.raises(SystemExit):  # another subcommand's flag: the hint is this subcommand's closest one
        main(["analyze", "runs", "--output", "report"])
    assert "did you mean --out (for --output)?" in capsys.readouterr().err
