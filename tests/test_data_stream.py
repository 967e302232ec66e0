"""Streamed training crops: content, determinism across workers, exact resume, bad photos."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_images
from lictrain.data.stream import CropLoader, FilePhotos, first_usable
from lictrain.errors import DataError


class ColourPhotos:
    """Photo ``i`` is a flat image of value ``i`` (so a crop names its photo); counts decodes."""

    def __init__(self, n: int, size: tuple[int, int] = (40, 48), small: frozenset[int] = frozenset()) -> None:
        self.n, self.size, self.small = n, size, small
        self.decodes: list[int] = []

    def __len__(self) -> int:
        return self.n

    def name(self, index: int) -> str:
        return f"photo{index}"

    def decode(self, index: int) -> np.ndarray:
        self.decodes.append(index)
        h, w = (8, 8) if index in self.small else self.size
        return np.full((h, w, 3), index, dtype=np.uint8)


def photo_ids(batches: list[torch.Tensor]) -> list[int]:
    return [int(crop[0, 0, 0]) for batch in batches for crop in batch]


def epoch(loader: CropLoader, number: int, start: int = 0) -> list[torch.Tensor]:
    loader.set_epoch(number, start)
    return list(loader)


def test_one_epoch_is_one_crop_of_every_photo() -> None:
    photos = ColourPhotos(40)
    loader = CropLoader(photos, patch_size=16, batch_size=8, crops_per_image=1, epoch_size=None, seed=0)
    batches = epoch(loader, 0)
    assert len(batches) == len(loader) == 5
    assert all(b.dtype == torch.uint8 and b.shape == (8, 3, 16, 16) for b in batches)
    assert sorted(photo_ids(batches)) == list(range(40))
    assert photo_ids(epoch(loader, 1)) != photo_ids(batches)  # reshuffled per epoch


def test_several_crops_per_decode_decode_each_photo_once() -> None:
    photos = ColourPhotos(16)
    loader = CropLoader(photos, patch_size=16, batch_size=8, crops_per_image=4, epoch_size=None, seed=0)
    batches = epoch(loader, 0)
    assert len(batches) == 8 and sorted(photos.decodes) == list(range(16))
    ids = photo_ids(batches)
    assert all(ids.count(i) == 4 for i in range(16))
    assert len(set(photo_ids(batches[:1]))) == 8  # a batch holds 8 different photos


def test_ranks_split_the_pass() -> None:
    ranks = [CropLoader(ColourPhotos(48), 16, 4, 1, None, seed=3, rank=r, world_size=3) for r in range(3)]
    ids = [photo_ids(epoch(loader, 2)) for loader in ranks]
    assert all(len(i) == 16 for i in ids)
    assert sorted(sum(ids, [])) == list(range(48))


def test_crops_do_not_depend_on_workers_and_a_resumed_epoch_is_its_tail(tmp_path: Path) -> None:
    write_images(tmp_path / "train", 12, size=(64, 48))
    photos = FilePhotos([str(p) for p in sorted((tmp_path / "train").iterdir())])
    inline = CropLoader(photos, 32, 4, 2, None, seed=1, num_workers=0)
    workers = CropLoader(photos, 32, 4, 2, None, seed=1, num_workers=2)
    a, b = epoch(inline, 1), epoch(workers, 1)
    assert len(a) == 6 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    tail = epoch(workers, 1, start=3)
    assert len(tail) == 3 and all(torch.equal(x, y) for x, y in zip(a[3:], tail, strict=True))
    assert not torch.equal(epoch(inline, 2)[0], a[0])


def test_flips_and_positions_vary(tmp_path: Path) -> None:
    write_images(tmp_path, 1, size=(96, 80))
    loader = CropLoader(FilePhotos([str(tmp_path / "img000.png")]), 32, 8, 8, None, seed=0)
    crops = epoch(loader, 0)[0]
    assert len({c.numpy().tobytes() for c in crops}) == 8


def test_bad_and_small_photos_are_replaced_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    class SomeBroken(ColourPhotos):
        def decode(self, index: int) -> np.ndarray:
            if index == 3:
                raise DataError("cannot decode image photo3 (truncated)")
            return super().decode(index)

    photos = SomeBroken(24, small=frozenset({5}))
    loader = CropLoader(photos, 16, 8, 1, None, seed=0)
    with caplog.at_level(logging.WARNING):
        ids = photo_ids(epoch(loader, 0)) + photo_ids(epoch(loader, 1))
    assert 3 not in ids and 5 not in ids and len(ids) == 48
    warned = [line for line in caplog.text.splitlines() if "skipping training photo" in line]
    assert len(warned) == 2 and "photo3: cannot decode" in warned[1] and "smaller than the 16 px crop" in warned[0]


def test_a_source_without_usable_photos_is_one_error() -> None:
    with pytest.raises(DataError, match="no usable training photo among 3"):
        first_usable(ColourPhotos(3, small=frozenset({0, 1, 2})), 16)


def test_nothing_is_decoded_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lictrain.data import LoaderSettings, train_loader
    import lictrain.data.stream as stream

    write_images(tmp_path / "data" / "train", 30, size=(64, 48))
    write_images(tmp_path / "data" / "test", 2, size=(64, 48))
    calls: list[str] = []
    real = stream.decode_hwc
    monkeypatch.setattr(stream, "decode_hwc", lambda path: calls.append(path) or real(path))
    loader = train_loader(str(tmp_path / "data"), LoaderSettings(32, 4, num_workers=0))
    assert len(calls) == 1 and len(loader) == 7  # one probe; 30 photos -> 7 batches of 4
    loader.set_epoch(0)
    next(iter(loader))
    assert len(calls) == 1 + 4  # a batch decodes its own photos only
