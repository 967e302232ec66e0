"""``--lr-groups`` and ``--unfreeze``: group resolution, LRs in the optimiser, freezing, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lictrain.cli.main import main
from lictrain.config import TrainConfig
from lictrain.errors import ConfigError
from lictrain.models import build_model
from lictrain.tracking.records import read_metrics
from lictrain.training.fit import fit
from lictrain.training.optimizers import split_parameters
from lictrain.training.param_groups import Unfreezer, available_groups, group_members, parameter_groups


@pytest.fixture(scope="module")
def hyperprior() -> torch.nn.Module:
    return build_model("bmshj2018-hyperprior", 1)


def test_groups_resolve_aliases_and_module_paths(hyperprior: torch.nn.Module) -> None:
    assert available_groups(hyperprior) == ["transforms", "entropy", "entropy_bottleneck", "g_a", "g_s", "h_a", "h_s"]
    entropy, specificity = group_members(hyperprior, "entropy")
    assert specificity == 0
    assert {n.split(".")[0] for n in entropy} == {"entropy_bottleneck", "h_a", "h_s"}
    assert not any(n.endswith(".quantiles") for n in entropy)  # the aux parameters are never grouped
    names, specificity = group_members(hyperprior, "g_a.0")
    assert specificity == 2 and names == ["g_a.0.weight", "g_a.0.bias"]
    with pytest.raises(ConfigError, match="unknown module group 'decoder'.*choose from transforms, entropy"):
        group_members(hyperprior, "decoder")
    with pytest.raises(ConfigError, match="no trainable parameters"):
        group_members(hyperprior, "context")  # a hyperprior model has no context model


def test_parameter_groups_give_each_named_group_its_lr(hyperprior: torch.nn.Module) -> None:
    net, _ = split_parameters(hyperprior)
    groups = parameter_groups(hyperprior, net, 1e-4, {"entropy": 5e-5, "h_a": 1e-3, "g_a": 1e-5})
    by_name = {g["name"]: g for g in groups}
    assert [g["name"] for g in groups] == ["default", "entropy", "h_a", "g_a"]
    assert by_name["default"]["lr"] == 1e-4 and by_name["h_a"]["lr"] == 1e-3
    ids = {name: {id(p) for p in g["params"]} for name, g in by_name.items()}
    params = dict(hyperprior.named_parameters())
    assert id(params["h_a.0.weight"]) in ids["h_a"]  # the module path beats the alias that also covers it
    assert id(params["h_s.0.weight"]) in ids["entropy"]
    assert id(params["g_s.0.weight"]) in ids["default"]
    assert sum(len(g["params"]) for g in groups) == len(net)  # every network parameter exactly once
    optimizer = torch.optim.Adam(groups, lr=1e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 5e-5, 1e-3, 1e-5]
    with pytest.raises(ConfigError, match="--lr-groups takes GROUP=LR"):
        TrainConfig(lr_groups={"g_a": -1.0}).validate()


def test_unfreezer_follows_the_epoch(hyperprior: torch.nn.Module) -> None:
    unfreezer = Unfreezer(hyperprior, ["entropy", "g_s", "g_a"], every=2)
    params = dict(hyperprior.named_parameters())
    expected = {0: (True, False, False), 1: (True, False, False), 2: (True, True, False), 4: (True, True, True),
                9: (True, True, True), 3: (True, True, False)}  # resumed at epoch 3: the same state as straight
    for epoch, (entropy, g_s, g_a) in expected.items():
        unfreezer.apply(epoch)
        assert (params["h_a.0.weight"].requires_grad, params["g_s.0.weight"].requires_grad,
                params["g_a.0.weight"].requires_grad) == (entropy, g_s, g_a), epoch
    assert params["entropy_bottleneck.quantiles"].requires_grad  # aux: never frozen
    for p in hyperprior.parameters():
        p.requires_grad_(True)


def small(image_folder: Path, run: Path, **kw) -> TrainConfig:
    base = dict(dataset=str(image_folder), model="bmshj2018-factorized", patch_size=64, test_patch_size=64,
                batch_size=2, epoch_size=4, test_batch_size=2, save_path=str(run), wandb_mode="disabled",
                final_eval=False, lr=1e-3, lr_schedule="linear", epochs=3)
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_frozen_groups_do_not_move_until_unfrozen_and_resume_is_exact(image_folder: Path, tmp_path: Path,
                                                                       interrupt_after_steps) -> None:
    from lictrain.checkpoint import load_checkpoint

    cfg = dict(unfreeze=["g_s", "g_a"], unfreeze_every=2, lr_groups={"g_s": 5e-4})
    straight = fit(small(image_folder, tmp_path / "a", **cfg), show_progress=False)
    e0 = load_checkpoint(tmp_path / "a" / "checkpoint_epoch00000.pt")["model_state"]
    e1 = load_checkpoint(tmp_path / "a" / "checkpoint_epoch00001.pt")["model_state"]
    e2 = load_checkpoint(tmp_path / "a" / "checkpoint_epoch00002.pt")["model_state"]
    assert torch.equal(e0["g_a.0.weight"], e1["g_a.0.weight"])  # frozen in epochs 0 and 1
    assert not torch.equal(e1["g_a.0.weight"], e2["g_a.0.weight"])  # unfrozen from epoch 2
    assert not torch.equal(e0["g_s.0.weight"], e1["g_s.0.weight"])
    optimizer = load_checkpoint(tmp_path / "a" / "checkpoint_epoch00002.pt")["optimizer_state"]
    assert [g["name"] for g in optimizer["param_groups"]] == ["default", "g_s"]
    interrupt_after_steps(2)  # Ctrl-C as epoch 1 begins (2 steps per epoch)
    assert fit(small(image_folder, tmp_path / "b", **cfg), show_progress=False).status == "interrupted"
    interrupt_after_steps.disarm()
    assert fit(small(image_folder, tmp_path / "b", resume=str(tmp_path / "b"), **cfg),
               show_progress=False).status == "finished"
    a, b = read_metrics(straight.run_dir), read_metrics(tmp_path / "b")
    for key in ("loss", "bpp", "train/loss", "lr"):
        assert [m[key] for m in a] == [m[key] for m in b], key


def test_cli_names_unknown_groups_and_refuses_empty_lists(image_folder: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--dataset", str(image_folder), "--model", "bmshj2018-factorized", "--patch-size", "64",
            "--test-patch-size", "64", "--epochs", "1", "--save_path", str(tmp_path / "r"), "--wandb-mode", "disabled"]
    assert main([*args, "--lr-groups", "encoder=1e-5"]) == 2
    err = capsys.readouterr().err
    assert "unknown module group 'encoder'" in err and "g_a" in err and "Traceback" not in err
    assert main([*args, "--unfreeze", "g_a,g_a"]) == 2
    assert "--unfreeze takes distinct module groups" in capsys.readouterr().err


def test_models_groups_lists_the_groups_with_parameter_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--groups", "bmshj2018-hyperprior"]) == 0
    out = capsys.readouterr().out
    model = build_model("bmshj2018-hyperprior", 1)
    g_a = sum(p.numel() for p in model.g_a.parameters())
    line = next(line for line in out.splitlines() if line.startswith("g_a "))
    assert line.split() == ["g_a", f"{g_a:,d}", "module"]
    assert "alias of entropy_bottleneck, h_a, h_s" in out
    assert main(["models", "--groups", "nope"]) == 2
