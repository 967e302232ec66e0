"""Official HPCM checkpoints (``lyq133/LIC-HPCM``): detection, conversion, official s2 placement.

``tests/fixtures/hpcm_official_{base,large}.json`` list the names and shapes of the official
HPCM_Base/HPCM_Large ``state_dict`` (dumped from the official code; facts, not code). The
official code itself is not needed here: :func:`test_forward_matches_the_official_model`
pins values measured by running it on the same seeded weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lictrain.errors import CheckpointError
from lictrain.models import build_model, get_spec
from lictrain.models.hpcm import HPCM, TINY
from lictrain.models.hpcm.context import FIRST_STEP, Lattice
from lictrain.models.hpcm.official import convert_official_hpcm, detect_official_hpcm, official_manifest

FIXTURES = Path(__file__).parent / "fixtures"
VARIANTS = {"hpcm-base-official": "base", "hpcm-large-official": "large"}
BUFFERS = {"scale_table", "quantized_cdf_z", "cdf_length_z", "offset_z", "quantized_cdf_y", "cdf_length_y", "offset_y",
           "entropy_estimation.beta", "entropy_estimation.scale_lower_bound.bound",
           "entropy_estimation.likelihood_lower_bound.bound"}


def manifest(variant: str) -> dict[str, tuple[int, ...]]:
    """The official ``state_dict`` names and shapes of ``variant`` ("base" or "large")."""
    data = json.loads((FIXTURES / f"hpcm_official_{variant}.json").read_text())
    return {k: tuple(v) for k, v in data.items()}


def random_official_state(names: dict[str, tuple[int, ...]], seed: int = 0,
                          device: str = "cpu") -> dict[str, torch.Tensor]:
    """Seeded random tensors for an official manifest (values like a fresh official model's).

    Weights ~ U(±1/sqrt(fan_in)), biases ~ U(±0.05), per-step gains 1 + 0.1·N, z prior means
    0.3·N and scales exp(0.3·N) (perturbed so that their mapping matters); the entropy
    buffers hold the official constants. ``device="meta"`` gives shapes only (for names).
    """
    if device == "meta":
        return {k: torch.empty(s, device="meta") for k, s in names.items()}
    gen = torch.Generator().manual_seed(seed)
    constants = {"entropy_estimation.beta": 1.5, "entropy_estimation.scale_lower_bound.bound": 0.12,
                 "entropy_estimation.likelihood_lower_bound.bound": 1e-9}
    state = {}
    for name, shape in names.items():
        if name in constants:
            t = torch.tensor([constants[name]])
        elif name.startswith("adaptive_params_list."):
            t = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif name == "means_hyper":
            t = 0.3 * torch.randn(shape, generator=gen)
        elif name == "scales_hyper":
            t = torch.exp(0.3 * torch.randn(shape, generator=gen))
        elif len(shape) == 4:
            t = (2 * torch.rand(shape, generator=gen) - 1) / math.sqrt(math.prod(shape[1:]))
        elif len(shape) == 1 and shape[0] > 0:
            t = (2 * torch.rand(shape, generator=gen) - 1) * 0.05
        else:
            t = torch.zeros(shape)
        state[name] = t
    return state


def pinned_state() -> dict[str, torch.Tensor]:
    """The official-Base weights of the pinned forward test.

    ``g_a``'s last conv is scaled x5 so that y spans several quantisation bins (std ≈ 0.44):
    at the fresh-init scale almost every latent rounds to its mean and the s2 placement
    would hardly show.
    """
    state = random_official_state(manifest("base"), seed=0)
    state["g_a.branch.11.weight"] *= 5
    return state


def pinned_image() -> torch.Tensor:
    """1x3x256x256 in [0, 1]: the official model needs sides that are multiples of 256."""
    return torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))


def _load_strict(name: str, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict(strict=True)`` into ``build_model(name, 1)``, built on the meta device (fast)."""
    with torch.device("meta"):
        model = build_model(name, 1)
    model.load_state_dict(state, strict=True, assign=True)


@pytest.mark.parametrize(("name", "variant"), VARIANTS.items())
def test_manifest_is_the_official_parameter_list(name: str, variant: str) -> None:
    official = {k: v for k, v in manifest(variant).items() if k not in BUFFERS}
    assert official_manifest(name) == official
    assert len(official) == {"base": 280, "large": 346}[variant]


def test_official_presets_are_registered() -> None:
    for name, plain in (("hpcm-base-official", "hpcm-base"), ("hpcm-large-official", "hpcm-large")):
        spec, ref = get_spec(name), get_spec(plain)
        assert (spec.alignment, spec.qualities) == (ref.alignment, ref.qualities) == (1, (1,))
        assert "official" in spec.description
        with torch.device("meta"):
            model, other = build_model(name, 1), build_model(plain, 1)
        assert model.s2_placement == "official" and other.s2_placement == "lictrain"
        shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
        assert shapes(model) == shapes(other)
    with pytest.raises(ValueError, match="s2_placement"):
        HPCM(TINY, s2_placement="centred")


@pytest.mark.parametrize(("name", "variant"), VARIANTS.items())
@pytest.mark.parametrize("prefix", ["", "module."])
def test_detects_official_state_dicts(name: str, variant: str, prefix: str) -> None:
    state = {prefix + k: v for k, v in random_official_state(manifest(variant), device="meta").items()}
    assert detect_official_hpcm(state) == name
    # Parameters only (no buffers), and the released checkpoints without per-step gains.
    params = {k: v for k, v in state.items() if k.removeprefix(prefix) not in BUFFERS}
    assert detect_official_hpcm(params) == name
    assert detect_official_hpcm({k: v for k, v in params.items() if "adaptive_params_list" not in k}) == name


@pytest.mark.parametrize(("name", "variant"), VARIANTS.items())
def test_converted_state_loads_strict(name: str, variant: str) -> None:
    state = random_official_state(manifest(variant), device="meta")
    got, converted = convert_official_hpcm({"module." + k: v for k, v in state.items()})
    assert got == name
    _load_strict(name, converted)


def test_official_variant_of_the_plain_architectures_only() -> None:
    from lictrain.models.hpcm.official import official_variant

    assert official_variant("hpcm-base") == "hpcm-base-official"
    assert official_variant("hpcm-large") == "hpcm-large-official"
    assert official_variant("hpcm-tiny") is None and official_variant("hpcm-base-official") is None


@pytest.mark.slow
def test_eval_with_model_hpcm_base_evaluates_an_official_checkpoint(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``eval -m hpcm-base`` on an official release runs it as hpcm-base-official and says so in one
    log line; another architecture is still a one-line refusal."""
    from PIL import Image

    from lictrain.cli.main import main
    from lictrain.evaluation.results import read_curve

    path = tmp_path / "HPCM_Base_0.0067.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in random_official_state(manifest("base")).items()}}, path)
    image = tmp_path / "a.png"
    Image.fromarray((pinned_image()[0, :, :64, :64] * 255).round().byte().permute(1, 2, 0).numpy()).save(image)
    common = ["--dataset", str(image), "--out-dir", str(tmp_path / "out"), "--quiet", "--no-bitstreams"]
    assert main(["eval", str(path), "-m", "hpcm-base", *common]) == 0
    err = capsys.readouterr().err
    assert f"{path} holds official HPCM weights: using hpcm-base-official" in err
    assert read_curve(tmp_path / "out" / "hpcm-base-official.json").points[0].params["model"] == "hpcm-base-official"
    assert main(["eval", str(path), "-m", "hpcm-large", *common, "--force"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the "evaluating on ..." line
    assert last.startswith("lictrain eval: error: --model hpcm-large contradicts") and "hpcm-base-official" in last


def test_large_without_gains_gets_gains_one() -> None:
    state = {k: v for k, v in random_official_state(manifest("large"), device="meta").items()
             if not k.startswith("adaptive_params_list.")}
    name, converted = convert_official_hpcm(state)
    assert name == "hpcm-large-official"
    gains = converted["context.gains"]
    assert gains.shape == (10, 1, 960, 1, 1) and torch.equal(gains, torch.ones_like(gains))
    _load_strict(name, converted)


def test_conversion_fuses_kv_rotates_adaptors_and_stacks_gains() -> None:
    state = random_official_state(manifest("base"), seed=3)
    _, ours = convert_official_hpcm(state)
    assert torch.equal(ours["g_a.1.body.0.conv.weight"], state["g_a.branch.1.branch.0.pconv.weight"])
    assert torch.equal(ours["context.attention.2.kv.weight"],
                       torch.cat((state["attn_s3.conv_k.weight"], state["attn_s3.conv_v.weight"])))
    assert torch.equal(ours["context.attention.0.skip.bias"], state["attn_s1.conv_out.bias"])
    # The official loop indexes a scale's adaptors with [i - 1]: its first step uses the last one.
    expected = ["s1.0", "s2.2", "s2.0", "s2.1", "s3.5", "s3.0", "s3.1", "s3.2", "s3.3", "s3.4"]
    for step, src in enumerate(expected):
        assert torch.equal(ours[f"context.adaptors.{step}.weight"], state[f"y_spatial_prior_adaptor_list_{src}.weight"])
    for t in range(10):
        assert torch.equal(ours["context.gains"][t], state[f"adaptive_params_list.{t}"])
    # s1 and s2 share one spatial prior; ours lists it under both names.
    w = state["y_spatial_prior_s1_s2.branch_2.1.weight"]
    assert torch.equal(ours["context.priors.0.tail.1.weight"], w)
    assert torch.equal(ours["context.priors.1.tail.1.weight"], w)
    assert torch.equal(ours["z_prior.scales"], state["scales_hyper"])


def test_foreign_state_dicts_are_not_detected() -> None:
    compressai = build_model("mbt2018-mean", 1).state_dict()
    assert detect_official_hpcm(compressai) is None
    with torch.device("meta"):
        ours = build_model("hpcm-base", 1).state_dict()
    assert detect_official_hpcm(ours) is None
    base = random_official_state(manifest("base"), device="meta")
    phi = {k: v for k, v in base.items() if not k.startswith("attn_s")}  # official HPCM_Base_PhiContext
    assert detect_official_hpcm(phi) is None
    assert detect_official_hpcm(base | {"g_a.g_a_chunk1.0.branch.1.weight": torch.empty(1)}) is None  # HPCM-1B-like
    wide = base | {"means_hyper": torch.empty(1, 512, 1, 1, device="meta")}
    assert detect_official_hpcm(wide) is None
    mixed = base | {"g_a.branch.15.weight": torch.empty(320, 384, 2, 2, device="meta")}
    assert detect_official_hpcm(mixed) is None
    for junk in ({}, {"a": 1}, {1: torch.zeros(1)}, [], None, "state", {"means_hyper": object()}):
        assert detect_official_hpcm(junk) is None  # never raises
    with pytest.raises(CheckpointError, match="not an official HPCM"):
        convert_official_hpcm(compressai)


def test_truncated_or_misshaped_official_dicts_raise() -> None:
    state = random_official_state(manifest("base"), device="meta")
    truncated = dict(list(state.items())[:100] + list(state.items())[140:])  # e.g. a bad merge of shards
    assert detect_official_hpcm(truncated) == "hpcm-base-official"
    with pytest.raises(CheckpointError, match=r"incomplete or damaged: \d+ tensors missing.*re-download"):
        convert_official_hpcm(truncated)
    bad = state | {"attn_s2.conv_k.weight": torch.empty(640, 320, 1, 1, device="meta")}
    with pytest.raises(CheckpointError, match=r"wrong shape \(e\.g\. attn_s2\.conv_k\.weight"):
        convert_official_hpcm(bad)
    some_gains = {k: v for k, v in state.items() if k != "adaptive_params_list.3"}
    with pytest.raises(CheckpointError, match="adaptive_params_list.3"):
        convert_official_hpcm(some_gains)
    beta = state | {"entropy_estimation.beta": torch.tensor([2.0])}
    with pytest.raises(CheckpointError, match="beta"):
        convert_official_hpcm(beta)


def test_official_s2_placement_moves_groups_2_to_7_only() -> None:
    m, h, w = 16, 8, 12
    lat = Lattice(m, h, w, torch.device("cpu"))
    t = torch.randn(2, 2 * m, h // 2, w // 2)
    got = lat.official_s2_hyper(t)
    uncoded = (lat.step_maps[1] >= FIRST_STEP[1]).repeat(1, 2, 1, 1)
    ours = t * uncoded
    assert torch.equal(got * ~uncoded, torch.zeros_like(got))  # s1 positions get nothing
    per = m // 8
    for c in range(2 * m):
        group = (c % m) // per
        same = torch.equal(got[:, c], ours[:, c])
        assert same == (group < 2), c
        # Values only move within their own channel (and image).
        for b in range(2):
            assert torch.isin(got[b, c][uncoded[0, c]], t[b, c]).all(), c


def test_official_placement_changes_only_s2_onwards_and_round_trips() -> None:
    torch.manual_seed(0)
    model = HPCM(TINY, s2_placement="official").eval()
    plain = HPCM(TINY).eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), plain(x)
    assert torch.equal(a["rate_likelihoods"]["s1"], b["rate_likelihoods"]["s1"])  # s1 is coded before the transition
    assert not torch.equal(a["rate_likelihoods"]["s2"], b["rate_likelihoods"]["s2"])
    # Its own state_dict restores it exactly.
    again = HPCM(TINY, s2_placement="official").eval()
    again.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        c = again(x)
    assert torch.equal(a["x_hat"], c["x_hat"]) and torch.equal(a["likelihoods"]["y"], c["likelihoods"]["y"])
    # Encoder and decoder run the same placement: the bitstream decodes to the forward's x_hat.
    model.update(force=True)
    enc = model.compress(x)
    dec = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert torch.allclose(dec, a["x_hat"].clamp(0, 1), atol=1e-5)


# Measured with the official code (lyq133/LIC-HPCM at c271cfe, HPCM_Base, eval forward,
# float64, CPU) on pinned_state() and pinned_image(); our converted forward matched it to
# max |Δ| 5.0e-16 (x_hat), 7.8e-16 (y likelihoods), 6.1e-16 (z likelihoods). With our own
# placement (hpcm-base) the same weights give x_hat_1 = 0.1788, lik_y_1 = 0.0119,
# y_bits_per_latent_s2 = 3.85638: the test tells the placements apart.
PINNED = {
    "x_hat_mean": 0.0377022285436,
    "x_hat_abs_mean": 0.0869498421005,
    "x_hat_std": 0.107656315636,
    "y_bits_per_latent": 3.82480060175,
    "z_bits_per_latent": 1.28507370073,
    "y_lik_mean": 0.731740061952,
    "z_lik_mean": 0.439543313223,
    "x_hat_0": 0.141729871352,
    "x_hat_1": 0.190162719743,
    "x_hat_2": -0.0417615026994,
    "x_hat_3": -0.0167786001853,
    "y_bits_per_latent_s1": 3.6901262876,
    "y_bits_per_latent_s2": 3.85682225244,
    "y_bits_per_latent_s3": 3.82801804859,
    "lik_y_0": 0.0110380282941,
    "lik_y_1": 0.0241474264934,
    "lik_y_2": 0.0160722224895,
    "lik_y_3": 0.870838080666,
}


@pytest.mark.slow
def test_forward_matches_the_official_model() -> None:
    name, state = convert_official_hpcm(pinned_state())
    model = build_model(name, 1)
    model.load_state_dict(state, strict=True)
    model = model.double().eval()
    with torch.no_grad():
        out = model(pinned_image().double())
    got = _statistics(out)
    for key, value in PINNED.items():
        assert abs(got[key] - value) <= 1e-5, (key, got[key], value)


def _statistics(out: dict) -> dict[str, float]:
    """Summary numbers of a forward output (also what the official-code measurement printed)."""
    x_hat, lik_y, lik_z = out["x_hat"], out["likelihoods"]["y"], out["likelihoods"]["z"]
    stats = {
        "x_hat_mean": x_hat.mean(), "x_hat_abs_mean": x_hat.abs().mean(), "x_hat_std": x_hat.std(),
        "y_bits_per_latent": -torch.log2(lik_y).mean(), "z_bits_per_latent": -torch.log2(lik_z).mean(),
        "y_lik_mean": lik_y.mean(), "z_lik_mean": lik_z.mean(),
    }
    for i, (c, r, col) in enumerate(((0, 0, 0), (1, 100, 37), (2, 255, 255), (0, 131, 200))):
        stats[f"x_hat_{i}"] = x_hat[0, c, r, col]
    # Per-scale rates: s1 is coded before the s2 placement acts, s2 and s3 after.
    steps = Lattice(lik_y.shape[1], lik_y.shape[2], lik_y.shape[3], lik_y.device).step_maps[2]
    for level, (first, last) in enumerate(zip(FIRST_STEP, (*FIRST_STEP[1:], 11)), 1):
        at = (steps >= first) & (steps < last)
        stats[f"y_bits_per_latent_s{level}"] = -torch.log2(lik_y.masked_select(at.expand_as(lik_y))).mean()
    # Unsaturated likelihoods (this random network mostly predicts the minimum scale) in
    # channel groups 0, 2, 5, 6 at s2/s3 positions.
    for i, (c, r, col) in enumerate(((39, 3, 12), (108, 7, 3), (211, 7, 2), (274, 12, 12))):
        stats[f"lik_y_{i}"] = lik_y[0, c, r, col]
    return {k: float(v) for k, v in stats.items()}
