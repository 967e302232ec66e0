"""A ``.lic`` file is untrusted input: truncations, mutations and crafted headers give a one-line
BitstreamError (exit 2 from the CLI) and never a crash, a hang or an unbounded allocation.

A longer run of the same fuzzing over more models and mutations: ``bench/bitstream_fuzz.py``.
"""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

import pytest
import torch

from lictrain.errors import BitstreamError
from lictrain.evaluation.bitstream import MAGIC, pack, unpack
from lictrain.evaluation.codec import codec_from_model, decode_bytes, encode_image
from lictrain.models import build_model


def _encoded(name: str, height: int, width: int, seed: int):
    """An untrained ``name`` model, its codec and one encoded random image."""
    torch.manual_seed(0)
    model = build_model(name, 1)
    model.eval()
    info = codec_from_model(model, name, 1)
    pixels = (torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)
    return model, info, encode_image(model, info, pixels).data


@pytest.fixture(scope="module")
def codec():
    return _encoded("bmshj2018-hyperprior", 48, 80, 1)


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def refuse(model, info, data: bytes) -> str:
    with pytest.raises(BitstreamError) as caught:
        decode_bytes(model, info, data)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_every_truncation_is_refused(codec) -> None:
    model, info, data = codec
    for cut in range(len(data)):
        refuse(model, info, data[:cut])


def test_seeded_mutations_with_a_valid_crc_never_crash(codec) -> None:
    model, info, data = codec
    body = bytearray(data[:-4])
    rng = random.Random(0)
    outcomes = {"refused": 0, "decoded": 0}
    for _ in range(150):
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            mutated[rng.randrange(len(MAGIC) + 1, len(mutated))] = rng.randrange(256)
        try:
            decoded = decode_bytes(model, info, with_crc(bytes(mutated)))
            assert decoded.pixels.shape == (3, 48, 80)
            outcomes["decoded"] += 1  # a change the reconstruction checksum cannot see (or did not need to)
        except BitstreamError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100


def _crafted(data: bytes, **changes) -> bytes:
    s = unpack(data)
    fields = dict(model=s.model, quality=s.quality, fingerprint=s.fingerprint, height=s.height, width=s.width,
                  shape=s.shape, strings=s.strings, recon_crc=s.recon_crc)
    fields.update(changes)
    return pack(**fields)


def test_crafted_headers_are_refused_before_allocating(codec) -> None:
    model, info, data = codec
    s = unpack(data)
    assert "over the" in refuse(model, info, _crafted(data, height=20000, width=20000))
    assert "latent shape" in refuse(model, info, _crafted(data, shape=(4000, 6000)))
    assert "latent shape" in refuse(model, info, _crafted(data, shape=((1, 2), (9, 9))))
    empty = [[b"" for _ in group] for group in s.strings]
    refuse(model, info, _crafted(data, strings=empty))  # the decoder reads zeros, the checksum refuses
    short = [[x[:1] for x in group] for group in s.strings]
    refuse(model, info, _crafted(data, strings=short))


@pytest.fixture(scope="module")
def hpcm_codec():
    return _encoded("hpcm-tiny", 40, 72, 2)


TOO_SHORT = [b"", b"\x01", b"\x01\x02", b"\x01\x02\x03", b"\x00" * 5, b"\xff" * 9, b"\x00" * 8, b"\xff" * 8]


@pytest.mark.parametrize("which", ["codec", "hpcm_codec"])
def test_streams_too_short_for_rans_are_refused_without_a_reconstruction_checksum(which: str, request) -> None:
    """Nothing else would catch them: with no checksum the decoder made an image of an empty stream."""
    model, info, data = request.getfixturevalue(which)
    s = unpack(data)
    assert decode_bytes(model, info, _crafted(data, recon_crc=None)).matches_encoder is None  # the real streams pass
    for g in range(len(s.strings)):  # y, then z
        for bad in TOO_SHORT:
            strings = [list(group) for group in s.strings]
            strings[g] = [bad]
            message = refuse(model, info, _crafted(data, strings=strings, recon_crc=None))
            assert f"stream {g}" in message and "rANS" in message, message
    empty = [[b""] for _ in s.strings]
    assert "rANS" in refuse(model, info, _crafted(data, strings=empty, recon_crc=None))
    batch = [list(group) * 2 for group in s.strings]  # two images' streams: the decoder would build a batch
    assert "one per latent" in refuse(model, info, _crafted(data, strings=batch, recon_crc=None))
    assert "one per latent" in refuse(model, info, _crafted(data, strings=[[] for _ in s.strings], recon_crc=None))


@pytest.mark.parametrize("shape_json", ["[" * 5000 + "]" * 5000, '["a", "b"]', "[1e400, 2]", "[-3, 2]",
                                        "[[[[[[1, 2]]]]]]", '{"h": 1}'])
def test_hostile_json_shapes_are_refused(codec, shape_json: str) -> None:
    model, info, data = codec
    good = _crafted(data, shape=((1, 2),))  # a JSON-kind shape, then swap its text
    text = json.dumps([[1, 2]], separators=(",", ":")).encode()
    at = good.index(text)
    length_at = at - 1
    new = shape_json.encode()
    body = good[:-4]
    if len(new) >= 128:
        varint = bytes([(len(new) & 0x7F) | 0x80, len(new) >> 7])
        body = body[:length_at] + varint + new + body[at + len(text):]
    else:
        body = body[:length_at] + bytes([len(new)]) + new + body[at + len(text):]
    message = refuse(model, info, with_crc(body))
    assert "shape" in message


def test_cli_decompress_of_a_crafted_file_is_one_line_exit_2(codec, tmp_path: Path, capsys) -> None:
    from lictrain.cli.main import main

    model, info, data = codec
    ckpt = tmp_path / "w.pt"
    torch.save({"model_state": model.state_dict(), "config": {"model": "bmshj2018-hyperprior", "quality": 1}}, ckpt)
    bad = tmp_path / "bad.lic"
    bad.write_bytes(_crafted(data, shape=(4000, 6000)))
    assert main(["decompress", str(bad), "--checkpoint", str(ckpt), "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "latent shape" in err[0] and not (tmp_path / "out.png").exists()
