"""Classical anchors through Pillow, BD-rate with the bjontegaard package, and ``lictrain rd``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lictrain.cli.main import main
from lictrain.data import NamedImage
from lictrain.errors import ConfigError, DataError
from lictrain.evaluation.anchors import available_anchors, evaluate_anchor, parse_anchor_list, parse_qualities
from lictrain.evaluation.rd import bd_delta, bd_table, interpolate_curve, rd_frame
from lictrain.evaluation.results import CurveResult, ImageResult, PointResult, read_curve, write_curve

# a JPEG-like curve: PSNR rising with log-rate
RATE = [0.25, 0.5, 1.0, 2.0]
PSNR = [28.0, 31.0, 34.5, 38.0]


def smooth_image(h: int = 64, w: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 8 + 1, w // 8 + 1, generator=g)
    return F.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)[0].mul(255).round().to(torch.uint8)


def curve(name: str, rates, psnrs, kind: str = "learned", msssim=None) -> CurveResult:
    msssim = msssim or [1 - 10 ** (-p / 20) for p in psnrs]
    points = [PointResult(f"p{i}", {}, [ImageResult("img", 8, 8, 0, 0, r, r, math.nan, p, m, 0.0, 0.0)])
              for i, (r, p, m) in enumerate(zip(rates, psnrs, msssim))]
    return CurveResult(name, kind, points)


# --------------------------------------------------------------------------- anchors


@pytest.fixture(scope="module")
def images() -> list[NamedImage]:
    return [NamedImage("a", smooth_image(64, 96)), NamedImage("b", smooth_image(72, 64, seed=4))]


@pytest.mark.parametrize("name", available_anchors())
def test_anchor_bpp_is_the_file_size_and_quality_rises(name: str, images) -> None:
    from lictrain.evaluation.anchors import ANCHORS, encode_decode

    c = evaluate_anchor(name, images, (15, 50, 90))
    assert c.kind == "anchor" and [p.label for p in c.points] == ["q15", "q50", "q90"]
    for p in c.points:
        for im, src in zip(p.images, images):
            data, decoded, _, _ = encode_decode(ANCHORS[name], src.pixels, p.params["quality"])
            assert im.bytes == len(data) and decoded.shape == src.pixels.shape
            assert im.bpp == pytest.approx(8 * len(data) / (src.height * src.width), abs=1e-12)
            assert 0 < im.ms_ssim <= 1 and im.psnr > 10 and math.isnan(im.bpp_estimated)
    means = [p.mean for p in c.points]
    assert means[0]["bpp"] < means[-1]["bpp"] and means[0]["psnr"] < means[-1]["psnr"]


def test_jpeg444_spends_more_bits_on_chroma_than_jpeg420(images) -> None:
    a = evaluate_anchor("jpeg420", images, (90,), ms_ssim=False).points[0].mean
    b = evaluate_anchor("jpeg444", images, (90,), ms_ssim=False).points[0].mean
    assert b["bpp"] > a["bpp"] and b["psnr"] > a["psnr"]


def test_anchor_and_quality_lists_are_checked() -> None:
    assert parse_anchor_list("jpeg420, webp") == ["jpeg420", "webp"]
    assert parse_anchor_list("all") == available_anchors()
    assert parse_qualities("10:30:10") == [10, 20, 30] and parse_qualities("90,10") == [10, 90]
    for bad in ("png", ""):
        with pytest.raises(ConfigError):
            parse_anchor_list(bad)
    for bad in ("0,50", "a,b", "101"):
        with pytest.raises(ConfigError):
            parse_qualities(bad)


# --------------------------------------------------------------------------- BD


def test_bd_rate_against_itself_is_zero() -> None:
    r = bd_delta(RATE, PSNR, RATE, PSNR)
    assert r.bd_rate == pytest.approx(0.0, abs=1e-9) and r.bd_quality == pytest.approx(0.0, abs=1e-9)
    assert r.overlap == 1.0 and r.notes == []


def test_ten_percent_fewer_bits_everywhere_is_minus_ten_percent() -> None:
    r = bd_delta(RATE, PSNR, [0.9 * x for x in RATE], PSNR)
    assert r.bd_rate == pytest.approx(-10.0, abs=1e-6)
    assert r.bd_quality > 0  # better quality at the same rate
    worse = bd_delta(RATE, PSNR, [1.1 * x for x in RATE], PSNR)
    assert worse.bd_rate == pytest.approx(10.0, abs=1e-6)


def test_points_in_any_order_and_unequal_counts() -> None:
    anchor_r = [0.2, 0.3, 0.5, 0.8, 1.2, 2.0, 3.0]
    anchor_q = [30 + 10 * math.log10(r) for r in anchor_r]  # linear in log-rate: any subset has the same pchip
    r = bd_delta(anchor_r[::-1], anchor_q[::-1], [0.9 * x for x in anchor_r[1:5]][::-1], anchor_q[1:5][::-1])
    assert r.bd_rate == pytest.approx(-10.0, abs=1e-6) and r.points == 4


def test_little_or_no_overlap_and_few_points_are_flagged() -> None:
    partial = bd_delta(RATE, PSNR, [1.0, 2.0, 4.0, 8.0], [34.0, 37.0, 40.0, 43.0])
    assert math.isfinite(partial.bd_rate) and partial.overlap < 0.75
    assert any("covers only" in n for n in partial.notes)
    none = bd_delta(RATE, PSNR, [4.0, 8.0, 16.0, 32.0], [50.0, 52.0, 54.0, 56.0])
    assert math.isnan(none.bd_rate) and none.overlap == 0 and any("do not overlap" in n for n in none.notes)
    few = bd_delta(RATE, PSNR, RATE[:2], PSNR[:2])
    assert any("fewer than 4 points" in n for n in few.notes)
    one = bd_delta(RATE, PSNR, RATE[:1], PSNR[:1])
    assert math.isnan(one.bd_rate) and "BD needs >= 2" in one.notes[0]


def test_bd_table_and_interpolation() -> None:
    curves = [curve("jpeg", RATE, PSNR, "anchor"), curve("ours", [0.8 * x for x in RATE], PSNR)]
    table = bd_table(curves, "jpeg")
    assert list(table.curve) == ["ours"]
    assert table.bd_rate_psnr.iloc[0] == pytest.approx(-20.0, abs=1e-6)
    assert table.bd_rate_msssim.iloc[0] == pytest.approx(-20.0, abs=1e-6)
    with pytest.raises(ConfigError, match="not among the curves"):
        bd_table(curves, "webp")
    assert interpolate_curve(RATE, PSNR, at_rate=1.0) == pytest.approx(34.5)
    assert interpolate_curve(RATE, PSNR, at_quality=31.0) == pytest.approx(0.5)
    assert 31.0 < interpolate_curve(RATE, PSNR, at_rate=0.7) < 34.5
    assert math.isnan(interpolate_curve(RATE, PSNR, at_rate=5.0))
    frame = rd_frame(curves)
    assert len(frame) == 8 and {"bpp", "psnr", "ms_ssim_db"} <= set(frame.columns)


# --------------------------------------------------------------------------- files and CLI


def test_results_json_round_trip_with_nan(tmp_path: Path) -> None:
    c = curve("ours", RATE, PSNR)
    c.points[0].images[0].ms_ssim = math.nan
    json_path, csv_path = write_curve(c, tmp_path)
    raw = json.loads(json_path.read_text())  # strict JSON: NaN became null
    assert raw["points"][0]["images"][0]["ms_ssim"] is None
    back = read_curve(json_path)
    assert math.isnan(back.points[0].images[0].ms_ssim)
    assert [p.mean["bpp"] for p in back.points] == RATE
    assert len(csv_path.read_text().splitlines()) == 5
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not JSON"):
        read_curve(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(DataError, match="not a lictrain or CompressAI results file"):
        read_curve(tmp_path / "other.json")


def test_rd_cli_draws_png_and_prints_bd_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_curve(curve("jpeg420", RATE, PSNR, "anchor"), tmp_path / "res")
    write_curve(curve("ours", [0.9 * x for x in RATE], PSNR), tmp_path / "res")
    # a CompressAI results file is read too
    (tmp_path / "compressai.json").write_text(json.dumps(
        {"name": "cai", "results": {"bpp": [0.3, 0.6, 1.1, 2.2], "psnr-rgb": [28.5, 31.5, 34.8, 38.1],
                                    "ms-ssim-rgb": [0.95, 0.97, 0.98, 0.99]}}))
    out = tmp_path / "rd.png"
    rc = main(["rd", str(tmp_path / "res"), str(tmp_path / "compressai.json"), "--out", str(out),
               "--csv", str(tmp_path / "bd.csv")])
    printed = capsys.readouterr().out
    assert rc == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "curve vs jpeg420" in printed and "-10.00%" in printed
    assert (tmp_path / "bd.csv").read_text().startswith("curve,points,bd_rate_psnr")
    assert main(["rd", str(tmp_path / "res"), "--anchor", "nope", "--out", str(out)]) == 2
    assert main(["rd", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("lictrain rd: error: ") for line in err)


def test_eval_anchors_only_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    Image.fromarray(smooth_image(64, 80).permute(1, 2, 0).numpy()).save(tmp_path / "x.png")
    rc = main(["eval", "--dataset", str(tmp_path / "x.png"), "--anchors", "jpeg420,webp", "--anchor-qualities",
               "30,60,90", "--out-dir", str(tmp_path / "out"), "--quiet"])
    assert rc == 0
    for name in ("jpeg420", "webp"):
        c = read_curve(tmp_path / "out" / f"{name}.json")
        assert c.kind == "anchor" and len(c.points) == 3
        assert np.all(np.diff([p.mean["bpp"] for p in c.points]) > 0)
    assert main(["eval"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_published_hpcm_curves_are_anchors_for_rd(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from lictrain.cli.main import main
    from lictrain.evaluation.published import published_curve, published_names

    base = published_curve("hpcm-base@clic")
    assert [round(p.mean["bpp"], 4) for p in base.sorted_points()][:2] == [0.0916, 0.1308]
    assert base.sorted_points()[-1].mean["psnr"] == pytest.approx(38.4556)
    msssim = published_curve("hpcm-base@clic-msssim").sorted_points()[0].mean["ms_ssim"]
    assert msssim == pytest.approx(1 - 10 ** (-1.45694), abs=1e-9)
    assert len(published_names()) == 8
    ours = {"name": "ours", "results": {"bpp": [0.1, 0.2, 0.3, 0.45], "psnr-rgb": [31.0, 33.0, 34.8, 36.5]}}
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    assert main(["rd", str(tmp_path / "ours.json"), "--anchor", "hpcm-base@clic", "--out", str(tmp_path / "rd.png")]) == 0
    out = capsys.readouterr().out
    assert "hpcm-base@clic" in out and (tmp_path / "rd.png").stat().st_size > 0
    assert main(["rd", "--published"]) == 0 and "hpcm-large@tecnick" in capsys.readouterr().out
    assert main(["rd", str(tmp_path / "ours.json"), "--anchor", "hpcm-tiny@kodak"]) == 2


def test_rd_refuses_curves_over_different_images(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from lictrain.cli.main import main

    def curve(name: str, images: list[str]) -> Path:
        points = [{"label": f"q{i}", "params": {}, "mean": {"bpp": b, "psnr": p, "ms_ssim": 0.9},
                   "images": []} for i, (b, p) in enumerate(((0.2, 28.0), (0.4, 31.0), (0.7, 34.0), (1.0, 36.0)))]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"format": "lictrain-rd", "version": 1, "name": name, "kind": "learned",
                                    "images": images, "points": points}))
        return path

    from lictrain.evaluation.results import FORMAT

    a = curve("avif", ["kodim01.png", "kodim02.png"])
    b = curve("jpeg420", [f"kodim{i:02d}.png" for i in range(1, 25)])
    for path in (a, b):
        data = json.loads(path.read_text())
        data["format"] = FORMAT
        path.write_text(json.dumps(data))
    assert main(["rd", str(a), str(b), "--anchor", "jpeg420", "--out", str(tmp_path / "rd.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different images" in err[0] and "only in jpeg420: kodim03.png" in err[0]
    assert main(["rd", str(a), str(b), "--anchor", "jpeg420", "--out", str(tmp_path / "rd.png"), "--allow-mixed"]) == 0


@pytest.mark.parametrize("body", ['{"format": "%s", "name": "x", "points": "abc"}', '[1, 2]',
                                  '{"name": "x", "results": {"bpp": 5}}', '{"format": "%s", "points": [{"mean": 3}]}'])
def test_malformed_results_files_are_one_line_exit_2(body: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lictrain.cli.main import main
    from lictrain.evaluation.results import FORMAT

    path = tmp_path / "bad.json"
    path.write_text(body.replace("%s", FORMAT))
    assert main(["rd", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0] and "Traceback" not in err[0]


def test_compressai_results_interoperate_both_ways(tmp_path: Path) -> None:
    import json

    from lictrain.evaluation.results import CurveResult

    old = {"name": "old", "results": {"bpp": [0.2, 0.4], "psnr-rgb": [30.0, 33.0], "msssim": [0.95, 0.97]}}
    curve = CurveResult.from_json(old)
    assert [round(p.mean["ms_ssim"], 2) for p in curve.sorted_points()] == [0.95, 0.97]
    results = json.loads(json.dumps(curve.to_json()))["results"]
    assert {"bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"} <= set(results)


def test_rd_labels_axes_and_version(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from lictrain.cli.main import main

    ours = {"name": "x", "results": {"bpp": [0.1, 0.2, 0.3, 0.45], "psnr-rgb": [31.0, 33.0, 34.8, 36.5]}}
    (tmp_path / "a.json").write_text(json.dumps(ours))
    assert main(["rd", str(tmp_path / "a.json"), "--label", "a.json=balanced (ours)", "--xlim", "0", "1",
                 "--out", str(tmp_path / "rd.png")]) == 0
    assert "balanced (ours)" in capsys.readouterr().out
    assert main(["rd", str(tmp_path / "a.json"), "--axes", "1", "0", "25", "40", "--out", str(tmp_path / "b.png")]) == 2
    assert "MIN must be below MAX" in capsys.readouterr().err
    assert main(["rd", str(tmp_path / "a.json"), "--label", "nope.json=z", "--out", str(tmp_path / "c.png")]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("lictrain ")


def test_a_bd_rate_needs_a_shared_range_of_quality_and_points_of_both_curves() -> None:
    """The study of issue 23: two curves that share 0.06 dB (one point against one point) gave
    -23.3% with 'overlap 78%'. Refused now, with the shared range stated; a real overlap is kept."""
    from lictrain.evaluation.rd import MIN_SHARED_DB

    anchor = ([0.10, 0.20, 0.40], [26.00, 28.03, 30.0])
    sliver = ([0.15, 0.30, 0.60], [27.97, 29.5, 31.0])  # shares 28.03-27.97... with one anchor point inside
    res = bd_delta(anchor[0], anchor[1], [0.18, 0.19], [27.98, 28.04])
    assert math.isnan(res.bd_rate) and res.shared_db < MIN_SHARED_DB
    assert any("refused" in n and "dB" in n for n in res.notes)
    good = bd_delta(anchor[0], anchor[1], *sliver)
    assert math.isfinite(good.bd_rate) and good.shared_db == pytest.approx(30.0 - 27.97)
    assert good.shared_bpp[0] == pytest.approx(0.15) and good.shared_bpp[1] == pytest.approx(0.40)


def test_a_non_monotone_anchor_drops_its_falling_points_with_a_note() -> None:
    """JPEG re-encoding JPEG q90 sources: q90 gives 50 dB, q95 46 dB. The spike must not set the BD-rate."""
    from lictrain.evaluation.rd import monotone_points

    r, q, dropped = monotone_points([0.5, 1.0, 2.0, 2.5, 2.8], [30.0, 34.0, 40.0, 50.0, 46.0])
    assert dropped == 1 and list(q) == [30.0, 34.0, 40.0, 50.0]
    clean = bd_delta([0.5, 1.0, 2.0, 2.5], [30.0, 34.0, 40.0, 50.0], [0.6, 1.1, 1.9, 2.4], [31.0, 35.0, 40.0, 45.0])
    spiky = bd_delta([0.5, 1.0, 2.0, 2.5, 2.8], [30.0, 34.0, 40.0, 50.0, 46.0],
                     [0.6, 1.1, 1.9, 2.4], [31.0, 35.0, 40.0, 45.0])
    assert spiky.bd_rate == pytest.approx(clean.bd_rate)
    assert any("dropped 1 point" in n for n in spiky.notes)


def test_rd_zooms_to_the_learned_curves_and_keeps_colours_by_name(tmp_path) -> None:
    import pandas as pd

    from lictrain.evaluation.rd import curve_color, plot_rd, zoom_to_learned

    learned = pd.DataFrame({"curve": "ours", "kind": "checkpoint", "bpp": [0.15, 0.25, 0.4],
                            "psnr": [27.0, 28.5, 30.0], "ms_ssim_db": [11.0, 12.5, 14.0]})
    jpeg = pd.DataFrame({"curve": "jpeg420", "kind": "anchor", "bpp": [0.1, 0.3, 1.0, 2.8],
                         "psnr": [25.0, 28.0, 34.0, 50.0], "ms_ssim_db": [9.0, 12.0, 18.0, 30.0]})
    frame = pd.concat([learned, jpeg], ignore_index=True)
    xlim, ylims = zoom_to_learned(frame)
    assert xlim[0] < 0.15 and 0.4 < xlim[1] < 0.6  # the 2.8 bpp / 50 dB spike is off the axes
    assert ylims["psnr"][1] < 31.0 and ylims["psnr"][0] <= 27.0
    assert zoom_to_learned(learned) == (None, {})  # nothing to clip: every curve whole
    assert curve_color("ours", set()) == curve_color("ours", {"C9"} - {curve_color("ours", set())})
    used: set = set()
    assert len({curve_color(n, used) for n in ("a", "b", "c", "d")}) == 4  # distinct within one plot
    assert plot_rd(frame, tmp_path / "rd.png", anchor="jpeg420").stat().st_size > 0
