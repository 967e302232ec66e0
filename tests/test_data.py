"""Data: folder layouts, the built-in set, crops, and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import write_images
from lictrain.data import (TEST_PHOTOS, TRAIN_PHOTOS, CenterCropDataset, RandomCropDataset, load_builtin,
                           load_splits, read_image, split_flat)
from lictrain.errors import DataError


def test_compressai_layout(image_folder: Path) -> None:
    splits = load_splits(image_folder)
    assert [im.name for im in splits.train] == [f"img{i:03d}.png" for i in range(4)]
    assert len(splits.test) == 2
    assert splits.train[0].pixels.dtype == torch.uint8 and splits.train[0].pixels.shape == (3, 80, 96)


def test_flat_folder_split_is_90_10_and_deterministic(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 20)
    train, test = split_flat(paths)
    assert len(test) == 2 and len(train) == 18
    assert set(train).isdisjoint(test)
    assert [p.name for p in test] == ["img009.png", "img019.png"]
    assert split_flat(paths) == (train, test)


def test_formats_and_modes_are_converted_to_rgb(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (40, 30), 7).save(tmp_path / "grey.png")
    Image.new("RGBA", (40, 30), (1, 2, 3, 4)).save(tmp_path / "alpha.webp", lossless=True)
    Image.new("RGB", (40, 30), (200, 100, 50)).save(tmp_path / "photo.jpg", quality=95)
    assert read_image(tmp_path / "grey.png").shape == (3, 30, 40)
    assert read_image(tmp_path / "alpha.webp")[:, 0, 0].tolist() == [1, 2, 3]
    assert read_image(tmp_path / "photo.jpg").shape == (3, 30, 40)


def test_builtin_photos_train_and_test_are_disjoint() -> None:
    assert set(TRAIN_PHOTOS).isdisjoint(TEST_PHOTOS)
    test = load_builtin("test")
    assert [im.name for im in test] == ["chelsea", "coffee"]
    assert test[0].pixels.shape == (3, 300, 451)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_splits(tmp_path / "nope")


def test_folder_without_images_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        load_splits(tmp_path)


def test_one_unreadable_file_is_skipped_with_a_warning(image_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (image_folder / "train" / "broken.png").write_bytes(b"\x89PNG not really")
    splits = load_splits(image_folder)
    assert len(splits.train) == 4
    assert "broken.png" in caplog.text


def test_all_unreadable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"junk")
    (tmp_path / "b.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable images"):
        load_splits(tmp_path)


def test_crop_larger_than_every_image_is_an_error(image_folder: Path) -> None:
    splits = load_splits(image_folder)
    with pytest.raises(DataError, match="larger than every train image"):
        RandomCropDataset(splits.train, 128, 8)


def test_random_crops_are_seeded_by_epoch_and_index(image_folder: Path) -> None:
    train = load_splits(image_folder).train
    ds = RandomCropDataset(train, 64, 8)
    ds.set_epoch(seed=3, epoch=1)
    first = [ds[i] for i in range(8)]
    torch.manual_seed(123)  # global RNG must not matter
    again = [ds[i] for i in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    ds.set_epoch(seed=3, epoch=2)
    assert not all(torch.equal(a, ds[i]) for i, a in enumerate(first))
    assert first[0].shape == (3, 64, 64) and 0.0 <= float(first[0].min()) and float(first[0].max()) <= 1.0


def test_center_crop_takes_the_middle(image_folder: Path) -> None:
    test = load_splits(image_folder).test
    crop = CenterCropDataset(test, 64)[0]
    expected = test[0].pixels[:, 8:72, 16:80].float() / 255
    assert torch.equal(crop, expected)
