"""The .lic file format: round trip, and every way a file can be wrong is a one-line BitstreamError."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lictrain.config import TrainConfig
from lictrain.errors import BitstreamError, CheckpointError, ConfigError, LictrainError
from lictrain.evaluation.bitstream import BASE_VERSION, FORMAT_VERSION, MAGIC, pack, storable_name, unpack
from lictrain.evaluation.codec import (
    codec_from_model, decode_bytes, encode_image, load_codec, weights_fingerprint,
)
from lictrain.models import build_model

FP = bytes(range(8))


def sample(**kw) -> bytes:
    args = dict(model="bmshj2018-hyperprior", quality=3, fingerprint=FP, height=300, width=451,
                shape=torch.Size([5, 8]), strings=[[b"\x01\x02\x03" * 40], [b"zz" * 9]], recon_crc=0xDEADBEEF)
    return pack(**{**args, **kw})


def smooth_image(h: int = 64, w: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 8 + 1, w // 8 + 1, generator=g)
    return F.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)[0].mul(255).round().to(torch.uint8)


def one_line_error(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- format


def test_pack_unpack_round_trip_keeps_every_field() -> None:
    data = sample()
    s = unpack(data)
    assert (s.model, s.quality, s.fingerprint, s.height, s.width) == ("bmshj2018-hyperprior", 3, FP, 300, 451)
    assert s.shape == (5, 8)
    assert s.strings == [[b"\x01\x02\x03" * 40], [b"zz" * 9]]
    assert s.recon_crc == 0xDEADBEEF
    assert s.payload_bytes == 120 + 18
    assert data.startswith(MAGIC) and data[4] == BASE_VERSION  # no checkpoint name: a version-1 file
    assert len(data) - s.payload_bytes == 37 + len("bmshj2018-hyperprior")  # header + checksums: ~60 bytes


def test_nested_shapes_several_streams_and_no_checksum() -> None:
    shape = [[4, 6], [8, 12], 3]
    strings = [[b"a", b"bb"], [], [b"c" * 300]]
    s = unpack(sample(shape=shape, strings=strings, recon_crc=None))
    assert s.shape == ((4, 6), (8, 12), 3)
    assert s.strings == [[b"a", b"bb"], [], [b"c" * 300]]
    assert s.recon_crc is None


def test_every_truncation_is_a_clear_error() -> None:
    data = sample()
    for n in range(len(data)):
        with pytest.raises(BitstreamError) as info:
            unpack(data[:n], "f.lic")
        msg = one_line_error(info.value)
        assert ("truncated" in msg) or ("not a lictrain bitstream" in msg) or ("corrupt" in msg), (n, msg)
    # cut inside the payload: says truncated, names the file
    with pytest.raises(BitstreamError, match=r"f\.lic is truncated"):
        unpack(data[:-30], "f.lic")


def test_flipped_bits_and_trailing_bytes_are_errors() -> None:
    data = sample()
    for i in range(len(MAGIC) + 1, len(data)):
        corrupt = bytearray(data)
        corrupt[i] ^= 0x10
        with pytest.raises(BitstreamError) as info:
            unpack(bytes(corrupt))
        one_line_error(info.value)
    with pytest.raises(BitstreamError, match="unexpected bytes after the end"):
        unpack(data + b"\x00\x00\x00\x00\x00")


@pytest.mark.parametrize("foreign", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, b"LIC", bytes(range(256)), b"\xff\xd8\xff\xe0JFIF"])
def test_foreign_files_are_not_bitstreams(foreign: bytes) -> None:
    with pytest.raises(BitstreamError, match="not a lictrain bitstream") as info:
        unpack(foreign, "photo.png")
    one_line_error(info.value)


def test_other_format_version_says_so() -> None:
    data = bytearray(sample())
    data[4] = 99
    body = bytes(data[:-4])
    with pytest.raises(BitstreamError, match="format version 99"):
        unpack(body + zlib.crc32(body).to_bytes(4, "big"))


# Written by lictrain before format version 2 existed (pack at commit ca59f38): the version-1 layout
# must stay readable, and a file without a checkpoint name is still written byte for byte like this.
V1_FILES = [
    ("4c49431a010114626d73686a323031382d666163746f72697a656401000102030405060705070002010101010c01020304000102030405"
     "060708090a0b1a614040",
     dict(model="bmshj2018-factorized", quality=1, fingerprint=bytes(range(8)), height=5, width=7, shape=(1, 1),
          strings=[[bytes(range(12))]], recon_crc=0x01020304)),
    ("4c49431a0102096870636d2d74696e790100000000000000000302010d5b5b312c315d2c5b322c325d5d0201080108000000000000000"
     "0ffffffffffffffffa2e3b448",
     dict(model="hpcm-tiny", quality=1, fingerprint=bytes(8), height=3, width=2, shape=((1, 1), (2, 2)),
          strings=[[b"\x00" * 8], [b"\xff" * 8]], centred=True)),
]


@pytest.mark.parametrize(("hex_data", "fields"), V1_FILES)
def test_version_1_files_still_read_and_are_still_written(hex_data: str, fields: dict) -> None:
    data = bytes.fromhex(hex_data)
    s = unpack(data)
    assert (s.model, s.quality, s.height, s.width, s.checkpoint, s.run, s.coded_with) == (
        fields["model"], 1, fields["height"], fields["width"], None, None, None)
    assert s.strings == fields["strings"] and s.centred == fields.get("centred", False)
    assert pack(**fields) == data


def test_a_named_checkpoint_makes_a_version_2_file() -> None:
    data = sample(checkpoint="checkpoint_epoch00003.pt", run="hpcm-tiny-0.0067-20261130")
    s = unpack(data)
    assert data[4] == 2 and FORMAT_VERSION == 3  # the lowest version holding its fields (3 adds a rate)
    assert (s.checkpoint, s.run) == ("checkpoint_epoch00003.pt", "hpcm-tiny-0.0067-20261130")
    assert s.coded_with == "checkpoint_epoch00003.pt of run hpcm-tiny-0.0067-20261130"
    assert s.strings == unpack(sample()).strings and s.recon_crc == 0xDEADBEEF
    assert unpack(sample(checkpoint="w.pt")).coded_with == "w.pt"  # no run directory known
    for n in range(len(data)):  # every cut of the longer header is still a clean error
        with pytest.raises(BitstreamError) as info:
            unpack(data[:n])
        one_line_error(info.value)


def _with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_hostile_checkpoint_names_are_refused() -> None:
    good = sample(checkpoint="ck.pt")[:-4]
    at = good.index(b"ck.pt") - 1  # its length byte
    for raw in (b"a\nb", b"\x1b[2J", b"a/b", b"\xff\xfe"):
        with pytest.raises(BitstreamError, match="checkpoint or run name") as info:
            unpack(_with_crc(good[:at] + bytes([len(raw)]) + raw + good[at + 6:]))
        one_line_error(info.value)
    with pytest.raises(BitstreamError, match="impossible checkpoint name"):  # over 255 bytes: refused before reading
        unpack(_with_crc(good[:at] + b"\x80\x7f" + good[at + 6:]))
    with pytest.raises(BitstreamError, match="empty checkpoint name"):
        unpack(_with_crc(good[:at] + b"\x00" + good[at + 6:]))
    v1_with_flag = bytearray(sample())
    v1_with_flag[5] |= 0x04  # the flag means nothing in a version-1 file
    with pytest.raises(BitstreamError, match="unknown flags"):
        unpack(_with_crc(bytes(v1_with_flag[:-4])))


def test_an_unprintable_model_name_is_refused_in_one_line() -> None:
    body = bytearray(sample()[:-4])
    body[body.index(b"bmshj2018") + 6] = ord("\n")  # what a mutation with a recomputed CRC found
    with pytest.raises(BitstreamError, match="unprintable model name") as info:
        unpack(_with_crc(bytes(body)))
    one_line_error(info.value)


def test_names_are_made_storable() -> None:
    assert storable_name("checkpoint_epoch00003.pt") == "checkpoint_epoch00003.pt"
    assert storable_name("a\nb\x1bc/d") == "a?b?c?d"
    assert storable_name("é" * 200) == "é" * 127  # 255 bytes of UTF-8, cut at a character
    assert storable_name("") is None and storable_name(None) is None
    with pytest.raises(ValueError):
        sample(checkpoint="a\nb")


# --------------------------------------------------------------------------- with a model


@pytest.fixture(scope="module")
def factorized() -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    model = build_model("bmshj2018-factorized", 1)
    return model, codec_from_model(model, "bmshj2018-factorized", 1)


def test_bpp_is_eight_times_file_bytes_over_pixels(factorized, tmp_path: Path) -> None:
    from lictrain.data import NamedImage
    from lictrain.evaluation.evaluate import evaluate_codec

    model, info = factorized
    image = NamedImage("img", smooth_image(40, 72))  # 40x72 pads to 48x80 (alignment 16)
    point = evaluate_codec(model, info, [image], bitstream_dir=tmp_path)
    r = point.images[0]
    size = (tmp_path / "img.lic").stat().st_size  # <image name>.lic
    assert r.bytes == size
    assert r.bpp == pytest.approx(8 * size / (40 * 72), rel=0, abs=1e-12)
    stream = unpack((tmp_path / "img.lic").read_bytes())
    assert r.payload_bytes == stream.payload_bytes
    assert r.bpp_payload == pytest.approx(8 * stream.payload_bytes / (40 * 72), abs=1e-12)
    assert r.bpp > r.bpp_payload and r.deterministic is None  # not checked by default
    assert stream.recon_crc is not None  # the file carries its decode's checksum all the same
    checked = evaluate_codec(model, info, [image], check_decode=True).images[0]
    assert checked.deterministic is True and checked.bytes == r.bytes


def test_wrong_weights_and_wrong_model_are_clear_errors(factorized) -> None:
    model, info = factorized
    data = encode_image(model, info, smooth_image()).data
    torch.manual_seed(1)
    other = build_model("bmshj2018-factorized", 1)
    other_info = codec_from_model(other, "bmshj2018-factorized", 1)
    assert other_info.fingerprint != info.fingerprint
    with pytest.raises(BitstreamError, match="encoded with other weights") as e:
        decode_bytes(other, other_info, data, what="x.lic")
    one_line_error(e.value)
    hyper = build_model("bmshj2018-hyperprior", 1)
    with pytest.raises(BitstreamError, match="encoded with bmshj2018-factorized quality 1"):
        decode_bytes(hyper, codec_from_model(hyper, "bmshj2018-hyperprior", 1), data)


def test_a_decoder_that_reconstructs_differently_is_an_error(factorized) -> None:
    model, info = factorized
    data = encode_image(model, info, smooth_image()).data
    s = unpack(data)
    wrong = pack(model=s.model, quality=s.quality, fingerprint=s.fingerprint, height=s.height, width=s.width,
                 shape=s.shape, strings=s.strings, recon_crc=(s.recon_crc or 0) ^ 1)
    with pytest.raises(BitstreamError, match="different image than the encoder's"):
        decode_bytes(model, info, wrong)
    assert decode_bytes(model, info, wrong, strict=False).matches_encoder is False
    assert decode_bytes(model, info, data).matches_encoder is True


def test_a_model_that_chokes_on_the_streams_is_a_bitstream_error(factorized, monkeypatch) -> None:
    model, info = factorized
    data = encode_image(model, info, smooth_image()).data
    s = unpack(data)
    bad = pack(model=s.model, quality=s.quality, fingerprint=s.fingerprint, height=s.height, width=s.width,
               shape=(1,), strings=s.strings)  # a shape that cannot belong to this image
    with pytest.raises(BitstreamError, match="latent shape"):
        decode_bytes(model, info, bad)

    def choke(strings, shape):
        raise RuntimeError("symbol out of range")

    monkeypatch.setattr(model, "decompress", choke)
    with pytest.raises(BitstreamError, match="could not be decoded"):
        decode_bytes(model, info, data)


# --------------------------------------------------------------------------- loading codecs


def test_load_codec_from_checkpoint_and_safetensors(factorized, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model, info = factorized
    cfg = TrainConfig(model="bmshj2018-factorized", quality=1, lmbda=0.01).to_dict()
    state = {k: v for k, v in build_model("bmshj2018-factorized", 1).state_dict().items()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"model_state": state, "config": cfg, "epoch": 7}, tmp_path / "c.pt")
    net, got = load_codec(tmp_path / "c.pt")
    assert (got.model, got.quality, got.epoch, got.lmbda, got.alignment) == ("bmshj2018-factorized", 1, 7, 0.01, 16)
    assert got.fingerprint == info.fingerprint == weights_fingerprint(model)

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ConfigError, match="pass --model NAME --quality Q"):
        load_codec(tmp_path / "w.safetensors")
    _, st = load_codec(tmp_path / "w.safetensors", model="bmshj2018-factorized", quality=1)
    assert st.fingerprint == info.fingerprint  # same weights, same fingerprint, whatever the container
    with pytest.raises(ConfigError, match="contradicts"):
        load_codec(tmp_path / "c.pt", model="bmshj2018-hyperprior")
    with pytest.raises(CheckpointError, match="do not fit bmshj2018-hyperprior"):
        load_codec(tmp_path / "w.safetensors", model="bmshj2018-hyperprior", quality=1)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    for junk in ("junk.pt", "junk.safetensors", "missing.pt"):
        with pytest.raises(LictrainError) as e:
            load_codec(tmp_path / junk, model="bmshj2018-factorized", quality=1)
        one_line_error(e.value)


def test_official_padding_is_zeros_centred_to_256_and_recorded_in_the_file(factorized) -> None:
    import dataclasses

    from lictrain.evaluation.codec import pad_to

    x = torch.ones(1, 3, 40, 72)
    padded = pad_to(x, 16, "official")
    assert padded.shape == (1, 3, 256, 256)
    assert padded[0, 0, 108:148, 92:164].eq(1).all() and padded.sum() == x.sum()  # centred, zeros around
    assert pad_to(x, 16).shape == (1, 3, 48, 80)  # the default: right/bottom replication
    model, info = factorized
    official = dataclasses.replace(info, pad="official")
    pixels = smooth_image(40, 72)
    encoded = encode_image(model, official, pixels)
    stream = unpack(encoded.data)
    assert stream.centred and not unpack(encode_image(model, info, pixels).data).centred
    decoded = decode_bytes(model, info, encoded.data)  # the file, not the reader's setting, says how to crop
    assert decoded.matches_encoder is True and decoded.pixels.shape == (3, 40, 72)
    assert torch.equal(decoded.pixels, encoded.reconstruction)
