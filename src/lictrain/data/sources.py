"""Where training photos come from: ``--dataset`` resolved to an index of names, nothing decoded.

* nothing: the built-in scikit-image photos (tiny; decoded into memory);
* a folder in CompressAI's layout (``DIR/train/``, ``DIR/test/``) or a flat folder (searched
  recursively, split 90/10 by :func:`split_flat`);
* a file list (``.txt``/``.lst``: one image path per line, relative to the list's folder; ``#``
  comments), split like a flat folder; or a folder holding ``train.txt`` and ``test.txt``;
* prepared WebDataset shards (``lictrain data prepare``): a folder or URL with ``index.json``
  (see :mod:`lictrain.data.shards`).

Names are kept in one NumPy bytes array rather than a list of ``str``: DataLoader workers are
forked, and touching millions of Python objects' reference counts would copy every page of the
list into each worker.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lictrain.data.images import is_image_name, scan_images
from lictrain.errors import DataError

log = logging.getLogger(__name__)

#: fraction of a flat folder that becomes the test split
FLAT_TEST_FRACTION = 0.1
#: at most this many test photos from a flat folder: every epoch tests on all of them
MAX_FLAT_TEST = 100
LIST_SUFFIXES = (".txt", ".lst")


class PathIndex(Sequence[str]):
    """An immutable list of image paths stored as ``root`` + a NumPy array of relative names."""

    def __init__(self, root: str, names: Sequence[str]) -> None:
        self.root = root
        encoded = [n.encode("utf-8", "surrogateescape") for n in names]
        self._names = np.array(encoded, dtype=f"S{max((len(e) for e in encoded), default=1)}")

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return os.path.join(self.root, self.name(i))

    def name(self, i: int) -> str:
        """The relative name of item ``i`` (as listed)."""
        return bytes(self._names[i]).decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class FileSource:
    """Image files for training and test (paths only)."""

    train: PathIndex
    test: PathIndex
    description: str


def split_flat(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Deterministic split of a flat folder: every 10th file (by name) is a test photo, at most
    :data:`MAX_FLAT_TEST` of them, spread evenly over the name range.

    Striding, rather than taking the tail, spreads the test set over the whole name range
    (folders are often named by scene or date). A folder with fewer than 2 images cannot be
    split and raises.
    """
    train_pos, test_pos = _split_positions(len(paths))
    return [paths[i] for i in train_pos], [paths[i] for i in test_pos]


def _split_positions(n: int) -> tuple[list[int], list[int]]:
    if n < 2:
        raise DataError(
            f"a flat image folder needs at least 2 images to split into train and test, found {n}; "
            "add images or use the DIR/train + DIR/test layout"
        )
    stride = max(round(1 / FLAT_TEST_FRACTION), math.ceil(n / MAX_FLAT_TEST))
    test = [i for i in range(n) if i % stride == stride - 1] or [n - 1]
    test_set = set(test)
    return [i for i in range(n) if i not in test_set], test


def read_file_list(path: Path) -> list[str]:
    """Image paths from a list file: one per line, relative to the list's folder, ``#`` comments.

    Raises:
        DataError: unreadable list, or a line that is not an image name.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the file list {path} ({exc}); pass a UTF-8 text file, one image per line") from exc
    names = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not is_image_name(line):
            raise DataError(f"{path} line {number}: {line[:80]!r} is not an image file name (png, jpg, webp, ...); "
                            "list one image path per line")
        names.append(line)
    if not names:
        raise DataError(f"the file list {path} names no images; list one image path per line")
    return names


def _index(root: Path, names: list[str]) -> PathIndex:
    return PathIndex(str(root), names)


def resolve_files(dataset: str | os.PathLike[str]) -> FileSource:
    """Index the photos of a folder or file list (nothing decoded).

    Raises:
        DataError: missing path, no images, or a layout with one side empty.
    """
    root = Path(dataset).expanduser()
    if not root.exists():
        raise DataError(f"dataset not found: {root}; pass an existing folder, file list or prepared shards to --dataset")
    if root.is_file():
        if root.suffix.lower() not in LIST_SUFFIXES:
            raise DataError(f"--dataset {root} is a file but not a file list (.txt/.lst, one image per line); "
                            "pass a folder of images, a file list or prepared shards")
        names = read_file_list(root)
        train, test = _split_positions(len(names))
        return FileSource(_index(root.parent, [names[i] for i in train]), _index(root.parent, [names[i] for i in test]),
                          f"{root} ({len(names)} listed images, 90/10 split)")
    if (root / "train.txt").is_file() and (root / "test.txt").is_file():
        return FileSource(_index(root, read_file_list(root / "train.txt")), _index(root, read_file_list(root / "test.txt")),
                          f"{root} (train.txt + test.txt)")
    if (root / "train").is_dir():
        test_dir = root / "test"
        if not test_dir.is_dir():
            raise DataError(f"{root} has train/ but no test/ folder; add DIR/test/ with a few images")
        train_names, test_names = scan_images(root / "train"), scan_images(test_dir)
        if not train_names or not test_names:
            empty = root / "train" if not train_names else test_dir
            raise DataError(f"no images (png, jpg, webp, ...) in {empty}")
        return FileSource(_index(root / "train", train_names), _index(test_dir, test_names), str(root))
    names = scan_images(root)
    if not names:
        raise DataError(f"no images (png, jpg, webp, ...) in {root}; point --dataset at a folder of images")
    train, test = _split_positions(len(names))
    return FileSource(_index(root, [names[i] for i in train]), _index(root, [names[i] for i in test]),
                      f"{root} (flat, {len(names)} images, 90/10 split)")


def is_shard_dataset(dataset: str | os.PathLike[str] | None) -> bool:
    """Whether ``dataset`` names prepared shards (a URL, or a folder with ``index.json``)."""
    if dataset is None:
        return False
    text = str(dataset)
    if "://" in text or text.startswith("pipe:"):
        return True
    return (Path(text).expanduser() / "index.json").is_file()
