"""Data: IDX files, dataset lookup and download, toy datasets, preprocessing."""

from .datasets import (
    DATA_ENV,
    DATASETS,
    DatasetInfo,
    DatasetNotFoundError,
    DownloadError,
    check_splits,
    dataset_files,
    download,
    find_dataset,
    is_known_dataset,
    load_idx_dataset,
    load_mnist,
    resolve_data_env,
    search_paths,
)
from .idx import IDXError, read_idx, read_idx_images, read_idx_labels, write_idx
from .preprocess import MinMaxScaler, StandardScaler, one_hot, preprocess_digit, train_test_split
from .toy import make_blobs, make_spirals, make_xor

__all__ = [
    "DATA_ENV",
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DownloadError",
    "IDXError",
    "MinMaxScaler",
    "StandardScaler",
    "check_splits",
    "dataset_files",
    "download",
    "find_dataset",
    "is_known_dataset",
    "load_idx_dataset",
    "load_mnist",
    "make_blobs",
    "make_spirals",
    "make_xor",
    "one_hot",
    "preprocess_digit",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "resolve_data_env",
    "search_paths",
    "train_test_split",
    "write_idx",
]
