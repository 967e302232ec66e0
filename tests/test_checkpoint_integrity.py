"""Checkpoint integrity: CRC checks before every load, non-finite weights, load_latest_valid."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import pytest
import torch

from lictrain.checkpoint import (
    CheckpointManager,
    CorruptCheckpointError,
    checkpoint_filename,
    load_checkpoint,
    load_latest_valid,
    nonfinite_tensors,
    resolve_checkpoint,
    verify_checkpoint_file,
)
from lictrain.errors import CheckpointError


def _model_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.nn.Linear(128, 128).state_dict()  # 64 KiB of weights: the middle is tensor data


def _save_run(run: Path, epochs: int = 3, nan_at: int | None = None, **settings) -> list[Path]:
    """A run directory with one full checkpoint per epoch (oldest first)."""
    settings = {"keep_last_n": epochs, "keep_best": 0, "async_save": False, "fsync": False, **settings}
    with CheckpointManager(run, **settings) as cm:
        for epoch in range(epochs):
            state = _model_state(epoch)
            if epoch == nan_at:
                state["weight"][3, 5] = float("nan")
            optimizer = {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}
            cm.save_checkpoint(epoch, state, optimizer, metric_value=1.0 / (epoch + 1))
    return [run / checkpoint_filename(e) for e in range(epochs)]


def _flip_middle(path: Path, n: int = 4096, keep_mtime: bool = False) -> None:
    """Invert ``n`` bytes in the middle of ``path``, size unchanged (a bad sector, a bad copy)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    mid = len(data) // 2 - n // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))
    assert path.stat().st_size == st.st_size
    if keep_mtime:  # the tracking file's size/mtime stamp still matches: only the CRC can tell
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- CRC check


def test_flipped_bytes_are_refused_by_every_load(tmp_path: Path) -> None:
    path = _save_run(tmp_path / "run", epochs=1)[0]
    _flip_middle(path)
    torch.load(path, weights_only=True)  # what torch alone does: loads garbage silently
    for mmap in (False, True):
        with pytest.raises(CorruptCheckpointError) as info:
            load_checkpoint(path, mmap=mmap)
        message = str(info.value)
        assert str(path) in message and "corrupt" in message and "CRC mismatch in entry" in message
        assert "\n" not in message and "delete it" in message
        assert isinstance(info.value, CheckpointError) and info.value.path == path


def test_intact_checkpoint_loads_unchanged(tmp_path: Path) -> None:
    path = _save_run(tmp_path / "run", epochs=1)[0]
    assert verify_checkpoint_file(path) is True
    ckpt = load_checkpoint(path)
    for name, value in _model_state(0).items():
        assert torch.equal(ckpt["model_state"][name], value)


@pytest.mark.parametrize("keep", [1000, 100, 10])
def test_truncated_file_is_corrupt(tmp_path: Path, keep: int) -> None:
    path = _save_run(tmp_path / "run", epochs=1)[0]
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match=f"{path.name}.*(corrupt|truncated)"):
        load_checkpoint(path)


def test_files_without_checksums_load_unchecked(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.pt"
    torch.save({"model_state": _model_state(0)}, legacy, _use_new_zipfile_serialization=False)
    assert verify_checkpoint_file(legacy) is False
    assert torch.equal(load_checkpoint(legacy)["model_state"]["bias"], _model_state(0)["bias"])
    from torch.utils.serialization import config

    no_crc = tmp_path / "no_crc.pt"
    saved = config.save.compute_crc32
    config.save.compute_crc32 = False
    try:
        torch.save({"model_state": _model_state(0)}, no_crc)
    finally:
        config.save.compute_crc32 = saved
    assert {i.CRC for i in zipfile.ZipFile(no_crc).infolist()} == {0}
    assert verify_checkpoint_file(no_crc) is False
    assert torch.equal(load_checkpoint(no_crc)["model_state"]["weight"], _model_state(0)["weight"])


def test_directory_scan_skips_a_corrupt_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = _save_run(tmp_path / "run")
    _flip_middle(files[-1])  # its mtime changed: the scan reads it (mmap) and must refuse it
    with caplog.at_level(logging.WARNING):
        CheckpointManager(tmp_path / "run", fsync=False).close()
    assert any("skipping unreadable checkpoint" in r.getMessage() and files[-1].name in r.getMessage()
               for r in _warnings(caplog))
    assert resolve_checkpoint(tmp_path / "run") == files[-2]


# --------------------------------------------------------------------------- load_latest_valid


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_latest_valid_skips_a_corrupt_latest_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, keep_mtime: bool
) -> None:
    files = _save_run(tmp_path / "run")
    _flip_middle(files[-1], keep_mtime=keep_mtime)
    with caplog.at_level(logging.DEBUG):
        path, ckpt = load_latest_valid(tmp_path / "run")
    assert path == files[-2] and ckpt["epoch"] == 1
    assert torch.equal(ckpt["model_state"]["weight"], _model_state(1)["weight"])
    warnings = _warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    text = warnings[0].getMessage()
    assert str(files[-1]) in text and "corrupt (CRC mismatch" in text and f"previous one {files[-2].name}" in text


def test_latest_valid_of_an_intact_run_is_its_latest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = _save_run(tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        assert load_latest_valid(tmp_path / "run")[0] == files[-1]
        assert load_latest_valid(files[0])[0] == files[0]  # a file: itself
    assert not _warnings(caplog)


def test_latest_valid_skips_nan_weights(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = _save_run(tmp_path / "run", nan_at=2)
    with caplog.at_level(logging.WARNING):
        path, ckpt = load_latest_valid(tmp_path / "run")
    assert path == files[1] and not nonfinite_tensors(ckpt["model_state"])
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "NaN/inf weights (weight)" in warnings[0].getMessage()
    with pytest.raises(CheckpointError, match=f"{files[2].name} holds NaN/inf weights"):
        load_latest_valid(files[2])  # named explicitly: refused, never resumed silently


def test_latest_valid_raises_when_every_checkpoint_is_bad(tmp_path: Path) -> None:
    files = _save_run(tmp_path / "run")
    _flip_middle(files[0])
    files[1].write_bytes(files[1].read_bytes()[:500])  # truncated
    _flip_middle(files[2], keep_mtime=True)
    with pytest.raises(CheckpointError) as info:
        load_latest_valid(tmp_path / "run")
    message = str(info.value)
    assert f"no usable checkpoint to resume from in {tmp_path / 'run'}" in message
    assert all(f.name in message for f in files) and "\n" not in message
    with pytest.raises(CorruptCheckpointError):
        load_latest_valid(files[2])


def test_latest_valid_never_resumes_a_weights_only_best(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Epoch 0 is best (lowest loss) and falls out of the last 1: rewritten as weights only.
    with CheckpointManager(run, keep_last_n=1, keep_best=1, best_weights_only=True, async_save=False,
                           fsync=False) as cm:
        for epoch, loss in ((0, 0.1), (1, 0.5)):
            cm.save_checkpoint(epoch, _model_state(epoch), {"state": {}, "param_groups": []}, metric_value=loss)
    assert load_checkpoint(run / checkpoint_filename(0))["lictrain"]["kind"] == "weights"
    _flip_middle(run / checkpoint_filename(1))
    with pytest.raises(CheckpointError, match="no usable checkpoint") as info:
        load_latest_valid(run)
    assert checkpoint_filename(0) not in str(info.value)
    (run / checkpoint_filename(1)).unlink()
    with pytest.raises(CheckpointError, match="only weights-only"):
        load_latest_valid(run)
    with pytest.raises(CheckpointError, match="holds weights only"):
        load_latest_valid(run / checkpoint_filename(0))


def test_latest_valid_of_missing_or_empty_paths(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_latest_valid(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no lictrain checkpoint"):
        load_latest_valid(tmp_path / "empty")


def test_nonfinite_tensors_names_floating_tensors_only() -> None:
    state = {
        "ok": torch.ones(3),
        "nan": torch.tensor([1.0, float("nan")]),
        "inf": torch.tensor([float("-inf")], dtype=torch.float16),
        "ints": torch.arange(3),
        "nested": {"bad": torch.full((2,), float("inf"))},
        "number": float("nan"),  # not a tensor: not a weight
    }
    assert nonfinite_tensors(state) == ["nan", "inf", "nested.bad"]
    assert nonfinite_tensors({}) == []
