"""Data sources and decoding: folder layouts, file lists, the built-in set, test crops, and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import write_images
from lictrain.data import TEST_PHOTOS, TRAIN_PHOTOS, CenterCropDataset, load_builtin, load_splits, read_image, split_flat
from lictrain.data.images import decode_hwc, scan_images
from lictrain.data.loaders import load_test_crops
from lictrain.data.sources import MAX_FLAT_TEST, resolve_files
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


def test_center_crop_takes_the_middle(image_folder: Path) -> None:
    test = load_splits(image_folder).test
    crop = CenterCropDataset(test, 64)[0]
    expected = test[0].pixels[:, 8:72, 16:80].float() / 255
    assert torch.equal(crop, expected)


def test_flat_split_caps_the_test_side_for_large_folders() -> None:
    paths = [Path(f"p{i:05d}.jpg") for i in range(5000)]
    train, test = split_flat(paths)
    assert len(test) == MAX_FLAT_TEST and len(train) == 4900
    assert test[0] == Path("p00049.jpg") and test[-1] == Path("p04999.jpg")  # spread over the names


def test_flat_folders_are_searched_recursively_and_dot_folders_skipped(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 3)
    write_images(tmp_path / "b" / "c", 2)
    write_images(tmp_path / ".cache", 2)
    (tmp_path / "notes.txt").write_text("x")
    assert scan_images(tmp_path) == ["a/img000.png", "a/img001.png", "a/img002.png", "b/c/img000.png", "b/c/img001.png"]
    source = resolve_files(tmp_path)
    assert len(source.train) == 4 and len(source.test) == 1
    assert source.test.name(0) == "b/c/img001.png" and Path(source.test[0]).is_file()


def test_file_list_is_relative_to_its_folder_and_skips_comments(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 12)
    listing = tmp_path / "all.txt"
    listing.write_text("# my subset\n" + "\n".join(f"imgs/img{i:03d}.png" for i in range(12)) + "\n\n")
    source = resolve_files(listing)
    assert len(source.train) == 11 and [source.test.name(0)] == ["imgs/img009.png"]
    assert read_image(Path(source.train[0])).shape == (3, 80, 96)
    listing.write_text("imgs/img000.png\nreadme.md\n")
    with pytest.raises(DataError, match="line 2.*not an image"):
        resolve_files(listing)


def test_train_and_test_lists_in_a_folder(tmp_path: Path) -> None:
    write_images(tmp_path / "x", 5)
    (tmp_path / "train.txt").write_text("x/img000.png\nx/img001.png\nx/img002.png\n")
    (tmp_path / "test.txt").write_text("x/img004.png\n")
    source = resolve_files(tmp_path)
    assert len(source.train) == 3 and source.test.name(0) == "x/img004.png"


def test_a_file_that_is_not_a_list_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(b"x")
    with pytest.raises(DataError, match="not a file list"):
        resolve_files(tmp_path / "photo.png")


def test_jpeg_fast_path_gives_pillows_pixels(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.jpg", quality=90)
    with Image.open(tmp_path / "a.jpg") as img:
        expected = np.asarray(img.convert("RGB"))
    assert np.array_equal(decode_hwc(tmp_path / "a.jpg"), expected)
    assert np.array_equal(decode_hwc((tmp_path / "a.jpg").read_bytes()), expected)


def test_read_image_is_a_view_of_the_decoded_array(tmp_path: Path) -> None:
    write_images(tmp_path, 1)
    pixels = read_image(tmp_path / "img000.png")
    assert pixels.shape == (3, 80, 96) and not pixels.is_contiguous()  # no layout copy
    assert pixels.permute(1, 2, 0).is_contiguous()


def test_16_bit_grey_png_keeps_its_brightness(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    grey = np.full((20, 30), 129 * 257, dtype=np.uint16)  # 129 in 8 bits
    Image.fromarray(grey).save(tmp_path / "g16.png")
    pixels = read_image(tmp_path / "g16.png")
    assert pixels.shape == (3, 20, 30) and int(pixels.max()) == 129 and int(pixels.min()) == 129


def test_truncated_jpeg_is_a_clear_error(tmp_path: Path) -> None:
    write_images(tmp_path, 1, fmt="jpg")
    data = (tmp_path / "img000.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="cut.jpg"):
        decode_hwc(tmp_path / "cut.jpg")


def test_test_crops_keep_only_the_centre(image_folder: Path) -> None:
    crops = load_test_crops(str(image_folder), 64)
    whole = read_image(image_folder / "test" / "img000.png")
    assert [c.name for c in crops] == ["img000.png", "img001.png"]
    assert torch.equal(crops[0].pixels, whole[:, 8:72, 16:80]) and crops[0].pixels.is_contiguous()
    with pytest.raises(DataError, match="larger than every test photo"):
        load_test_crops(str(image_folder), 128)


def test_every_pillow_mode_becomes_8_bit_rgb_at_known_values(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    palette = Image.new("P", (4, 3))
    palette.putpalette([10, 20, 30] + [0] * 765)
    palette.save(tmp_path / "p.png")
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    Image.new("LA", (4, 3), (77, 9)).save(tmp_path / "la.png")
    Image.new("RGBA", (4, 3), (1, 2, 3, 0)).save(tmp_path / "rgba.png")
    Image.new("1", (4, 3), 1).save(tmp_path / "bw.png")
    grey16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert read_image(tmp_path / "p.png")[:, 0, 0].tolist() == [10, 20, 30]
    cmyk = read_image(tmp_path / "cmyk.jpg")[:, 0, 0].tolist()
    assert cmyk[0] > 240 and cmyk[1] < 15 and cmyk[2] < 15  # cyan/magenta/yellow inks -> red
    assert read_image(tmp_path / "la.png")[:, 0, 0].tolist() == [77, 77, 77]
    assert read_image(tmp_path / "rgba.png")[:, 0, 0].tolist() == [1, 2, 3]
    assert read_image(tmp_path / "bw.png")[:, 0, 0].tolist() == [255, 255, 255]
    g16 = read_image(tmp_path / "g16.png")
    assert g16.dtype == torch.uint8 and g16[0].flatten().tolist() == [v >> 8 for v in (grey16.flatten().tolist())]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = 255  # left half white, 40 wide x 20 high
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    img.save(tmp_path / "rot.jpg", quality=95, exif=exif.tobytes())
    pixels = read_image(tmp_path / "rot.jpg")
    assert pixels.shape == (3, 40, 20)  # shown upright: 20 wide x 40 high
    assert int(pixels[0, :15].float().mean()) > 200 and int(pixels[0, 25:].float().mean()) < 50


def test_pixel_limit_is_enforced_from_the_header(tmp_path: Path) -> None:
    from PIL import Image

    from lictrain.limits import set_max_pixels

    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    Image.new("RGB", (300, 200)).save(tmp_path / "big.jpg")
    set_max_pixels(50_000)
    try:
        for name in ("big.png", "big.jpg"):
            with pytest.raises(DataError, match="over the 0 MP limit|over the .* limit"):
                read_image(tmp_path / name)
    finally:
        set_max_pixels(None)
    assert read_image(tmp_path / "big.png").shape == (3, 200, 300)


def test_a_zero_byte_test_photo_is_skipped_when_good_ones_remain(image_folder: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    (image_folder / "test" / "empty.png").write_bytes(b"")
    crops = load_test_crops(str(image_folder), 64)
    assert [c.name for c in crops] == ["img000.png", "img001.png"] and "empty.png" in caplog.text
