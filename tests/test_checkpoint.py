"""CheckpointManager: retention, tracking file, safety, async writes, locks, RNG, export."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lictrain.checkpoint.manager as manager_mod
from lictrain.checkpoint import (
    LOCK_NAME,
    TRACKING_FILE,
    CheckpointManager,
    capture_rng_state,
    checkpoint_filename,
    export_safetensors,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng_state,
)
from lictrain.cli import export as export_cli
from lictrain.errors import CheckpointError, ConfigError, LictrainError

LOGGER = "lictrain.checkpoint"


def _state(epoch: int, n: int = 8) -> dict:
    return {"w": torch.full((n,), float(epoch)), "b": torch.arange(3, dtype=torch.int64) + epoch}


def _opt_state(epoch: int, n: int = 8) -> dict:
    return {
        "state": {0: {"step": torch.tensor(float(epoch)), "exp_avg": torch.full((n,), 0.5 * epoch)}},
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}],
    }


def _ckpt_files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir() if p.name.startswith("checkpoint_epoch")}


def _expected(history, keep_last_n, keep_best, higher_is_better=False):
    """Reference retention: union of last N saved and best M finite, eligible metrics."""
    last = [e for e, _, _ in history[-keep_last_n:]]
    sign = -1.0 if higher_is_better else 1.0
    ranked = sorted(
        (sign * m, i, e)
        for i, (e, m, ok) in enumerate(history)
        if ok and m is not None and math.isfinite(m)
    )
    best = [e for _, _, e in ranked[:keep_best]]
    return {checkpoint_filename(e) for e in set(last) | set(best)}, best, last


# --------------------------------------------------------------------------- retention


@pytest.mark.parametrize("async_save", [False, True])
@pytest.mark.parametrize(
    "keep_last_n,keep_best,higher", [(3, 3, False), (1, 2, True), (2, 0, False), (4, 1, False)]
)
def test_retention_is_exactly_last_n_union_best_m(tmp_path, async_save, keep_last_n, keep_best, higher):
    rnd = random.Random(keep_last_n * 10 + keep_best)
    history = []
    with CheckpointManager(
        tmp_path, keep_last_n=keep_last_n, keep_best=keep_best, higher_is_better=higher,
        async_save=async_save, fsync=False,
    ) as cm:
        for epoch in range(30):
            metric = round(rnd.uniform(0, 10), 3)
            cm.save_checkpoint(epoch, _state(epoch), _opt_state(epoch), metric_value=metric)
            history.append((epoch, metric, True))
            cm.wait()
            files, best, last = _expected(history, keep_last_n, keep_best, higher)
            assert _ckpt_files(tmp_path) == files, epoch
            tracking = json.loads((tmp_path / TRACKING_FILE).read_text())
            assert tracking["last_checkpoints"] == [checkpoint_filename(e) for e in last]
            assert [b["path"] for b in tracking["best_checkpoints"]] == [
                checkpoint_filename(e) for e in best
            ]
            metrics = [b["metric"] for b in tracking["best_checkpoints"]]
            assert metrics == sorted(metrics, reverse=higher)
        assert cm.latest_checkpoint == tmp_path / checkpoint_filename(29)
        if keep_best:
            assert cm.best_checkpoint == tmp_path / checkpoint_filename(best[0])
        else:
            assert cm.best_checkpoint is None


def test_best_checkpoints_survive_cleanup_and_best_list_is_truncated(tmp_path):
    # The guide's sample deletes best ones in its last-N cleanup and never truncates the list.
    losses = [1.0, 5, 6, 7, 8, 9, 0.5, 10, 11, 12, 13]
    with CheckpointManager(tmp_path, keep_last_n=2, keep_best=2, async_save=False, fsync=False) as cm:
        for e, v in enumerate(losses):
            cm.save_checkpoint(e, _state(e), None, metric_value=v)
        assert _ckpt_files(tmp_path) == {checkpoint_filename(e) for e in (0, 6, 9, 10)}
        assert cm.best_checkpoints == [tmp_path / checkpoint_filename(6), tmp_path / checkpoint_filename(0)]
        assert cm.last_checkpoints == [tmp_path / checkpoint_filename(9), tmp_path / checkpoint_filename(10)]
    tracking = json.loads((tmp_path / TRACKING_FILE).read_text())
    assert tracking["best_checkpoints"] == [
        {"path": checkpoint_filename(6), "metric": 0.5, "epoch": 6},
        {"path": checkpoint_filename(0), "metric": 1.0, "epoch": 0},
    ]
    assert tracking["metric_name"] == "loss" and tracking["higher_is_better"] is False


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_metric_is_recent_only_and_warned(tmp_path, caplog, bad):
    with CheckpointManager(tmp_path, keep_last_n=1, keep_best=2, async_save=False, fsync=False) as cm:
        cm.save_checkpoint(0, _state(0), None, metric_value=3.0)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            cm.save_checkpoint(1, _state(1), None, metric_value=bad)
        assert "not finite" in caplog.text
        assert cm.best_checkpoint == tmp_path / checkpoint_filename(0)
        assert cm.latest_checkpoint == tmp_path / checkpoint_filename(1)
        ck = cm.load()
        assert ck["epoch"] == 1 and not math.isfinite(ck["metric_value"])
        cm.save_checkpoint(2, _state(2), None, metric_value=4.0)
        # epoch 1 left the last N and was never ranked: gone; 0 and 2 are the best two.
        assert _ckpt_files(tmp_path) == {checkpoint_filename(0), checkpoint_filename(2)}
    json.loads((tmp_path / TRACKING_FILE).read_text())  # strict JSON (no NaN literal)


def test_is_best_hint(tmp_path, caplog):
    with CheckpointManager(tmp_path, keep_last_n=1, keep_best=2, async_save=False, fsync=False) as cm:
        cm.save_checkpoint(0, _state(0), metric_value=5.0)
        cm.save_checkpoint(1, _state(1), metric_value=1.0, is_best=False)  # opted out
        cm.save_checkpoint(2, _state(2), metric_value=4.0, is_best=True)
        cm.save_checkpoint(3, _state(3), metric_value=6.0)
        assert cm.best_checkpoints == [tmp_path / checkpoint_filename(2), tmp_path / checkpoint_filename(0)]
        assert checkpoint_filename(1) not in _ckpt_files(tmp_path)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            cm.save_checkpoint(4, _state(4), metric_value=None, is_best=True)
        assert "cannot be ranked" in caplog.text
        assert cm.best_checkpoints == [tmp_path / checkpoint_filename(2), tmp_path / checkpoint_filename(0)]


def test_checkpoint_contents_and_extras_round_trip(tmp_path):
    sched = {"last_epoch": 7, "_last_lr": [1e-4], "base_lrs": [1e-4]}
    with CheckpointManager(tmp_path, fsync=False) as cm:
        path = cm.save_checkpoint(
            7, _state(7), _opt_state(7), metric_value=torch.tensor(1.25), scheduler=sched,
            wandb_run_id="abc123", best_metric=np.float64(1.25), aux=_opt_state(2),
        )
        assert path == tmp_path / "checkpoint_epoch00007.pt"
        ck = cm.load()
    assert ck["epoch"] == 7 and ck["metric"] == "loss" and ck["metric_value"] == 1.25
    assert torch.equal(ck["model_state"]["w"], _state(7)["w"])
    assert torch.equal(ck["optimizer_state"]["state"][0]["exp_avg"], _opt_state(7)["state"][0]["exp_avg"])
    assert ck["optimizer_state"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert ck["scheduler"] == sched and ck["wandb_run_id"] == "abc123"
    assert type(ck["best_metric"]) is float and ck["best_metric"] == 1.25
    assert torch.equal(ck["aux"]["state"][0]["exp_avg"], _opt_state(2)["state"][0]["exp_avg"])
    # A real model + optimizer round-trips into load_state_dict.
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    with CheckpointManager(tmp_path / "real", fsync=False) as cm:
        cm.save_checkpoint(0, model.state_dict(), opt.state_dict(), metric_value=0.1)
        ck = cm.load()
    model2 = torch.nn.Linear(4, 3)
    opt2 = torch.optim.Adam(model2.parameters())
    model2.load_state_dict(ck["model_state"])
    opt2.load_state_dict(ck["optimizer_state"])
    assert torch.equal(model2.weight, model.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg_sq"], opt.state_dict()["state"][0]["exp_avg_sq"])


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="keep_last_n"):
        CheckpointManager(tmp_path, keep_last_n=0)
    with pytest.raises(ConfigError, match="keep_best"):
        CheckpointManager(tmp_path, keep_best=-1)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        CheckpointManager(tmp_path / "afile")
    with CheckpointManager(tmp_path / "d", fsync=False) as cm:
        with pytest.raises(ConfigError, match="epoch"):
            cm.save_checkpoint(-1, _state(0))
        with pytest.raises(ConfigError, match="reserved"):
            cm.save_checkpoint(0, _state(0), metric=3)
        with pytest.raises(CheckpointError, match="numpy.ndarray.*torch.from_numpy"):
            cm.save_checkpoint(0, _state(0), stats=np.zeros(3))

        class Opaque:
            pass

        with pytest.raises(CheckpointError, match=r"extra\[0\].*weights_only"):
            cm.save_checkpoint(0, _state(0), extra=[Opaque()])
        assert cm.latest_checkpoint is None
        with pytest.raises(CheckpointError, match="no checkpoint saved"):
            cm.load()
    with pytest.raises(CheckpointError, match="closed"):
        cm.save_checkpoint(0, _state(0))


# --------------------------------------------------------------------------- resume / tracking


def test_new_manager_resumes_from_tracking_file(tmp_path, caplog):
    with CheckpointManager(tmp_path, keep_last_n=2, keep_best=2, fsync=False) as cm:
        for e, v in enumerate([3.0, 1.0, 4.0, 5.0]):
            cm.save_checkpoint(e, _state(e), metric_value=v)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cm = CheckpointManager(tmp_path, keep_last_n=2, keep_best=2, fsync=False)
    assert caplog.text == ""
    try:
        assert cm.latest_checkpoint == tmp_path / checkpoint_filename(3)
        assert cm.best_checkpoints == [tmp_path / checkpoint_filename(1), tmp_path / checkpoint_filename(0)]
        cm.save_checkpoint(4, _state(4), metric_value=6.0)
        cm.save_checkpoint(5, _state(5), metric_value=0.5)
        cm.wait()
        assert _ckpt_files(tmp_path) == {checkpoint_filename(e) for e in (1, 4, 5)}
    finally:
        cm.close()


@pytest.mark.parametrize("damage", ["missing", "corrupt", "not-a-dict", "garbage-entries"])
def test_missing_or_corrupt_tracking_file_is_rebuilt(tmp_path, caplog, damage):
    with CheckpointManager(tmp_path, keep_last_n=2, keep_best=1, fsync=False) as cm:
        for e, v in enumerate([2.0, 1.0, 3.0, 4.0]):
            cm.save_checkpoint(e, _state(e), metric_value=v)
    tf = tmp_path / TRACKING_FILE
    if damage == "missing":
        tf.unlink()
    elif damage == "corrupt":
        tf.write_text(tf.read_text()[:37])
    elif damage == "not-a-dict":
        tf.write_text("[1, 2]")
    else:
        tf.write_text(json.dumps({"last_checkpoints": 5, "best_checkpoints": [1, None], "checkpoints": {checkpoint_filename(3): "x"}}))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cm = CheckpointManager(tmp_path, keep_last_n=2, keep_best=1, fsync=False)
    try:
        if damage != "garbage-entries":
            assert "rebuilding" in caplog.text
        assert cm.latest_checkpoint == tmp_path / checkpoint_filename(3)
        assert cm.best_checkpoint == tmp_path / checkpoint_filename(1)
        cm.save_checkpoint(4, _state(4), metric_value=9.0)
        cm.wait()
        assert _ckpt_files(tmp_path) == {checkpoint_filename(e) for e in (1, 3, 4)}
        tracking = json.loads(tf.read_text())
        assert tracking["last_checkpoints"] == [checkpoint_filename(3), checkpoint_filename(4)]
    finally:
        cm.close()


def test_tampered_tracking_file_never_deletes_foreign_files(tmp_path, caplog):
    run = tmp_path / "run"
    outside = tmp_path / "precious.pt"
    outside.write_bytes(b"keep me")
    other_run = tmp_path / "other"
    other_run.mkdir()
    foreign_ours = other_run / checkpoint_filename(0)  # our naming, but another directory
    foreign_ours.write_bytes(b"keep me too")
    with CheckpointManager(run, keep_last_n=1, keep_best=1, async_save=False, fsync=False) as cm:
        cm.save_checkpoint(0, _state(0), metric_value=1.0)
    inside_other = run / "notes.pt"  # inside, but not a name the manager writes
    inside_other.write_bytes(b"mine")
    tf = run / TRACKING_FILE
    data = json.loads(tf.read_text())
    bad = [str(outside), "../precious.pt", str(foreign_ours), "../other/" + checkpoint_filename(0),
           "notes.pt", "/etc/passwd"]
    data["last_checkpoints"] = bad + data["last_checkpoints"]
    data["best_checkpoints"] = [{"path": p, "metric": -1e9} for p in bad] + data["best_checkpoints"]
    for p in bad:
        data["checkpoints"][p] = {"epoch": 0, "metric": -1e9, "seq": 99, "metric_name": "loss"}
    tf.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cm = CheckpointManager(run, keep_last_n=1, keep_best=1, async_save=False, fsync=False)
    try:
        assert "never be deleted" in caplog.text
        assert cm.latest_checkpoint == run / checkpoint_filename(0)
        for e in range(1, 5):
            cm.save_checkpoint(e, _state(e), metric_value=float(e + 10))
    finally:
        cm.close()
    assert outside.read_bytes() == b"keep me"
    assert foreign_ours.read_bytes() == b"keep me too"
    assert inside_other.read_bytes() == b"mine"
    assert _ckpt_files(run) == {checkpoint_filename(0), checkpoint_filename(4)}
    tracking = json.loads(tf.read_text())
    assert all("/" not in p for p in tracking["last_checkpoints"])


def test_absolute_paths_in_tracking_are_accepted(tmp_path):
    with CheckpointManager(tmp_path, keep_last_n=2, keep_best=1, fsync=False) as cm:
        for e, v in enumerate([1.0, 2.0, 3.0]):
            cm.save_checkpoint(e, _state(e), metric_value=v)
    # A guide-style tracking file: absolute paths, no per-file metadata.
    guide = {
        "last_checkpoints": [str(tmp_path / checkpoint_filename(e)) for e in (1, 2)],
        "best_checkpoints": [{"path": str(tmp_path / checkpoint_filename(0)), "metric": 1.0}],
    }
    (tmp_path / TRACKING_FILE).write_text(json.dumps(guide))
    with CheckpointManager(tmp_path, keep_last_n=2, keep_best=1, fsync=False) as cm:
        assert cm.latest_checkpoint == tmp_path / checkpoint_filename(2)
        assert cm.best_checkpoint == tmp_path / checkpoint_filename(0)


def test_crash_leftovers_are_swept_and_untracked_newer_file_adopted(tmp_path):
    with CheckpointManager(tmp_path, keep_last_n=2, keep_best=1, async_save=False, fsync=False) as cm:
        for e in range(3):
            cm.save_checkpoint(e, _state(e), metric_value=float(e))
        old_tracking = (tmp_path / TRACKING_FILE).read_text()
        cm.save_checkpoint(3, _state(3), metric_value=3.0)
    # Simulate a kill after os.replace of epoch 3, before the tracking update and deletion:
    # the tracking file is the old one and epoch 1's file (dropped by epoch 3) is back.
    (tmp_path / TRACKING_FILE).write_text(old_tracking)
    torch.save({"epoch": 1, "model_state": _state(1), "optimizer_state": None, "metric": "loss",
                "metric_value": 1.0, "lictrain": {"seq": 1, "best_eligible": True}},
               tmp_path / checkpoint_filename(1))
    (tmp_path / ".tmp-lictrain-checkpoint_epoch00004.pt.123.abcd").write_bytes(b"half a file")
    (tmp_path / ".tmp-lictrain-checkpoint_tracking.json.123.ef01").write_bytes(b"{")
    with CheckpointManager(tmp_path, keep_last_n=2, keep_best=1, async_save=False, fsync=False) as cm:
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
        assert cm.latest_checkpoint == tmp_path / checkpoint_filename(3)
        assert cm.load()["epoch"] == 3
        cm.save_checkpoint(4, _state(4), metric_value=4.0)
        assert _ckpt_files(tmp_path) == {checkpoint_filename(e) for e in (0, 3, 4)}


def test_latest_is_most_recently_saved_not_highest_epoch(tmp_path):
    with CheckpointManager(tmp_path, keep_last_n=3, keep_best=0, async_save=False, fsync=False) as cm:
        for e in range(6):
            cm.save_checkpoint(e, _state(e), metric_value=1.0)
    # Resume from epoch 3 (say) and save epoch 4 again with different weights.
    with CheckpointManager(tmp_path, keep_last_n=3, keep_best=0, async_save=False, fsync=False) as cm:
        cm.save_checkpoint(4, _state(40), metric_value=1.0)
        assert cm.latest_checkpoint == tmp_path / checkpoint_filename(4)
    assert resolve_checkpoint(tmp_path) == tmp_path / checkpoint_filename(4)
    assert load_checkpoint(tmp_path)["model_state"]["w"][0] == 40.0


# --------------------------------------------------------------------------- async


def test_async_save_copies_state_before_returning(tmp_path):
    model = {"w": torch.zeros(1000)}
    opt = {"state": {0: {"exp_avg": torch.ones(1000)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    nested = {"list": [torch.ones(3)], "tuple": (torch.ones(2),)}
    with CheckpointManager(tmp_path, fsync=False) as cm:
        cm.save_checkpoint(0, model, opt, metric_value=1.0, nested=nested)
        model["w"].add_(5)  # training continues and mutates in place
        opt["state"][0]["exp_avg"].mul_(0)
        opt["param_groups"][0]["lr"] = 99.0
        nested["list"][0].add_(1)
        nested["tuple"][0].add_(1)
        ck = cm.load()
    assert torch.all(ck["model_state"]["w"] == 0)
    assert torch.all(ck["optimizer_state"]["state"][0]["exp_avg"] == 1)
    assert ck["optimizer_state"]["param_groups"][0]["lr"] == 0.1
    assert torch.all(ck["nested"]["list"][0] == 1) and torch.all(ck["nested"]["tuple"][0] == 1)


@pytest.mark.parametrize("async_save", [True, False])
def test_reused_buffers_never_leak_between_checkpoints(tmp_path, async_save):
    w = torch.zeros(4096)
    m = torch.zeros(4096)
    with CheckpointManager(tmp_path, keep_last_n=8, keep_best=0, async_save=async_save,
                           fsync=False) as cm:
        for e in range(8):
            w.fill_(e)
            m.fill_(-e)
            extra = torch.full((e + 1,), float(e))  # a shape that changes every save
            cm.save_checkpoint(e, {"w": w, "same_shape": w[:10] * 2}, {"state": {0: {"m": m}}},
                               grow=extra, scalar=torch.tensor(e))
            w.fill_(1000)  # training mutates right after the (async) save returns
            m.fill_(1000)
        cm.wait()
        for e in range(8):
            ck = cm.load(checkpoint_filename(e))
            assert torch.all(ck["model_state"]["w"] == e)
            assert torch.all(ck["model_state"]["same_shape"] == 2 * e)
            assert torch.all(ck["optimizer_state"]["state"][0]["m"] == -e)
            assert torch.equal(ck["grow"], torch.full((e + 1,), float(e)))
            assert ck["scalar"].item() == e


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_state_is_copied_to_cpu(tmp_path):
    w = torch.randint(-1000, 1000, (1 << 16,), device="cuda").float().requires_grad_()  # exact sums
    expected = w.detach().cpu().clone()
    with CheckpointManager(tmp_path, fsync=False) as cm:
        for e in range(3):  # the second and third saves copy into reused pinned buffers
            cm.save_checkpoint(e, {"w": w}, {"state": {0: {"m": w.detach() * 2}}}, metric_value=1.0)
            with torch.no_grad():
                w.add_(1)  # queued on the stream right after the copy
            ck = cm.load()
            assert ck["model_state"]["w"].device.type == "cpu"
            assert torch.equal(ck["model_state"]["w"], expected + e)
            assert torch.equal(ck["optimizer_state"]["state"][0]["m"], (expected + e) * 2)


def test_background_failure_is_raised_at_next_call(tmp_path, monkeypatch):
    real = manager_mod.atomic_write
    calls = {"n": 0}

    def failing(final, write, *, fsync):
        if final.name == checkpoint_filename(1) and calls["n"] == 0:
            calls["n"] += 1
            raise OSError(28, "No space left on device")
        return real(final, write, fsync=fsync)

    monkeypatch.setattr(manager_mod, "atomic_write", failing)
    cm = CheckpointManager(tmp_path, keep_last_n=3, fsync=False)
    try:
        cm.save_checkpoint(0, _state(0), metric_value=1.0)
        cm.save_checkpoint(1, _state(1), metric_value=1.0)  # fails in the background
        with pytest.raises(CheckpointError, match="(?i)no space left") as info:  # old and new wording
            for _ in range(100):  # the error surfaces at the next call, whichever it is
                time.sleep(0.01)
                cm.save_checkpoint(2, _state(2), metric_value=1.0)
        assert isinstance(info.value.__cause__, OSError)
        cm.save_checkpoint(3, _state(3), metric_value=1.0)  # raised once, then saving goes on
        cm.wait()
        assert checkpoint_filename(1) not in _ckpt_files(tmp_path)
        assert cm.latest_checkpoint == tmp_path / checkpoint_filename(3)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    finally:
        cm.close()


def test_wait_raises_background_failure(tmp_path, monkeypatch):
    def boom(final, write, *, fsync):
        raise PermissionError(13, "Permission denied")

    cm = CheckpointManager(tmp_path, fsync=False)
    monkeypatch.setattr(manager_mod, "atomic_write", boom)
    cm.save_checkpoint(0, _state(0))
    with pytest.raises(CheckpointError, match="(?i)permission denied"):
        cm.wait()
    cm.save_checkpoint(1, _state(1))
    with pytest.raises(CheckpointError, match="(?i)permission denied"):
        cm.close()
    assert not (tmp_path / LOCK_NAME).exists()  # released despite the error


# --------------------------------------------------------------------------- safe loading


def test_unsafe_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model_state": {}, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="arbitrary Python objects.*weights-only") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    np_path = tmp_path / "numpy.pt"
    torch.save({"model_state": {"w": np.zeros(2)}}, np_path)
    with pytest.raises(CheckpointError, match="arbitrary Python objects"):
        load_checkpoint(np_path)
    with CheckpointManager(tmp_path / "run", fsync=False) as cm:
        with pytest.raises(CheckpointError, match="arbitrary"):
            cm.load(path)


def test_missing_truncated_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    torch.save({"model_state": {"w": torch.ones(10000)}}, good)
    data = good.read_bytes()
    for name, content in [("trunc.pt", data[: len(data) // 2]), ("empty.pt", b""),
                          ("garbage.pt", bytes(range(256)) * 4), ("text.pt", b"hello\n")]:
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(CheckpointError, match="corrupt") as info:
            load_checkpoint(p)
        assert str(p) in str(info.value) and "\n" not in str(info.value)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_corrupt_checkpoint_in_run_dir_is_skipped_on_rebuild(tmp_path, caplog):
    with CheckpointManager(tmp_path, keep_last_n=3, keep_best=0, async_save=False, fsync=False) as cm:
        for e in range(3):
            cm.save_checkpoint(e, _state(e))
    (tmp_path / TRACKING_FILE).unlink()
    (tmp_path / checkpoint_filename(2)).write_bytes(b"broken")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with CheckpointManager(tmp_path, keep_last_n=3, keep_best=0, fsync=False) as cm:
            assert cm.latest_checkpoint == tmp_path / checkpoint_filename(1)
    assert "unreadable" in caplog.text


def test_resolve_and_load_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no lictrain checkpoint"):
        resolve_checkpoint(empty)
    run = tmp_path / "run"
    with CheckpointManager(run, keep_last_n=2, fsync=False) as cm:
        for e in range(4):
            cm.save_checkpoint(e, _state(e), metric_value=float(-e))
        # resolve works on a directory another manager holds (read-only, no lock needed)
        cm.wait()
        assert resolve_checkpoint(run) == run / checkpoint_filename(3)
        assert cm.load(run)["epoch"] == 3
        assert cm.load(checkpoint_filename(2))["epoch"] == 2  # a name inside save_dir
        assert cm.load(run / checkpoint_filename(2))["epoch"] == 2
    assert resolve_checkpoint(run / checkpoint_filename(2)) == run / checkpoint_filename(2)
    assert load_checkpoint(run)["epoch"] == 3
    with CheckpointManager(tmp_path / "other", fsync=False) as cm:
        assert cm.load(run)["epoch"] == 3


# --------------------------------------------------------------------------- best weights only


def test_best_weights_only_keeps_best_as_weights(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 64)).sum().backward()
    opt.step()
    with CheckpointManager(tmp_path, keep_last_n=2, keep_best=1, best_weights_only=True,
                           async_save=False, fsync=False) as cm:
        for e, v in enumerate([1.0, 5.0, 6.0, 7.0]):
            cm.save_checkpoint(e, model.state_dict(), opt.state_dict(), metric_value=v,
                               config={"model": "tiny"}, rng=capture_rng_state())
        assert _ckpt_files(tmp_path) == {checkpoint_filename(e) for e in (0, 2, 3)}
        best = cm.load(cm.best_checkpoint)
        latest = cm.load()
    assert "optimizer_state" not in best and "rng" not in best
    assert best["config"] == {"model": "tiny"} and best["epoch"] == 0 and best["metric_value"] == 1.0
    assert best["lictrain"]["kind"] == "weights" and latest["lictrain"]["kind"] == "full"
    for k, v in model.state_dict().items():
        assert torch.equal(best["model_state"][k], v)
    assert "optimizer_state" in latest and "rng" in latest
    full = (tmp_path / checkpoint_filename(3)).stat().st_size
    slim = (tmp_path / checkpoint_filename(0)).stat().st_size
    assert slim < 0.45 * full, (slim, full)
    tracking = json.loads((tmp_path / TRACKING_FILE).read_text())
    assert tracking["checkpoints"][checkpoint_filename(0)]["kind"] == "weights"
    # A new manager keeps it weights-only without rewriting (stamp still matches).
    with CheckpointManager(tmp_path, keep_last_n=2, keep_best=1, best_weights_only=True,
                           async_save=False, fsync=False) as cm:
        assert cm.best_checkpoint == tmp_path / checkpoint_filename(0)


# --------------------------------------------------------------------------- lock


def test_second_manager_on_same_dir_is_refused(tmp_path):
    cm = CheckpointManager(tmp_path, fsync=False)
    try:
        assert (tmp_path / LOCK_NAME).exists()
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(CheckpointError, match="in use by another") as info:
            CheckpointManager(tmp_path, fsync=False)
        assert isinstance(info.value, LictrainError) and str(os.getpid()) in str(info.value)
    finally:
        cm.close()
    assert not (tmp_path / LOCK_NAME).exists()
    CheckpointManager(tmp_path, fsync=False).close()


def test_stale_lock_of_dead_process_is_taken_over(tmp_path, caplog):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(proc.stdout)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cm = CheckpointManager(tmp_path, fsync=False)
    try:
        assert "stale lock" in caplog.text and str(dead) in caplog.text
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        cm.close()


def test_release_on_a_read_only_folder_does_not_raise(tmp_path, monkeypatch, caplog):
    """The folder turned read-only mid-run: removing the lock file fails, but release must not
    raise (it would bury the error that ended the run) and must still drop the flock."""
    from lictrain.checkpoint import RunDirLock

    lock = RunDirLock(tmp_path).acquire()
    real_unlink = Path.unlink

    def read_only(self, *args, **kwargs):
        if self.name == LOCK_NAME:
            raise PermissionError(13, "Permission denied", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", read_only)
    with caplog.at_level(logging.DEBUG, logger="lictrain.checkpoint.lock"):
        lock.release()
    assert not lock.held and "could not remove lock file" in caplog.text
    assert (tmp_path / LOCK_NAME).exists()  # left behind, but nobody holds it:
    monkeypatch.undo()
    RunDirLock(tmp_path).acquire().release()  # the flock is gone: the next run takes it over
    lock.release()  # twice: still a no-op


# --------------------------------------------------------------------------- rng


def test_rng_state_round_trip_through_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(123)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached gaussian (has_gauss) in numpy's state
    random.gauss(0, 1)
    _ = torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen)
    state = capture_rng_state(generators={"data": gen})

    def draw():
        return (torch.rand(5).tolist(), np.random.rand(5).tolist(), np.random.normal(),
                [random.random() for _ in range(5)], random.gauss(0, 1),
                torch.randperm(10, generator=gen).tolist())

    first = draw()
    with CheckpointManager(tmp_path, fsync=False) as cm:
        cm.save_checkpoint(0, _state(0), rng=state)
        loaded = cm.load()["rng"]  # weights_only=True round trip
    draw()
    restore_rng_state(loaded, generators={"data": gen})
    assert draw() == first


def test_restore_rng_rejects_garbage():
    with pytest.raises(CheckpointError, match="RNG state"):
        restore_rng_state({"nope": 1})
    state = capture_rng_state()
    state["numpy"]["keys"] = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(CheckpointError, match="damaged"):
        restore_rng_state(state)


# --------------------------------------------------------------------------- export


def test_export_safetensors_and_cli(tmp_path, capsys):
    from safetensors.torch import load_file

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model[0].weight.data = model[0].weight.data[:, :, :, :]  # a view is fine too
    run = tmp_path / "run"
    with CheckpointManager(run, fsync=False) as cm:
        cm.save_checkpoint(3, model.state_dict(), None, metric_value=0.25)
    out = export_safetensors(run, tmp_path / "m.safetensors")
    tensors = load_file(out)
    assert set(tensors) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(tensors[k], v)
    # a bare state_dict with tied (shared-storage) tensors
    w = torch.randn(4, 4)
    torch.save({"a": w, "b": w}, tmp_path / "tied.pt")
    tied = load_file(export_safetensors(tmp_path / "tied.pt", tmp_path / "tied.safetensors"))
    assert torch.equal(tied["a"], tied["b"])

    parser = export_cli.build_parser()
    args = parser.parse_args([str(run / checkpoint_filename(3)), "--out", str(tmp_path / "c.safetensors")])
    assert export_cli.run(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert set(load_file(tmp_path / "c.safetensors")) == set(model.state_dict())
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    p = export_cli.add_parser(sub)
    assert p.parse_args(["x.pt", "--out", "y"]).func is export_cli.run
    with pytest.raises(CheckpointError, match="does not exist"):
        export_cli.run(parser.parse_args([str(tmp_path / "nope.pt"), "--out", str(tmp_path / "z")]))
    torch.save({"foo": 1}, tmp_path / "nomodel.pt")
    with pytest.raises(CheckpointError, match="model_state"):
        export_safetensors(tmp_path / "nomodel.pt", tmp_path / "z.safetensors")
