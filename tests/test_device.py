"""``resolve_device``: the one ``--device`` parser of training and evaluation."""

from __future__ import annotations

import pytest
import torch

from lictrain.device import resolve_device
from lictrain.errors import ConfigError


def test_names_and_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["tpu", "cpu:0", "cudax", "cuda:", "CUDA"])
def test_a_bad_name_is_one_line(name: str) -> None:
    with pytest.raises(ConfigError, match="--device must be auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_cuda_without_a_gpu_and_an_index_beyond_the_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"--device {name} asked for, but no CUDA GPU is visible"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"only 2 CUDA GPU\(s\) are visible \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_both_old_homes_give_the_same_function() -> None:
    from lictrain.evaluation.codec import resolve_device as from_codec
    from lictrain.training.build import resolve_device as from_build

    assert from_codec is resolve_device and from_build is resolve_device
