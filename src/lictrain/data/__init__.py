"""Image data: folders, the built-in photo set, crop datasets."""

from lictrain.data.builtin import TEST_PHOTOS, TRAIN_PHOTOS, load_builtin
from lictrain.data.datasets import CenterCropDataset, ImageSplits, RandomCropDataset, load_splits, split_flat
from lictrain.data.images import NamedImage, read_image

__all__ = [
    "TEST_PHOTOS", "TRAIN_PHOTOS", "CenterCropDataset", "ImageSplits", "NamedImage",
    "RandomCropDataset", "load_builtin", "load_splits", "read_image", "split_flat",
]
