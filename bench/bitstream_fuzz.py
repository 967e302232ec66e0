"""Long fuzz of the ``.lic`` reader: every model family, truncations, mutations with valid CRCs,
crafted headers. Prints, per model, how many inputs were tried and how each ended: refused with
a one-line BitstreamError, decoded (the change did not matter or the checksum vouched for it),
or anything else (a failure of the reader: there should be none). Each decode runs in this
process, so a crash would end the bench: its absence is the result.

    python bench/bitstream_fuzz.py [--mutations 2000] [--models bmshj2018-hyperprior hpcm-tiny ...]
"""

from __future__ import annotations

import argparse
import random
import time
import zlib
from collections import Counter

import torch

from lictrain.errors import BitstreamError
from lictrain.evaluation.bitstream import MAGIC, pack, unpack
from lictrain.evaluation.codec import codec_from_model, decode_bytes, encode_image
from lictrain.models import build_model


def fuzz(name: str, mutations: int, seed: int) -> Counter:
    torch.manual_seed(0)
    model = build_model(name, 1)
    model.eval()
    info = codec_from_model(model, name, 1)
    pixels = (torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    data = encode_image(model, info, pixels).data
    outcomes: Counter = Counter()

    def attempt(blob: bytes, family: str) -> None:
        try:
            decode_bytes(model, info, blob)
            outcomes[f"{family}: decoded"] += 1
        except BitstreamError as exc:
            outcomes[f"{family}: refused" + (" (multi-line!)" if "\n" in str(exc) else "")] += 1
        except Exception as exc:  # noqa: BLE001 - what the bench exists to find
            outcomes[f"{family}: {type(exc).__name__}"] += 1

    for cut in range(len(data)):
        attempt(data[:cut], "truncation")
    rng = random.Random(seed)
    body = data[:-4]
    for _ in range(mutations):
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(MAGIC) + 1, len(mutated))] = rng.randrange(256)
        attempt(bytes(mutated) + zlib.crc32(bytes(mutated)).to_bytes(4, "big"), "mutation+crc")
    s = unpack(data)
    base = dict(model=s.model, quality=s.quality, fingerprint=s.fingerprint, height=s.height, width=s.width,
                shape=s.shape, strings=s.strings, recon_crc=s.recon_crc)
    crafted = [dict(height=30000, width=30000), dict(height=1, width=1), dict(shape=(5000, 5000)),
               dict(shape=((1, 1), (2, 2))), dict(strings=[[b""] for _ in s.strings]),
               dict(strings=[[x[:3] for x in g] for g in s.strings]), dict(recon_crc=None, strings=[[b"\xff" * 8]
                                                                                             for _ in s.strings])]
    for change in crafted:
        attempt(pack(**{**base, **change}), "crafted header")
    return outcomes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean",
                                                   "hpcm-tiny"])
    p.add_argument("--mutations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for name in args.models:
        started = time.perf_counter()
        outcomes = fuzz(name, args.mutations, args.seed)
        print(f"\n{name}: {sum(outcomes.values())} inputs in {time.perf_counter() - started:.0f} s")
        for key, count in sorted(outcomes.items()):
            print(f"  {key}: {count}")


if __name__ == "__main__":
    main()
