"""Evaluation results as data: per image, per R-D point, per curve; JSON and CSV on disk.

A *curve* is one codec swept over its rate knob: several checkpoints (one per λ) of a
learned codec, or an anchor (JPEG, WebP, ...) over a quality sweep. Each *point* holds the
per-image measurements and their means (the mean of per-image bpp and PSNR, as CompressAI
and most papers report them).

JSON layout (``format: "lictrain-results"``)::

    {"format": "lictrain-results", "version": 1, "name": "jpeg420", "kind": "anchor",
     "description": "...", "images": ["chelsea", "coffee"], "created": "...",
     "points": [{"label": "q10", "params": {...}, "mean": {...}, "images": [{...}, ...]}, ...],
     "results": {"bpp": [...], "psnr-rgb": [...], "ms-ssim-rgb": [...]}}

``results`` repeats the means in CompressAI's results-file layout, so CompressAI's plotting
tools read these files too, and ``lictrain rd`` reads CompressAI's files.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lictrain.errors import ConfigError, DataError

FORMAT = "lictrain-results"
VERSION = 1

#: per-image numeric fields, averaged into a point's ``mean``
MEASURES = ("bpp", "bpp_payload", "bpp_estimated", "psnr", "ms_ssim", "encode_s", "decode_s")


@dataclass
class ImageResult:
    """Measurements of one image at one R-D point.

    Attributes:
        bpp: ``8 · whole-file bytes / pixels`` -- the honest number (header included).
        bpp_payload: ``8 · entropy-coded bytes / pixels`` (learned codecs; for anchors = bpp).
        bpp_estimated: the model's estimate from its forward-pass likelihoods (NaN for anchors).
        deterministic: decoding the same bytes twice (the encoder's check and the decoder
            reading the file) gave identical pixels (None: not checked, e.g. anchors).
    """

    image: str
    height: int
    width: int
    bytes: int
    payload_bytes: int
    bpp: float
    bpp_payload: float
    bpp_estimated: float
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    deterministic: bool | None = None


@dataclass
class PointResult:
    """One R-D point: a checkpoint, or an anchor at one quality setting."""

    label: str
    params: dict[str, Any]
    images: list[ImageResult] = field(default_factory=list)

    @property
    def mean(self) -> dict[str, float]:
        """Mean of each measure over the images (NaN entries are skipped; all-NaN gives NaN)."""
        out: dict[str, float] = {}
        for key in MEASURES:
            values = [getattr(im, key) for im in self.images]
            finite = [v for v in values if v is not None and not math.isnan(v)]
            out[key] = sum(finite) / len(finite) if finite else math.nan
        return out

    @property
    def deterministic(self) -> bool | None:
        flags = [im.deterministic for im in self.images if im.deterministic is not None]
        return all(flags) if flags else None


@dataclass
class CurveResult:
    """A codec's R-D curve: its points, sorted by rate."""

    name: str
    kind: str  # "learned" or "anchor"
    points: list[PointResult]
    description: str = ""
    images: list[str] = field(default_factory=list)

    def sorted_points(self) -> list[PointResult]:
        return sorted(self.points, key=lambda p: p.mean["bpp"])

    def nondeterministic(self) -> list[tuple[str, str]]:
        """(point label, image) pairs whose two decodes differed."""
        return [(p.label, im.image) for p in self.points for im in p.images if im.deterministic is False]

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        points = self.sorted_points()
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "images": self.images,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "points": [
                {"label": p.label, "params": p.params, "mean": p.mean, "deterministic": p.deterministic,
                 "images": [asdict(im) for im in p.images]}
                for p in points
            ],
            "results": {
                "bpp": [p.mean["bpp"] for p in points],
                "psnr-rgb": [p.mean["psnr"] for p in points],
                "ms-ssim-rgb": [p.mean["ms_ssim"] for p in points],
                # CompressAI's eval_model names: seconds per image
                "encoding_time": [p.mean["encode_s"] for p in points],
                "decoding_time": [p.mean["decode_s"] for p in points],
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "results") -> "CurveResult":
        """Read our JSON or CompressAI's results layout (``{"name", "results": {"bpp", "psnr-rgb", ...}}``)."""
        if not isinstance(data, dict):
            raise DataError(f"{source} is not a results file (top level is not an object)")
        try:
            if data.get("format") == FORMAT:
                points = []
                for p in data["points"]:
                    images = [_image_from_json(im) for im in p.get("images", [])]
                    point = PointResult(str(p["label"]), dict(p.get("params", {})), images)
                    if not images:  # a summary-only point: keep its means
                        point.images = [_summary_image(p["mean"])]
                    points.append(point)
                return cls(str(data["name"]), str(data.get("kind", "learned")), points,
                           str(data.get("description", "")), list(data.get("images", [])))
            if isinstance(data.get("results"), dict):  # CompressAI's layout
                res = data["results"]
                bpp = res["bpp"]
                psnr = res.get("psnr-rgb", res.get("psnr", [math.nan] * len(bpp)))
                msssim = next((res[k] for k in ("ms-ssim-rgb", "ms-ssim", "msssim", "ms_ssim") if k in res),
                              [math.nan] * len(bpp))
                points = [PointResult(f"#{i}", {}, [_summary_image({"bpp": b, "psnr": p, "ms_ssim": m})])
                          for i, (b, p, m) in enumerate(zip(bpp, psnr, msssim))]
                return cls(str(data.get("name", Path(source).stem)), "external", points, str(data.get("description", "")))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise DataError(f"{source} is not a valid results file ({type(exc).__name__}: {str(exc)[:120]})") from exc
        raise DataError(f"{source} is not a lictrain or CompressAI results file (no 'points' or 'results')")


def _image_from_json(d: dict[str, Any]) -> ImageResult:
    names = ImageResult.__dataclass_fields__
    return ImageResult(**{k: (_num(v) if k in MEASURES else v) for k, v in d.items() if k in names})


def _num(v: Any) -> Any:
    return math.nan if v is None else v


def _summary_image(mean: dict[str, Any]) -> ImageResult:
    g = lambda k: float(_num(mean.get(k)))  # noqa: E731
    return ImageResult("mean", 0, 0, 0, 0, g("bpp"), float(_num(mean.get("bpp_payload", mean.get("bpp")))),
                       g("bpp_estimated"), g("psnr"), g("ms_ssim"), g("encode_s"), g("decode_s"))


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- files


def safe_name(name: str) -> str:
    """A curve name usable as a file name."""
    keep = "".join(c if (c.isascii() and c.isalnum()) or c in "-_.=" else "_" for c in name.replace("λ", "lambda")).strip("._")
    return keep or "results"


def write_curve(curve: CurveResult, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.csv`` (one row per point and image) into ``out_dir``."""
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / f"{safe_name(curve.name)}.json"
        json_path.write_text(json.dumps(_json_safe(curve.to_json()), indent=1) + "\n")
        csv_path = out / f"{safe_name(curve.name)}.csv"
        with csv_path.open("w", newline="") as f:
            fields = ["curve", "point"] + [k for k in ImageResult.__dataclass_fields__]
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for p in curve.sorted_points():
                for im in p.images:
                    writer.writerow({"curve": curve.name, "point": p.label, **asdict(im)})
    except OSError as exc:
        raise ConfigError(f"cannot write results to {out}: {exc.strerror or exc}; choose a writable --out-dir") from exc
    return json_path, csv_path


def read_curve(path: str | os.PathLike[str]) -> CurveResult:
    """Read one results JSON file (ours or CompressAI's).

    Raises:
        DataError: missing, unreadable or not a results file.
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise DataError(f"results file {p} does not exist; pass JSON files written by lictrain eval") from None
    except IsADirectoryError:
        raise DataError(f"{p} is a directory; pass its JSON files") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read results file {p}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{p} is not JSON ({exc.msg} at line {exc.lineno}); pass JSON files written by lictrain eval") from None
    return CurveResult.from_json(data, str(p))


def collect_result_paths(paths: list[str]) -> list[Path]:
    """Expand directories to the ``*.json`` files directly inside them (sorted)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(p.glob("*.json"))
            if not found:
                raise DataError(f"no results (*.json) in {p}; run lictrain eval --out-dir {p} first")
            out += found
        else:
            out.append(p)
    return out
