"""The built-in photo set: scikit-image's bundled colour photographs (no download).

Roles are fixed so train and test never share content:

* train (7): astronaut, rocket, hubble_deep_field, retina, immunohistochemistry,
  stereo_motorcycle (left view), stereo_motorcycle (right view)
* test (2): chelsea, coffee

The two motorcycle views are near-duplicates, so both stay on the training side.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from lictrain.data.images import NamedImage, array_to_chw

TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "stereo_motorcycle_left",
    "stereo_motorcycle_right",
)
TEST_PHOTOS: tuple[str, ...] = ("chelsea", "coffee")


def _photo_loader(name: str) -> Callable[[], np.ndarray]:
    import skimage.data as skdata  # imported lazily: skimage import costs ~1 s

    if name.startswith("stereo_motorcycle_"):
        view = 0 if name.endswith("left") else 1
        return lambda: skdata.stereo_motorcycle()[view]
    return getattr(skdata, name)


def load_builtin(split: str) -> list[NamedImage]:
    """Decode the built-in ``"train"`` or ``"test"`` photos as (3, H, W) uint8 tensors."""
    names = {"train": TRAIN_PHOTOS, "test": TEST_PHOTOS}[split]
    return [NamedImage(name, array_to_chw(_photo_loader(name)())) for name in names]
