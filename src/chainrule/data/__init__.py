"""Data: IDX files, dataset lookup and download, toy datasets, preprocessing."""

from .datasets import (
    DATASETS,
    DatasetInfo,
    DatasetNotFoundError,
    DownloadError,
    dataset_files,
    download,
    find_dataset,
    load_idx_dataset,
    load_mnist,
    search_paths,
)
from .idx import IDXError, read_idx, read_idx_images, read_idx_labels, write_idx
from .preprocess import (
    MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    MinMaxScaler,
    StandardScaler,
    check_image_size,
    one_hot,
    open_image,
    preprocess_digit,
    train_test_split,
)
from .toy import make_blobs, make_spirals, make_xor

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DownloadError",
    "IDXError",
    "ImageTooLargeError",
    "MAX_IMAGE_PIXELS",
    "MinMaxScaler",
    "StandardScaler",
    "check_image_size",
    "dataset_files",
    "download",
    "find_dataset",
    "load_idx_dataset",
    "load_mnist",
    "make_blobs",
    "make_spirals",
    "make_xor",
    "one_hot",
    "open_image",
    "preprocess_digit",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "search_paths",
    "train_test_split",
    "write_idx",
]
