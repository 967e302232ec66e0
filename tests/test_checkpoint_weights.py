"""Weights from foreign files: CompressAI's three layouts, DataParallel prefixes, safetensors metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lictrain.checkpoint.weights import check_resumable, load_weights, read_weights
from lictrain.cli.main import main
from lictrain.errors import CheckpointError
from lictrain.models import build_model

MODEL = "bmshj2018-factorized"


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(MODEL, 1).state_dict()


def compressai_checkpoint(path: Path, state: dict[str, torch.Tensor], key: str = "state_dict",
                          module: bool = False) -> Path:
    """What CompressAI's examples/train.py saves (``save_checkpoint``)."""
    if module:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"epoch": 7, key: state, "loss": torch.tensor(1.5), "optimizer": {"state": {}, "param_groups": []},
                "aux_optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {"best": 1.0}}, path)
    return path


@pytest.mark.parametrize(("key", "module"), [("state_dict", False), ("state_dict", True), ("network", False),
                                             ("model_state_dict", True)])
def test_compressai_layouts_load(tmp_path: Path, reference: dict[str, torch.Tensor], key: str, module: bool) -> None:
    path = compressai_checkpoint(tmp_path / "checkpoint.pth.tar", reference, key, module)
    weights = load_weights(path)
    assert weights.origin == "compressai" and weights.model is None
    assert weights.state.keys() == reference.keys()
    assert all(torch.equal(weights.state[k], reference[k]) for k in reference)
    state, ckpt, file = read_weights(path)
    assert ckpt == {} and file == path


def test_compressai_checkpoint_evaluates_and_fine_tunes(tmp_path: Path, reference: dict[str, torch.Tensor],
                                                        image_folder: Path) -> None:
    from lictrain.evaluation.codec import load_codec

    path = compressai_checkpoint(tmp_path / "ca.pth.tar", reference)
    net, info = load_codec(path, "cpu", model=MODEL, quality=1)
    assert info.model == MODEL and torch.equal(net.state_dict()["g_a.0.weight"], reference["g_a.0.weight"])
    code = main(["train", "--dataset", str(image_folder), "--model", MODEL, "--pretrained", str(path), "--epochs", "1",
                 "--patch-size", "64", "--test-patch-size", "64", "--batch-size", "2", "--epoch-size", "2",
                 "--no-final-eval", "--wandb-mode", "disabled", "--save-path", str(tmp_path / "ft")])
    assert code == 0


def test_resume_on_a_foreign_checkpoint_is_one_line_naming_pretrained(tmp_path: Path, reference: dict,
                                                                       capsys: pytest.CaptureFixture) -> None:
    path = compressai_checkpoint(tmp_path / "ca.pth.tar", reference)
    assert main(["train", "--resume", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CompressAI training checkpoint" in err[0] and f"--pretrained {path}" in err[0]
    with pytest.raises(CheckpointError, match="not a lictrain training checkpoint"):
        check_resumable(reference, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="holds weights only"):
        check_resumable({"lictrain": {"kind": "weights"}, "model_state": reference}, tmp_path / "best.pt")


def test_checkpoint_flag_is_resume_or_pretrained(tmp_path: Path, reference: dict) -> None:
    from lictrain.cli.main import build_parser
    from lictrain.cli.train import config_from_args

    path = compressai_checkpoint(tmp_path / "ca.pth.tar", reference)
    cfg = config_from_args(build_parser().parse_args(["train", "--model", MODEL, "--checkpoint", str(path)]))
    assert cfg.pretrained == str(path) and cfg.resume is None


def test_export_records_the_architecture_for_later_readers(tmp_path: Path, image_folder: Path) -> None:
    from lictrain.checkpoint.export import export_safetensors

    run = tmp_path / "run"
    assert main(["train", "--dataset", str(image_folder), "--model", MODEL, "--epochs", "1", "--patch-size", "64",
                 "--test-patch-size", "64", "--batch-size", "2", "--epoch-size", "2", "--no-final-eval",
                 "--wandb-mode", "disabled", "--save-path", str(run)]) == 0
    out = export_safetensors(run, tmp_path / "w.safetensors")
    weights = load_weights(out)
    assert (weights.origin, weights.model, weights.quality) == ("safetensors", MODEL, 1)
    from lictrain.evaluation.codec import load_codec

    _, info = load_codec(out, "cpu")  # no --model/--quality needed any more
    assert info.model == MODEL


@pytest.mark.slow
def test_official_hpcm_release_is_read_everywhere_weights_are(tmp_path: Path) -> None:
    """An official release (``state_dict`` + ``module.``) is converted on reading: eval, export and
    --pretrained see hpcm-base-official without being told."""
    from test_hpcm_official import manifest, random_official_state

    from lictrain.checkpoint.export import export_safetensors
    from lictrain.cli.main import build_parser
    from lictrain.cli.train import config_from_args

    state = random_official_state(manifest("base"), seed=0)
    path = tmp_path / "HPCM_Base_0.0067.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    weights = load_weights(path)
    assert (weights.origin, weights.model, weights.quality) == ("hpcm-official", "hpcm-base-official", 1)
    assert read_weights(path)[1] == {"config": {"model": "hpcm-base-official", "quality": 1}}
    cfg = config_from_args(build_parser().parse_args(["train", "--pretrained", str(path)]))
    assert (cfg.model, cfg.quality) == ("hpcm-base-official", 1)
    with pytest.raises(CheckpointError, match="holds hpcm-base-official weights, not hpcm-base"):
        from lictrain.training.build import load_pretrained_weights

        load_pretrained_weights(build_model("hpcm-base", 1), str(path), "hpcm-base")
    out = export_safetensors(path, tmp_path / "converted.safetensors")
    assert load_weights(out).model == "hpcm-base-official"


def test_a_run_folder_means_its_best_checkpoint_and_selectors_choose(tmp_path: Path) -> None:
    """eval/export/compress/--pretrained: RUN = its best by the run's metric, RUN:latest = its latest."""
    import pytest

    from lictrain.checkpoint import CheckpointManager
    from lictrain.checkpoint.weights import load_weights, resolve_weights
    from lictrain.errors import CheckpointError

    run = tmp_path / "run"
    with CheckpointManager(run, keep_last_n=3, keep_best=1, async_save=False, fsync=False) as cm:
        for epoch, loss in enumerate((3.0, 1.0, 2.0)):  # epoch 1 is best, epoch 2 the latest
            cm.save_checkpoint(epoch, {"w": torch.full((2,), float(epoch))}, metric_value=loss,
                               config={"model": "x"}, optimizer_state={})
    assert resolve_weights(run).name == "checkpoint_epoch00001.pt"
    assert resolve_weights(f"{run}:best").name == "checkpoint_epoch00001.pt"
    assert resolve_weights(f"{run}:latest").name == "checkpoint_epoch00002.pt"
    assert float(load_weights(run).state["w"][0]) == 1.0
    (run / "checkpoint_tracking.json").unlink()  # ranked from the files' own records
    assert resolve_weights(run).name == "checkpoint_epoch00001.pt"
    unranked = tmp_path / "unranked"
    with CheckpointManager(unranked, async_save=False, fsync=False) as cm:
        cm.save_checkpoint(0, {"w": torch.zeros(2)}, metric_value=float("nan"), optimizer_state={})
    assert resolve_weights(unranked).name == "checkpoint_epoch00000.pt"  # none ranked: the latest
    with pytest.raises(CheckpointError, match=":latest"):
        resolve_weights(f"{unranked}:best")
