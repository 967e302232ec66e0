"""Shared fixtures: small image folders written to tmp dirs, offline W&B."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")


def write_images(folder: Path, count: int, size: tuple[int, int] = (96, 80), seed: int = 0, fmt: str = "png") -> list[Path]:
    """Write ``count`` smooth random RGB images (width, height = size) and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        base = rng.integers(0, 255, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize(size, Image.BILINEAR)
        path = folder / f"img{i:03d}.{fmt}"
        img.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A CompressAI-layout data set: 4 train and 2 test images of 96x80 (w x h)."""
    write_images(tmp_path / "data" / "train", 4, seed=1)
    write_images(tmp_path / "data" / "test", 2, seed=2)
    return tmp_path / "data"


@pytest.fixture
def interrupt_after_steps(monkeypatch: pytest.MonkeyPatch):
    """``arm(n, sig=SIGINT)``: the next ``fit`` receives ``sig`` (a real signal to this process) while
    its n-th training step runs, so it stops after that step with a checkpoint; ``disarm()``
    restores the real epoch loop (for the resume)."""
    import signal

    import lictrain.training.run as run_module

    real = run_module.train_one_epoch

    def arm(n: int, sig: int = signal.SIGINT) -> None:
        steps = {"n": 0}

        def counting(step, *args, **kwargs):
            def counted(batch):
                steps["n"] += 1
                if steps["n"] == n:
                    signal.raise_signal(sig)  # lands inside the step: the step must still complete
                return step(batch)
            return real(counted, *args, **kwargs)

        monkeypatch.setattr(run_module, "train_one_epoch", counting)

    def disarm() -> None:
        monkeypatch.setattr(run_module, "train_one_epoch", real)

    arm.disarm = disarm  # type: ignore[attr-defined]
    return arm
