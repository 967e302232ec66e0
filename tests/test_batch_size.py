"""``--batch-size auto``: the search (known boundaries), the out-of-memory test, the CPU answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lictrain.cli.main import main
from lictrain.training.batch_size import CPU_BATCH, is_out_of_memory, search_batch_size


@pytest.mark.parametrize("largest", [1, 7, 8, 37, 64, 1000, 1024])
def test_search_finds_the_largest_fitting_batch(largest: int) -> None:
    found, tried = search_batch_size(lambda n: n <= largest)
    assert found == largest
    assert len(tried) <= 2 * 11  # doubling to 1024 then bisecting: logarithmic
    assert len(set(tried)) == len(tried)  # no size measured twice


def test_search_reports_when_nothing_fits_and_stops_at_the_limit() -> None:
    assert search_batch_size(lambda n: False)[0] is None
    found, tried = search_batch_size(lambda n: True, limit=64)
    assert found == 64 and tried == [8, 16, 32, 64]


def test_out_of_memory_is_told_apart_from_other_errors() -> None:
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


@pytest.mark.slow
def test_auto_on_the_cpu_says_so_and_records_the_batch(image_folder: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "r"
    code = main(["train", "--dataset", str(image_folder), "--model", "bmshj2018-factorized", "--patch-size", "64",
                 "--test-patch-size", "64", "--epochs", "1", "--epoch-size", "8", "--batch-size", "auto",
                 "--device", "cpu", "--save_path", str(run), "--wandb-mode", "disabled", "--no-final-eval"])
    assert code == 0
    assert "--batch-size auto sizes the batch to GPU memory; on the CPU it trains at batch 8" in capsys.readouterr().err
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["batch_size"] == CPU_BATCH == 8
    assert record["batch_size_auto"]["largest_fit"] is None and record["batch_size_auto"]["device"] == "cpu"


def test_bad_batch_size_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--batch-size", "big", "--save_path", str(tmp_path / "r")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-size" in err and "expected a whole number or auto" in err and "Traceback" not in err


def test_measure_runs_real_steps_and_treats_out_of_memory_as_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    """The search wired to a real strategy (on the CPU), whose step runs out of memory above 12 crops."""
    import torch

    from lictrain.config import TrainConfig
    from lictrain.training import batch_size as module
    from lictrain.training.strategy import StandardStrategy

    real = StandardStrategy.step
    seen = []

    def step(self, batch):
        seen.append(batch.shape[0])
        if batch.shape[0] > 12:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(self, batch)

    monkeypatch.setattr(StandardStrategy, "step", step)
    cfg = TrainConfig(model="bmshj2018-factorized", patch_size=64, epochs=1, lr=1e-3).validate()
    largest, tried = module._measure(cfg, torch.device("cpu"), 16)
    assert largest == 12 and tried == seen == [8, 16, 12, 14, 13]
    monkeypatch.setattr(StandardStrategy, "step", lambda self, batch: (_ for _ in ()).throw(ValueError("bug")))
    with pytest.raises(ValueError, match="bug"):  # any other error is a real error, not "too large"
        module._measure(cfg, torch.device("cpu"), 16)
