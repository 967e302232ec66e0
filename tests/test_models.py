"""Model registry: CompressAI zoo by name, decorator registration, errors."""

from __future__ import annotations

import pytest
import torch

from lictrain.errors import ConfigError
from lictrain.models import available_models, build_model, get_spec, register_model

ZOO = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "cheng2020-anchor"]


def test_zoo_models_are_registered() -> None:
    assert set(ZOO) <= set(available_models())


@pytest.mark.parametrize("name", ZOO)
def test_zoo_models_build_and_run(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 1)
    x = torch.rand(1, 3, 64, 64)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert set(out["likelihoods"]) >= {"y"}


def test_quality_picks_the_width() -> None:
    small = sum(p.numel() for p in build_model("bmshj2018-hyperprior", 1).parameters())
    large = sum(p.numel() for p in build_model("bmshj2018-hyperprior", 6).parameters())
    assert large > 2 * small


def test_register_with_one_decorator() -> None:
    @register_model("test-identity", alignment=1, qualities=(1,))
    def identity(quality: int) -> torch.nn.Module:
        """An identity model for the test."""
        return torch.nn.Identity()

    assert "test-identity" in available_models()
    assert get_spec("test-identity").description == "An identity model for the test."
    assert isinstance(build_model("test-identity", 1), torch.nn.Identity)
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-identity", alignment=1, qualities=(1,))(identity)


def test_unknown_model_and_quality_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model 'nope'.*bmshj2018-hyperprior"):
        build_model("nope", 1)
    with pytest.raises(ConfigError, match="--quality 9"):
        build_model("cheng2020-anchor", 9)


@pytest.mark.parametrize("name", ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018",
                                  "cheng2020-anchor", "hpcm-tiny", "hpcm-base", "hpcm-large"])
def test_declared_parameter_counts_match_the_built_models(name: str) -> None:
    """``lictrain models`` prints declared sizes (no model is built there): they must be true."""
    from lictrain.models import build_model, get_spec

    spec = get_spec(name)
    assert spec.parameters is not None and set(spec.parameters) == set(spec.qualities)
    for quality in {spec.qualities[0], spec.qualities[-1]}:
        built = sum(p.numel() for p in build_model(name, quality).parameters())
        assert spec.parameters[quality] == built, (name, quality)


def test_models_table_has_a_header_and_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    from lictrain.cli.main import main

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "qualities", "parameters"]
    row = next(line for line in lines if line.startswith("bmshj2018-factorized "))
    assert "3.0-7.0 M" in row
    assert "3.7 M" in next(line for line in lines if line.startswith("hpcm-tiny "))
