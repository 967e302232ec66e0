"""HPCM speed beside CompressAI's mbt2018-mean: training steps, encode and decode.

Three measurements, each interleaved (A B C A B C ...) so machine noise hits all models
alike, reported as medians with ratios to mbt2018-mean:

1. one training step (forward, R-D loss, backward, Adam) on 8 random crops of 128x128:
   hpcm-tiny must not be slower than mbt2018-mean at quality 1 (ratio <= 1);
2. one training step on a 768x512 photo (batch 1): hpcm-tiny, hpcm-base, mbt2018-mean;
3. compress and decompress of that photo with real rANS bitstreams (after ``update()``).

Models are randomly initialised: speed does not depend on the weights. On a CPU, hpcm-base
gets one timed repetition and no warm-up call (``--base-repeats``; its first-call overhead is
small beside a step of tens of seconds) so the whole run stays under ~5 minutes on 2 cores.

    .venv/bin/python bench/hpcm_speed.py                 # CPU
    .venv/bin/python bench/hpcm_speed.py --device cuda   # a GPU (the paper: ~82 ms enc/dec)
"""

from __future__ import annotations

import argparse
import statistics
from typing import Callable

import torch
import torch.nn.functional as F

from lictrain.losses import RateDistortionLoss
from lictrain.models import build_model
from lictrain.training.budget import measure_seconds


def _photo(device: torch.device) -> torch.Tensor:
    """scikit-image's astronaut, resized to 512x768 (a Kodak-sized image), in [0, 1]."""
    import skimage.data

    img = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(img, size=(512, 768), mode="bilinear", align_corners=False).clamp(0, 1).to(device)


def _train_step(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = RateDistortionLoss(0.0067)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), x).loss.backward()
        optimizer.step()

    return step


def _interleaved(jobs: dict[str, Callable[[], object]], repeats: dict[str, int], device: torch.device,
                 cold: frozenset[str] = frozenset()) -> dict[str, float]:
    """Median seconds per job: one warm-up call each (except ``cold`` jobs), then rounds of one call per job."""
    for name, fn in jobs.items():
        if name not in cold:
            fn()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for r in range(max(repeats.values())):
        for name, fn in jobs.items():
            if r < repeats[name]:
                times[name].append(measure_seconds(fn, device))
    return {name: statistics.median(ts) for name, ts in times.items()}


def _report(title: str, medians: dict[str, float], reference: str) -> None:
    print(f"\n{title}")
    for name, sec in medians.items():
        ratio = sec / medians[reference]
        print(f"  {name:<16} {sec * 1000:10.1f} ms   x{ratio:6.2f} vs {reference}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds for hpcm-tiny and mbt2018-mean")
    parser.add_argument("--base-repeats", type=int, default=None,
                        help="timed rounds for hpcm-base (default: 1 on CPU, without warm-up; --repeats on GPU)")
    parser.add_argument("--mbt-quality", type=int, default=1)
    parser.add_argument("--skip-base", action="store_true", help="leave hpcm-base out")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--sections", default="train128,train768,codec",
                        help="comma-separated subset of train128, train768, codec")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device {device}, torch threads {torch.get_num_threads()}")

    names = ["hpcm-tiny", *([] if args.skip_base else ["hpcm-base"]), "mbt2018-mean"]
    quality = {"mbt2018-mean": args.mbt_quality}
    models = {n: build_model(n, quality.get(n, 1)).to(device) for n in names}
    base_reps = args.base_repeats or (1 if device.type == "cpu" else args.repeats)
    reps = {n: base_reps if n == "hpcm-base" else args.repeats for n in names}
    cold = frozenset({"hpcm-base"} if device.type == "cpu" and not args.base_repeats else set())
    ref = "mbt2018-mean"

    sections = set(args.sections.split(","))
    if "train128" in sections:
        crops = torch.rand(8, 3, 128, 128, device=device)
        small = {n: _train_step(models[n], crops) for n in ("hpcm-tiny", ref)}
        _report("train step, 8 x 128x128 crops", _interleaved(small, reps, device), ref)

    photo = _photo(device)
    if "train768" in sections:
        big = {n: _train_step(m, photo) for n, m in models.items()}
        _report("train step, 1 x 768x512", _interleaved(big, reps, device, cold), ref)
    if "codec" not in sections:
        return

    for m in models.values():
        m.eval()
        m.update(force=True)
    with torch.no_grad():
        encoded = {n: m.compress(photo) for n, m in models.items()}
        enc = {n: (lambda m=m: m.compress(photo)) for n, m in models.items()}
        dec = {n: (lambda m=m, e=encoded[n]: m.decompress(e["strings"], e["shape"])) for n, m in models.items()}
        _report("encode (compress), 768x512", _interleaved(enc, reps, device, cold), ref)
        _report("decode (decompress), 768x512", _interleaved(dec, reps, device, cold), ref)
    pixels = photo.shape[-2] * photo.shape[-1]
    print("\nbits per pixel of the random-weight models (a sanity check, not a result):")
    for n, e in encoded.items():
        print(f"  {n:<16} {sum(len(s[0]) for s in e['strings']) * 8 / pixels:.4f}")


if __name__ == "__main__":
    main()
