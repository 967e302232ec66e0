"""Image data: sources (folders, file lists, shards), the epoch order, streamed crops, test crops."""

from lictrain.data.builtin import TEST_PHOTOS, TRAIN_PHOTOS, load_builtin
from lictrain.data.datasets import CenterCropDataset, ImageSplits, load_splits
from lictrain.data.images import NamedImage, decode_hwc, read_image
from lictrain.data.loaders import LoaderSettings, load_test_crops, load_test_images, train_loader
from lictrain.data.sources import split_flat
from lictrain.data.stream import CropLoader

__all__ = [
    "TEST_PHOTOS", "TRAIN_PHOTOS", "CenterCropDataset", "CropLoader", "ImageSplits", "LoaderSettings", "NamedImage",
    "decode_hwc", "load_builtin", "load_splits", "read_image", "split_flat", "load_test_crops", "load_test_images",
    "train_loader",
]
