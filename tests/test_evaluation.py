"""Real-bitstream evaluation: exact round trips for every model, eval/compress/decompress CLIs, final report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lictrain.cli.main import main
from lictrain.config import TrainConfig
from lictrain.data import NamedImage
from lictrain.evaluation.codec import codec_from_model, decode_bytes, encode_image, to_input, to_uint8
from lictrain.evaluation.results import read_curve
from lictrain.models import available_models, build_model, get_spec

COMPRESSAI_MODELS = [n for n in available_models() if get_spec(n).factory.__module__.endswith("compressai_zoo")]
AUTOREGRESSIVE = {"mbt2018", "cheng2020-anchor"}


def smooth_image(h: int = 64, w: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 8 + 1, w // 8 + 1, generator=g)
    return F.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)[0].mul(255).round().to(torch.uint8)


def save_checkpoint(path: Path, model_name: str = "bmshj2018-hyperprior", seed: int = 0, lmbda: float = 0.0067) -> Path:
    torch.manual_seed(seed)
    model = build_model(model_name, 1)
    cfg = TrainConfig(model=model_name, quality=1, lmbda=lmbda).to_dict()
    torch.save({"model_state": model.state_dict(), "config": cfg, "epoch": seed}, path)
    return path


class CaptureEncoderLatents:
    """Capture the autoregressive models' quantised latents inside ``compress``.

    mbt2018 and cheng2020-anchor quantise around the context model's means inside
    ``_compress_ar``, filling the padded ``y_hat`` in place; ``g_s`` of it is the encoder's
    reconstruction. (The other models quantise in ``forward`` exactly as in ``compress``.)
    """

    PAD = 2  # (kernel_size - 1) // 2 of the 5x5 context model

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.captured = model, []
        original = model._compress_ar

        def capture(y_hat, *args):
            self.captured.append(y_hat)
            return original(y_hat, *args)

        model._compress_ar = capture

    def reconstruction(self, height: int, width: int) -> torch.Tensor:
        del self.model._compress_ar
        y_hat = self.captured[0][:, :, self.PAD:-self.PAD, self.PAD:-self.PAD]
        with torch.inference_mode():
            return to_uint8(self.model.g_s(y_hat), height, width)


@pytest.mark.parametrize("name", COMPRESSAI_MODELS)
def test_round_trip_is_exact_for_every_model(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 1)
    info = codec_from_model(model, name, 1)
    # autoregressive models code sequentially: keep them at one 64x64 block; the others get an
    # unaligned size so padding and cropping are exercised
    pixels = smooth_image(64, 64) if name in AUTOREGRESSIVE else smooth_image(40, 72)
    h, w = pixels.shape[1:]
    capture = CaptureEncoderLatents(model) if name in AUTOREGRESSIVE else None
    enc = encode_image(model, info, pixels)  # compresses, then decodes its streams once (verify)
    if capture is not None:
        reference = capture.reconstruction(h, w)
    else:
        with torch.inference_mode():
            reference = to_uint8(model(to_input(pixels, info.alignment, "cpu"))["x_hat"], h, w)
    decoded = decode_bytes(model, info, enc.data)  # decodes the bytes a second time
    assert decoded.pixels.dtype == torch.uint8 and decoded.pixels.shape == pixels.shape
    assert torch.equal(decoded.pixels, enc.reconstruction) and decoded.matches_encoder  # twice: identical
    assert torch.equal(decoded.pixels, reference)  # = the encoder's quantised reconstruction


@pytest.fixture(scope="module")
def run_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    (root / "data").mkdir()
    Image.fromarray(smooth_image(64, 64).permute(1, 2, 0).numpy()).save(root / "data" / "a.png")
    Image.fromarray(smooth_image(48, 64, seed=3).permute(1, 2, 0).numpy()).save(root / "data" / "b.png")
    return {"root": root, "data": root / "data", "ckpt": save_checkpoint(root / "ckpt.pt"),
            "other": save_checkpoint(root / "other.pt", seed=1)}


def test_eval_cli_writes_json_csv_bitstreams_and_a_table(run_files, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_files["root"] / "out"
    rc = main(["eval", str(run_files["ckpt"]), "--dataset", str(run_files["data"]), "--out-dir", str(out),
               "--name", "ours", "--anchors", "jpeg420", "--anchor-qualities", "20,50,80", "--quiet",
               "--check-decode", "--estimate"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "identical" in printed and "jpeg420 / q50" in printed and "est." in printed
    curve = read_curve(out / "ours.json")
    assert curve.kind == "learned" and len(curve.points) == 1
    point = curve.points[0]
    assert [im.image for im in point.images] == ["a.png", "b.png"]
    assert point.params["model"] == "bmshj2018-hyperprior" and point.params["lmbda"] == 0.0067
    for im in point.images:
        lic = next((out / "bitstreams").rglob(f"{im.image}.lic"))
        assert im.bytes == lic.stat().st_size
        assert im.bpp == pytest.approx(8 * im.bytes / (im.height * im.width), abs=1e-12)
        assert im.deterministic is True
        assert np.isfinite(im.bpp_estimated) and im.bpp_estimated > 0
        assert np.isfinite(im.psnr) and 0 <= im.ms_ssim <= 1
    raw = json.loads((out / "ours.json").read_text())
    assert raw["results"]["bpp"] == [point.mean["bpp"]]  # CompressAI's layout too
    rows = (out / "ours.csv").read_text().splitlines()
    assert rows[0].startswith("curve,point,image,") and len(rows) == 3
    assert len(read_curve(out / "jpeg420.json").points) == 3


def test_default_eval_encodes_and_decodes_once_and_keeps_the_same_files(run_files,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The default (one encode, one decode, as CompressAI's eval_model) writes byte-identical .lic
    files to --check-decode's: the checksum of its one decode is the one the encoder's check stores."""
    checked, quick = run_files["root"] / "checked", run_files["root"] / "quick"
    for out, extra in ((checked, ["--check-decode"]), (quick, [])):
        assert main(["eval", str(run_files["ckpt"]), "--dataset", str(run_files["data"]), "--out-dir", str(out),
                     "--name", "ours", "--quiet", *extra]) == 0
    capsys.readouterr()
    point = read_curve(quick / "ours.json").points[0]
    for im in point.images:
        assert im.deterministic is None and np.isnan(im.bpp_estimated)  # neither optional pass ran
        a = next((checked / "bitstreams").rglob(f"{im.image}.lic")).read_bytes()
        b = next((quick / "bitstreams").rglob(f"{im.image}.lic"))
        assert b.read_bytes() == a and im.bytes == len(a)
        restored = quick / f"{im.image}.png"
        assert main(["decompress", str(b), "--checkpoint", str(run_files["ckpt"]), "-o", str(restored)]) == 0


def test_eval_fails_loudly_when_two_decodes_differ(run_files, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import lictrain.evaluation.evaluate as ev

    real_load = ev.load_codec

    def flaky_load(*args, **kwargs):
        model, info = real_load(*args, **kwargs)
        real_decompress, calls = model.decompress, {"n": 0}

        def decompress(strings, shape):
            calls["n"] += 1
            out = real_decompress(strings, shape)
            return {"x_hat": out["x_hat"] + 0.05 * (calls["n"] % 2)}

        model.decompress = decompress
        return model, info

    monkeypatch.setattr(ev, "load_codec", flaky_load)
    rc = main(["eval", str(run_files["ckpt"]), "--dataset", str(run_files["data"] / "a.png"), "--out-dir",
               str(run_files["root"] / "flaky"), "--no-bitstreams", "--no-estimate", "--check-decode", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "DIFFERENT" in captured.out
    assert "decoding the same bytes twice gave different pixels" in captured.err
    assert (run_files["root"] / "flaky" / "bmshj2018-hyperprior.json").exists()  # results are still written


def test_compress_decompress_cli_round_trip(run_files, capsys: pytest.CaptureFixture[str]) -> None:
    root = run_files["root"]
    image = run_files["data"] / "a.png"
    lic, png = root / "cli" / "a.lic", root / "cli" / "a_dec.png"
    assert main(["compress", str(image), "-o", str(lic), "--checkpoint", str(run_files["ckpt"])]) == 0
    assert main(["decompress", str(lic), "-o", str(png), "--checkpoint", str(run_files["ckpt"])]) == 0
    out = capsys.readouterr().out
    assert "bpp" in out and "matches the encoder's reconstruction" in out
    decoded = np.asarray(Image.open(png))
    assert decoded.shape == (64, 64, 3) and decoded.dtype == np.uint8


def test_compress_names_its_checkpoint_and_decompress_asks_for_that_file(run_files, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """compress -c RUN_DIR logs the checkpoint file it resolved to and records its name in the .lic; a
    decoder given other weights names the file the stream needs (retention may have deleted it)."""
    from lictrain.evaluation.bitstream import unpack

    run = tmp_path / "demo-run"
    run.mkdir()
    needed = save_checkpoint(run / "checkpoint_epoch00003.pt", seed=3)
    image, lic = run_files["data"] / "a.png", tmp_path / "a.lic"
    assert main(["compress", str(image), "-o", str(lic), "-c", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"coded with checkpoint {needed.resolve()} (weights fingerprint " in err
    stream = unpack(lic.read_bytes())
    assert stream.coded_with == "checkpoint_epoch00003.pt of run demo-run" and lic.read_bytes()[4] == 2

    later = save_checkpoint(run / "checkpoint_epoch00005.pt", seed=5)  # the run went on: -c RUN_DIR is now epoch 5
    for expected in (f"pass {needed} with -c", "pass that file with -c"):
        assert main(["decompress", str(lic), "-o", str(tmp_path / "a.png"), "-c", str(later)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert (f"was coded with checkpoint_epoch00003.pt of run demo-run (bmshj2018-hyperprior quality 1, weights "
                f"fingerprint {stream.fingerprint.hex()}), but the checkpoint {later} holds other weights") in err
        assert err.rstrip().endswith(expected), err
        needed.unlink(missing_ok=True)  # what checkpoint retention does
    assert not (tmp_path / "a.png").exists()
    other_model = save_checkpoint(tmp_path / "mean.pt", "bmshj2018-factorized")
    assert main(["decompress", str(lic), "-o", str(tmp_path / "a.png"), "-c", str(other_model)]) == 2
    err = capsys.readouterr().err
    assert "coded with checkpoint_epoch00003.pt of run demo-run" in err and "is bmshj2018-factorized quality 1" in err


@pytest.mark.parametrize("case", ["wrong-checkpoint", "truncated", "foreign", "missing-file", "missing-ckpt",
                                  "missing-image", "lossy-output"])
def test_cli_errors_are_one_line_with_exit_code_2(case: str, run_files, capsys: pytest.CaptureFixture[str]) -> None:
    root, ckpt = run_files["root"], str(run_files["ckpt"])
    lic = root / "err" / "a.lic"
    if not lic.exists():
        assert main(["compress", str(run_files["data"] / "a.png"), "-o", str(lic), "--checkpoint", ckpt]) == 0
    capsys.readouterr()
    (root / "err" / "cut.lic").write_bytes(lic.read_bytes()[:-10])
    argv = {
        "wrong-checkpoint": ["decompress", str(lic), "-o", str(root / "err" / "x.png"), "--checkpoint", str(run_files["other"])],
        "truncated": ["decompress", str(root / "err" / "cut.lic"), "-o", str(root / "err" / "x.png"), "--checkpoint", ckpt],
        "foreign": ["decompress", str(run_files["data"] / "a.png"), "-o", str(root / "err" / "x.png"), "--checkpoint", ckpt],
        "missing-file": ["decompress", str(root / "nope.lic"), "--checkpoint", ckpt],
        "missing-ckpt": ["eval", str(root / "nope.pt")],
        "missing-image": ["compress", str(root / "nope.png"), "--checkpoint", ckpt],
        "lossy-output": ["decompress", str(lic), "-o", str(root / "err" / "x.jpg"), "--checkpoint", ckpt],
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lictrain {argv[0]}: error: ") and "Traceback" not in err
    assert not (root / "err" / "x.png").exists()


def test_final_report_places_our_point_beside_jpeg(run_files) -> None:
    from lictrain.evaluation.report import final_report

    report = final_report(run_files["ckpt"], "cpu", [NamedImage("a", smooth_image(64, 64))])
    text = report.text
    assert "ours bmshj2018-hyperprior q1" in text and "JPEG 4:2:0" in text
    assert "needs >= 4 R-D points of ours" in text and report.bd_rate is None
    assert len(report.anchor_quality_at_our_rate) == 1 and len(report.anchor.points) >= 10
    assert report.ours.points[0].deterministic is True


def test_final_report_gives_bd_rate_with_four_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four checkpoints' worth of points (made by re-encoding JPEG, to keep the test fast)."""
    import lictrain.evaluation.report as report_module
    from lictrain.evaluation.anchors import evaluate_anchor

    def four_points(paths, images, **kwargs):
        curve = evaluate_anchor("jpeg444", images, (30, 50, 70, 90), ms_ssim=False)
        curve.name, curve.kind = "ours", "learned"
        return curve

    monkeypatch.setattr(report_module, "evaluate_checkpoints", four_points)
    report = report_module.final_report(["a", "b", "c", "d"], "cpu", [NamedImage("a", smooth_image(64, 96))])
    assert "BD-rate vs JPEG 4:2:0 (PSNR, pchip)" in report.text and "needs >=" not in report.text
    assert report.bd_rate is not None and np.isfinite(report.bd_rate)


def test_an_ms_ssim_run_is_compared_with_jpeg_on_ms_ssim(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ours = JPEG 4:4:4 at four qualities: on MS-SSIM (dB) the BD numbers are JPEG 4:4:4's vs 4:2:0's,
    computed on MS-SSIM, and no line speaks of PSNR gaps."""
    import lictrain.evaluation.report as report_module
    from lictrain.evaluation.anchors import evaluate_anchor
    from lictrain.evaluation.rd import bd_delta, rd_frame

    image = NamedImage("a", smooth_image(192, 192))
    ours = evaluate_anchor("jpeg444", [image], (30, 50, 70, 90), ms_ssim=True)
    ours.name, ours.kind = "ours", "learned"
    monkeypatch.setattr(report_module, "evaluate_checkpoints", lambda paths, images, **kwargs: ours)
    report = report_module.final_report(["a", "b", "c", "d"], "cpu", [image], metric="ms-ssim")
    assert "compared with JPEG 4:2:0 on MS-SSIM in dB" in report.text
    assert "BD-rate vs JPEG 4:2:0 (MS-SSIM, pchip)" in report.text and "dB PSNR" not in report.text
    frame = rd_frame([ours, report.anchor])
    a, o = frame[frame.curve == "jpeg420"], frame[frame.curve == "ours"]
    assert report.bd_rate == pytest.approx(bd_delta(a.bpp, a.ms_ssim_db, o.bpp, o.ms_ssim_db).bd_rate)


def test_eval_on_a_runs_own_flat_folder_uses_the_test_split_it_held_out(tmp_path) -> None:
    """Issue 23: `eval --dataset FLAT` scored the run's training photos too."""
    import json

    from conftest import write_images
    from lictrain.data.loaders import load_test_images
    from lictrain.evaluation.evaluate import load_eval_images, training_datasets

    flat = tmp_path / "photos"
    write_images(flat, 20, size=(64, 64))
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {"dataset": str(flat)}}))
    trained = training_datasets([str(run), f"{run}:latest", str(tmp_path / "elsewhere.pt")])
    assert trained == [str(flat), str(flat)]
    held_out = {im.name for im in load_test_images(str(flat))}
    images, source = load_eval_images(str(flat), trained)
    assert {im.name for im in images} == held_out and 0 < len(images) < 20 and "test split" in source
    everything, _ = load_eval_images(str(flat), trained, all_images=True)
    assert len(everything) == 20
    assert len(load_eval_images(str(flat))[0]) == 20  # another model's photos: all of them
