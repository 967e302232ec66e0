"""Variable rate (issue 25): QVRF gains, training at λ drawn per step, rates in the .lic file."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from lictrain.cli.main import main
from lictrain.config import TrainConfig
from lictrain.errors import BitstreamError, ConfigError
from lictrain.evaluation.bitstream import pack, unpack
from lictrain.models import build_model
from lictrain.models.gains import RateGains, lambdas_in_state, make_variable_rate, rate_gains, set_gain
from lictrain.tracking.records import read_metrics
from lictrain.training.variable_rate import rate_index

warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
LAMBDAS = [0.0018, 0.0067, 0.0483]


def test_gains_start_at_qvrf_values_and_interpolate_geometrically() -> None:
    gains = RateGains([0.0483, 0.0018, 0.0067])  # sorted on the way in
    assert gains.range == (0.0018, 0.0483)
    expected = [math.sqrt(v / 0.0018) for v in LAMBDAS]
    assert [float(gains.gain(k)) for k in range(3)] == pytest.approx(expected, rel=1e-6)
    assert float(gains.gain_at(0.0067)) == pytest.approx(expected[1], rel=1e-6)
    between = math.sqrt(0.0018 * 0.0067)  # halfway in log λ: the geometric mean of the two gains
    assert float(gains.gain_at(between)) == pytest.approx(math.sqrt(expected[0] * expected[1]), rel=1e-6)
    with pytest.raises(ConfigError, match="outside this model's trained range 0.0018..0.0483"):
        gains.gain_at(0.1)
    for bad in ([0.01], [0.01, 0.01], [-1.0, 0.01]):
        with pytest.raises(ConfigError, match="--lambdas"):
            RateGains(bad)


def _bits(out: dict) -> float:
    return sum(float(torch.log2(lik).sum().neg()) for lik in out["likelihoods"].values())


@pytest.mark.parametrize("name", ["hpcm-tiny", "bmshj2018-hyperprior", "mbt2018-mean"])
def test_a_gained_model_codes_every_rate_and_gain_one_is_the_fixed_model(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 1).eval()
    x = torch.rand(1, 3, 128, 128)
    model.update(force=True)
    fixed = model(x)["x_hat"]
    params = sum(p.numel() for p in model.parameters())
    make_variable_rate(model, LAMBDAS)
    model.update(force=True)
    assert sum(p.numel() for p in model.parameters()) - params == 3 < 1e-3 * params  # under 0.1% extra
    set_gain(model, torch.tensor(1.0))
    assert torch.equal(model(x)["x_hat"], fixed)
    rates = []
    for gain in (1.0, 2.0, 4.0, 8.0):
        set_gain(model, torch.tensor(gain))
        out = model(x)
        enc = model.compress(x)
        dec = model.decompress(enc["strings"], enc["shape"])["x_hat"]
        assert torch.equal(dec, out["x_hat"].clamp(0, 1))  # the decoder reads the de-gained latent
        real = 8 * sum(len(s) for group in enc["strings"] for s in group)
        rates.append(real)
        if gain <= 4:  # an untrained model at a large gain sends outliers to the coder's escape path
            assert abs(real - _bits(out)) < 0.05 * _bits(out) + 128  # near the estimate (+ each stream's flush)
    assert rates == sorted(rates) and rates[-1] > rates[0]  # untrained: small gains may all round to zero


def test_bpp_rises_strictly_over_64_log_spaced_lambdas() -> None:
    torch.manual_seed(0)
    model = make_variable_rate(build_model("hpcm-tiny", 1).eval(), LAMBDAS)
    gains = rate_gains(model)
    x = torch.rand(1, 3, 64, 64)
    bits = []
    for k in range(64):
        lmbda = math.exp(math.log(0.0018) + (math.log(0.0483) - math.log(0.0018)) * k / 63)
        set_gain(model, gains.gain_at(lmbda).detach())
        with torch.no_grad():
            bits.append(_bits(model(x)))
    assert all(b > a for a, b in zip(bits, bits[1:]))


@pytest.mark.parametrize("name", ["mbt2018", "cheng2020-anchor"])
def test_autoregressive_models_code_every_rate_with_one_context(name: str) -> None:
    """The encoder's sequential loop leaves in ŷ exactly what the decoder rebuilds, at any gain
    (CompressAI's loop writes ``y_q + μ``, which is that only at gain 1), and bytes rise with it."""
    torch.manual_seed(0)
    model = make_variable_rate(build_model(name, 1).eval(), LAMBDAS)
    model.update(force=True)
    x = torch.rand(1, 3, 128, 128)
    rates = []
    with torch.no_grad():
        y = model.g_a(x)
        z = model.h_a(y)
        params = model.h_s(model.entropy_bottleneck.decompress(model.entropy_bottleneck.compress(z), z.shape[-2:]))
        height, width = y.shape[-2:]
        for gain in (1.0, 3.0, 8.0):
            set_gain(model, torch.tensor(gain))
            encoded = torch.nn.functional.pad(y, (2, 2, 2, 2))  # the encoder fills it with ŷ as it goes
            stream = model._compress_ar(encoded, params, height, width, 5, 2)
            decoded = torch.zeros_like(encoded)
            model._decompress_ar(stream, decoded, params, height, width, 5, 2)
            assert torch.equal(decoded, encoded), float((decoded-encoded).abs().max())
            rates.append(len(stream))
            enc = model.compress(x)
            assert torch.equal(model.decompress(enc["strings"], enc["shape"])["x_hat"],
                               model.g_s(decoded[..., 2:-2, 2:-2]).clamp(0, 1))
    assert rates == sorted(rates) and rates[-1] > rates[0]


def test_models_that_cannot_take_gains_say_why() -> None:
    with pytest.raises(ConfigError, match="one learned density per channel"):
        make_variable_rate(build_model("bmshj2018-factorized", 1), LAMBDAS)


def test_lambda_draws_are_a_pure_function_of_seed_and_step() -> None:
    draws = [rate_index(0, step, 3) for step in range(600)]
    assert draws == [rate_index(0, step, 3) for step in range(600)]
    assert draws != [rate_index(1, step, 3) for step in range(600)]
    assert all(150 < draws.count(k) < 250 for k in range(3))  # uniform


def test_settings_of_a_variable_rate_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = TrainConfig(lambdas=[0.0483, 0.0018]).validate()
    assert cfg.lambdas == [0.0018, 0.0483] and cfg.lmbda is None
    with pytest.raises(ConfigError, match="same-batch"):
        TrainConfig(lambdas=LAMBDAS, use_balanced=True, balanced_update="next-batch").validate()
    with pytest.raises(ConfigError, match="two or more distinct"):
        TrainConfig(lambdas=[0.01]).validate()
    assert main(["train", "--lambda", "0.01", "--lambdas", "0.001,0.01", "--save-path", str(tmp_path / "r")]) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="needs --lambdas"):
        TrainConfig(lmbda=0.01, rate_gains="fixed").validate()
    with pytest.raises(ConfigError, match="--rate-gains must be one of learned, fixed"):
        TrainConfig(lambdas=LAMBDAS, rate_gains="frozen").validate()


def test_a_rate_in_the_lic_header_and_old_files_unchanged() -> None:
    fields = dict(model="hpcm-tiny", quality=1, fingerprint=b"12345678", height=5, width=6, shape=(1, 2),
                  strings=[[b"abcd"]])
    coded = unpack(pack(**fields, gain=2.5, lmbda=0.004))
    assert coded.gain == 2.5 and coded.lmbda == pytest.approx(0.004)
    plain = pack(**fields)
    assert plain[4] == 1 and unpack(plain).gain is None  # a file without a rate stays version 1
    for gain in (0.0, -1.0, math.inf, 1e9):
        with pytest.raises(ValueError):
            pack(**fields, gain=gain)
    forged = bytearray(pack(**fields, gain=2.5, lmbda=0.004))
    at = forged.index(bytes.fromhex("40200000"))  # 2.5 as float32
    forged[at:at + 4] = bytes.fromhex("7f800000")  # inf
    import zlib

    forged[-4:] = zlib.crc32(bytes(forged[:-4])).to_bytes(4, "big")
    with pytest.raises(BitstreamError, match="rate gain"):
        unpack(bytes(forged))


@pytest.mark.slow
def test_train_compress_decompress_and_eval_a_variable_rate_model(image_folder: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "vr"
    argv = ["train", "--dataset", str(image_folder), "--model", "bmshj2018-hyperprior", "--patch-size", "64",
            "--test-patch-size", "64", "--batch-size", "2", "--epoch-size", "4", "--test-batch-size", "2",
            "--wandb-mode", "disabled", "--no-final-eval", "--lambdas", "0.002,0.02", "--epochs", "2",
            "--save-path", str(run)]
    assert main(argv) == 0
    rows = read_metrics(run)
    assert {"loss@0.002", "loss@0.02", "psnr@0.002", "bpp@0.02"} <= set(rows[-1])
    assert rows[-1]["loss"] == pytest.approx((rows[-1]["loss@0.002"] + rows[-1]["loss@0.02"]) / 2)
    assert rows[-1]["bpp@0.02"] > rows[-1]["bpp@0.002"]
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["lambdas"] == [0.002, 0.02] and record["config"]["lmbda"] is None
    image = next((image_folder / "test").iterdir())
    sizes = {}
    for lmbda in ("0.002", "0.007", "0.02"):
        out = tmp_path / f"{lmbda}.lic"
        assert main(["compress", str(image), "-c", str(run), "--lambda", lmbda, "-o", str(out)]) == 0
        assert unpack(out.read_bytes()).lmbda == pytest.approx(float(lmbda))
        assert main(["decompress", str(out), "-c", str(run), "-o", str(tmp_path / f"{lmbda}.png")]) == 0  # no rate flag
        sizes[lmbda] = out.stat().st_size
    assert sizes["0.002"] <= sizes["0.007"] <= sizes["0.02"]
    capsys.readouterr()
    assert main(["compress", str(image), "-c", str(run), "-o", str(tmp_path / "x.lic")]) == 2
    assert "variable-rate model (λ 0.002..0.02): pass --lambda" in capsys.readouterr().err
    assert main(["eval", str(run), "-d", str(image_folder), "--rates", "3", "-o", str(tmp_path / "ev"),
                 "--quiet", "--name", "vr"]) == 0
    curve = json.loads((tmp_path / "ev" / "vr.json").read_text())
    assert len(curve["points"]) == 3
    weights = torch.load(next(run.glob("checkpoint_epoch*.pt")), weights_only=False)["model_state"]
    assert lambdas_in_state(weights) == pytest.approx([0.002, 0.02])


def test_best_metric_rd_of_a_variable_rate_model_is_the_mean_over_its_rates() -> None:
    from types import SimpleNamespace

    from lictrain.training.callbacks import Selection
    from lictrain.training.selection import BestMetric, EarlyStopping

    best = BestMetric.from_config("rd")
    reference = SimpleNamespace(gain=lambda bpp, quality: quality - 100 * bpp)
    selection = Selection(best, EarlyStopping(best, None), reference, "mse")
    metrics = {"bpp": 0.3, "psnr": 25.0, "ms_ssim": 0.9, "bpp@0.002": 0.1, "psnr@0.002": 22.0,
               "bpp@0.02": 0.5, "psnr@0.02": 28.0}
    selection.on_epoch_end(SimpleNamespace(progress=SimpleNamespace(epoch=0)), metrics)
    assert metrics["rd_gain@0.002"] == pytest.approx(12.0) and metrics["rd_gain@0.02"] == pytest.approx(-22.0)
    assert metrics["rd_gain"] == pytest.approx(-5.0) == selection.value


def test_a_fixed_rate_checkpoint_becomes_a_variable_rate_model(tmp_path: Path) -> None:
    """QVRF's route: --pretrained FIXED --lambdas keeps every fixed-rate weight and adds the gains."""
    from lictrain.training.build import build_parts
    from lictrain.training.distributed import DistInfo

    torch.manual_seed(0)
    fixed = build_model("bmshj2018-hyperprior", 1)
    torch.save(fixed.state_dict(), tmp_path / "fixed.pt")
    cfg = TrainConfig(model="bmshj2018-hyperprior", pretrained=str(tmp_path / "fixed.pt"), lambdas=[0.002, 0.02],
                      epochs=1, wandb_mode="disabled").validate()
    parts = build_parts(cfg, torch.device("cpu"), DistInfo(), 64)
    state = parts.model.state_dict()
    assert lambdas_in_state(state) == pytest.approx([0.002, 0.02])
    assert all(torch.equal(state[k], v) for k, v in fixed.state_dict().items())
    assert type(parts.strategy).__name__ == "VariableRateStrategy"


def test_gains_start_at_the_rate_the_pretrained_model_was_trained_at(tmp_path: Path) -> None:
    """A lictrain checkpoint says its λ: that rate's gain starts at 1 (the fixed model as it was),
    the others at √(λ_k/λ_trained); a bare state dict does not say, so gains start from λ_min."""
    from lictrain.training.build import build_parts
    from lictrain.training.distributed import DistInfo

    torch.manual_seed(0)
    fixed = build_model("bmshj2018-hyperprior", 1)
    torch.save({"model_state": fixed.state_dict(), "config": {"model": "bmshj2018-hyperprior", "quality": 1,
                                                                 "lmbda": 0.0067}}, tmp_path / "ours.pt")
    torch.save(fixed.state_dict(), tmp_path / "bare.pt")
    gains = {}
    for name in ("ours", "bare"):
        cfg = TrainConfig(model="bmshj2018-hyperprior", pretrained=str(tmp_path / f"{name}.pt"),
                          lambdas=[0.0018, 0.0067, 0.0483], epochs=1, wandb_mode="disabled").validate()
        gains[name] = rate_gains(build_parts(cfg, torch.device("cpu"), DistInfo(), 64).model)
    assert [float(gains["ours"].gain(k)) for k in range(3)] == pytest.approx(
        [math.sqrt(0.0018 / 0.0067), 1.0, math.sqrt(0.0483 / 0.0067)], rel=1e-6)
    assert [float(gains["bare"].gain(k)) for k in range(3)] == pytest.approx(
        [1.0, math.sqrt(0.0067 / 0.0018), math.sqrt(0.0483 / 0.0018)], rel=1e-6)


def test_fixed_gains_stay_where_they_start() -> None:
    """``--rate-gains fixed``: the gains are no parameter of the optimiser and one step leaves them."""
    from lictrain.training.build import build_parts
    from lictrain.training.distributed import DistInfo

    torch.manual_seed(0)
    for mode, moves in (("fixed", False), ("learned", True)):
        cfg = TrainConfig(model="bmshj2018-hyperprior", lambdas=[0.0018, 0.0483], rate_gains=mode, epochs=1,
                          wandb_mode="disabled").validate()
        model = build_parts(cfg, torch.device("cpu"), DistInfo(), 64).model
        gains = rate_gains(model)
        before = gains.log_gains.detach().clone()
        optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
        set_gain(model, gains.gain(1))
        out = model(torch.rand(1, 3, 64, 64))
        sum(torch.log(lik).sum() for lik in out["likelihoods"].values()).neg().backward()
        optimiser.step()
        assert (not torch.equal(gains.log_gains.detach(), before)) is moves
