"""Locate, download and load IDX datasets: MNIST, Fashion-MNIST and KMNIST.

Search order for a dataset `name` (the first folder holding all four files wins):

1. `data_dir`, when given: the folder itself, then `data_dir/<name>`. An explicit `data_dir`
   without the files is an error; nothing else is searched and nothing is downloaded.
2. `$CHAINRULE_DATA/<name>`
3. the user cache `$XDG_CACHE_HOME/chainrule/<name>` (default `~/.cache/chainrule/<name>`)
4. `SYSTEM_DATA_ROOT/<name>` (`/usr/share/datasets/<name>`)
5. download into the user cache (3), verifying the published MD5 of each .gz.

Each standard file may be present gzipped (`train-images-idx3-ubyte.gz`) or uncompressed
(`train-images-idx3-ubyte`). Local files are validated by content (IDX header and sizes, in
`read_idx`), not by the .gz checksum, since a recompressed .gz holds the same data.

Mirrors: the registry's mirror list is replaced by the `mirrors=` argument or, when that is
None, by `$CHAINRULE_MIRROR` (base URLs separated by commas or whitespace). A `{name}` in a
base URL is replaced by the dataset name; a file's URL is the base URL plus its file name.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

__all__ = [
    "DATA_ENV",
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DownloadError",
    "check_splits",
    "dataset_files",
    "download",
    "find_dataset",
    "is_known_dataset",
    "load_idx_dataset",
    "load_mnist",
    "resolve_data_env",
    "search_paths",
]

DATA_ENV = "CHAINRULE_DATA"
MIRROR_ENV = "CHAINRULE_MIRROR"
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")

STANDARD_FILES: Mapping[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

_USER_AGENT = "chainrule-dataset-downloader (Python urllib)"


def resolve_data_env() -> str | None:
    """Make a relative ``$CHAINRULE_DATA`` absolute, against the current working directory.

    Called once when this module is imported (and by the ``chainrule`` command before it does
    anything else), so that the folder a user named relative to where they started keeps
    meaning that folder: for code that changes directory later, and for every subprocess,
    which inherits the absolute path.

    Returns:
        The (now absolute) value, or None when the variable is unset or empty.
    """
    value = os.environ.get(DATA_ENV, "")
    if not value:
        return None
    resolved = os.path.abspath(os.path.expanduser(value))
    os.environ[DATA_ENV] = resolved
    return resolved


resolve_data_env()


@dataclass(frozen=True)
class DatasetInfo:
    """A known dataset: where to download its four IDX files and their published MD5s.

    Args:
        name: registry key, also the folder name searched for (e.g. 'mnist').
        mirrors: base URLs tried in order; a file's URL is base + file name.
        md5: file name -> MD5 of the published .gz, or None where no check is made.
        homepage: where the dataset is described.
        files: role ('train_images', 'train_labels', 'test_images', 'test_labels') -> file name.
        num_classes: C; the labels are 0 … C − 1.
    """

    name: str
    mirrors: tuple[str, ...]
    md5: Mapping[str, str | None]
    homepage: str = ""
    files: Mapping[str, str] = field(default_factory=lambda: dict(STANDARD_FILES))
    num_classes: int = 10


def _md5s(train_images: str, train_labels: str, test_images: str, test_labels: str):
    return dict(
        zip(
            STANDARD_FILES.values(),
            (train_images, train_labels, test_images, test_labels),
            strict=True,
        )
    )


# Fashion-MNIST checksums: zalandoresearch/fashion-mnist README; KMNIST: rois-codh/kmnist
# (both also pinned by torchvision).
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5=_md5s(
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5=_md5s(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "kmnist": DatasetInfo(
        name="kmnist",
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        md5=_md5s(
            "bdb82020997e1d708af4cf47b453dcf7",
            "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7",
            "7320c461ea6c1c855c0b718fb2a4b134",
        ),
        homepage="https://github.com/rois-codh/kmnist",
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files were found nowhere and could not be downloaded."""


class DownloadError(OSError):
    """Every mirror failed: network error, HTTP error, truncated transfer or MD5 mismatch."""


def _normalize_name(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


def _cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "chainrule"


def _candidates(name: str, data_dir: str | os.PathLike | None) -> list[tuple[Path, str]]:
    """Ordered (folder, how it was chosen) pairs to search for dataset `name`."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [(root, "data_dir"), (root / name, "data_dir/<name>")]
    found: list[tuple[Path, str]] = []
    env = os.environ.get(DATA_ENV, "")
    if env:
        found.append((Path(env).expanduser() / name, f"${DATA_ENV}/<name>"))
    found.append((_cache_root() / name, "user cache"))
    found.append((SYSTEM_DATA_ROOT / name, "system datasets"))
    return found


def search_paths(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Return the folders searched for dataset `name`, in order.

    With `data_dir` these are `data_dir` and `data_dir/<name>` only; without it
    `$CHAINRULE_DATA/<name>` (when set), the user cache and `/usr/share/datasets/<name>`.
    A dataset that is in none of them is downloaded into the user cache (the second-to-last
    entry when no data_dir is given).

    Args:
        name: dataset name, e.g. 'mnist'.
        data_dir: optional explicit folder.

    Returns:
        List of candidate folders; they need not exist.
    """
    return [path for path, _ in _candidates(_normalize_name(name), data_dir)]


def _resolve_files(folder: Path, files: Mapping[str, str]) -> tuple[dict[str, Path], list[str]]:
    """Map each role to an existing file in `folder` (.gz or uncompressed); list the missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, filename in files.items():
        options = [filename]
        if filename.endswith(".gz"):
            options.append(filename[:-3])
        for option in options:
            path = folder / option
            if path.is_file():
                found[role] = Path(os.path.abspath(path))
                break
        else:
            missing.append(filename)
    return found, missing


def _folder_status(folder: Path, files: Mapping[str, str]) -> str:
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "is not a directory"
    _, missing = _resolve_files(folder, files)
    if len(missing) == len(files):
        return "has none of the files"
    return f"has {len(files) - len(missing)} of {len(files)} files; missing {', '.join(missing)}"


def _mirror_bases(info: DatasetInfo, mirrors: str | Iterable[str] | None) -> list[str]:
    if mirrors is None:
        env = os.environ.get(MIRROR_ENV, "").strip()
        bases = re.split(r"[,\s]+", env) if env else list(info.mirrors)
    elif isinstance(mirrors, str):
        bases = [mirrors]
    else:
        bases = list(mirrors)
    bases = [b.replace("{name}", info.name) for b in bases if b]
    return [b if b.endswith("/") else b + "/" for b in bases]


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _progress_bar(total: int | None, label: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False)


def _fetch(url: str, part: Path, md5: str | None, progress: bool, timeout: float) -> None:
    """Stream `url` into `part`; raise DownloadError on a short transfer or MD5 mismatch."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as response, part.open("wb") as out:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.strip().isdigit() else None
        bar = _progress_bar(expected, part.name[: -len(".part")]) if progress else None
        try:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if expected is not None and received != expected:
        raise DownloadError(
            f"truncated transfer: Content-Length is {expected} bytes, received {received}"
        )
    if md5 is not None and digest.hexdigest() != md5.lower():
        raise DownloadError(
            f"MD5 mismatch: expected {md5.lower()}, got {digest.hexdigest()}; "
            "the mirror serves a different or damaged file"
        )


def download(
    url_list: str | Iterable[str],
    dest: str | os.PathLike,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download a file, trying each mirror URL in turn, and move it into place atomically.

    The transfer streams into `dest + '.part'` in the same folder, is checked (Content-Length
    against the bytes received, then MD5 when given) and only then renamed to `dest`. On any
    failure, KeyboardInterrupt included, the .part file is deleted and `dest` is not touched.

    Args:
        url_list: one URL or several mirrors' URLs of the same file, tried in order.
        dest: destination file; its folder is created if needed.
        md5: expected hex MD5 of the file, or None for no check.
        progress: show a tqdm progress bar when tqdm is installed (silently none otherwise).
        timeout: socket timeout in seconds for connecting and for each read.

    Returns:
        `dest` as a Path.

    Raises:
        DownloadError: every URL failed; the message lists each URL and why.
    """
    urls = [url_list] if isinstance(url_list, str) else list(url_list)
    if not urls:
        raise ValueError("download needs at least one URL, got an empty list")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    for url in urls:
        try:
            _fetch(url, part, md5=md5, progress=progress, timeout=timeout)
            os.replace(part, dest)
            return dest
        except (OSError, http.client.HTTPException, ValueError) as exc:
            _remove(part)
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()
            reason = exc
            if isinstance(exc, urllib.error.URLError) and not isinstance(
                exc, urllib.error.HTTPError
            ):
                reason = exc.reason
            errors.append(f"  {url}: {reason}")
        except BaseException:
            _remove(part)
            raise
    raise DownloadError(f"could not download {dest.name} to {dest}:\n" + "\n".join(errors))


def _not_found_message(
    name: str,
    notes: list[str],
    files: Mapping[str, str],
    reason: str,
) -> str:
    listing = "\n".join(notes)
    names = ", ".join(files.values())
    cache = _cache_root() / name
    return (
        f"dataset {name!r} not found. Looked in:\n{listing}\n{reason}\n"
        f"To supply the files ({names}), do one of:\n"
        f"  - set {DATA_ENV} to a folder that contains {name}/ with the four files\n"
        f"  - pass data_dir=<folder with the four files, or its parent holding {name}/>\n"
        f"  - copy the four files into {cache}"
    )


def _locate(
    name: str,
    data_dir: str | os.PathLike | None,
    mirrors: str | Iterable[str] | None,
    download_missing: bool,
    progress: bool,
    timeout: float,
) -> dict[str, Path]:
    name = _normalize_name(name)
    info = DATASETS.get(name)
    files = info.files if info is not None else STANDARD_FILES
    notes: list[str] = []
    for i, (folder, how) in enumerate(_candidates(name, data_dir), start=1):
        found, missing = _resolve_files(folder, files)
        if not missing:
            return found
        notes.append(f"  {i}. {folder} ({how}): {_folder_status(folder, files)}")
    if data_dir is not None:
        raise DatasetNotFoundError(
            f"data_dir={str(data_dir)!r} does not hold dataset {name!r}:\n"
            + "\n".join(notes)
            + f"\nPut the four files ({', '.join(files.values())}) in {data_dir} or in "
            f"{Path(data_dir) / name}, or leave data_dir unset to search the default places "
            "and download"
        )
    if info is None:
        known = ", ".join(DATASETS)
        reason = f"{name!r} is not a known dataset (known: {known}), so it cannot be downloaded."
    elif not download_missing:
        reason = "Downloading is disabled (download=False)."
    else:
        target = _cache_root() / name
        try:
            _, missing = _resolve_files(target, files)
            urls = _mirror_bases(info, mirrors)
            for filename in missing:
                download(
                    [base + filename for base in urls],
                    target / filename,
                    md5=info.md5.get(filename),
                    progress=progress,
                    timeout=timeout,
                )
            return _resolve_files(target, files)[0]
        except (DownloadError, OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                target.rmdir()
            reason = f"Download into {target} failed:\n{exc}"
            raise DatasetNotFoundError(_not_found_message(name, notes, files, reason)) from exc
    raise DatasetNotFoundError(_not_found_message(name, notes, files, reason))


def find_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    mirrors: str | Iterable[str] | None = None,
    download: bool = True,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Return the folder holding dataset `name`'s four IDX files, downloading if needed.

    Search order: see the module docstring and `search_paths`.

    Args:
        name: 'mnist', 'fashion-mnist' or 'kmnist' (other names are searched locally only).
        data_dir: explicit folder holding the files, or its parent holding `<name>/`.
        mirrors: base URLs replacing the registry's mirrors (default: $CHAINRULE_MIRROR,
            else the registry's).
        download: download missing files into the user cache when found nowhere.
        progress: show a tqdm progress bar while downloading.
        timeout: socket timeout in seconds per connection/read.

    Returns:
        The folder, as an absolute Path.

    Raises:
        DatasetNotFoundError: `data_dir` lacks the files, or the dataset is nowhere and could
            not be downloaded; the message lists every folder searched and how to fix it.
    """
    files = _locate(name, data_dir, mirrors, download, progress, timeout)
    return next(iter(files.values())).parent


def is_known_dataset(name_or_dir) -> bool:
    """True for the name of a dataset in the registry ('mnist', 'Fashion_MNIST', …)."""
    return isinstance(name_or_dir, str) and _normalize_name(name_or_dir) in DATASETS


def dataset_files(
    name_or_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    mirrors: str | Iterable[str] | None = None,
    download: bool = True,
    progress: bool = True,
    timeout: float = 30.0,
) -> dict[str, Path]:
    """Return the four resolved file paths of a dataset.

    Args:
        name_or_dir: a known dataset name (looked up as in `find_dataset`), or a directory
            holding the four files (a Path, a string with a path separator, or a string
            naming an existing directory). A known name wins over a same-named directory.
        data_dir, mirrors, download, progress, timeout: as in `find_dataset`, for names.

    Returns:
        {'train_images', 'train_labels', 'test_images', 'test_labels'} -> absolute Path.

    Raises:
        DatasetNotFoundError: as `find_dataset`, or the directory lacks some of the files.
    """
    if not is_known_dataset(name_or_dir) and (
        isinstance(name_or_dir, os.PathLike)
        or any(sep in str(name_or_dir) for sep in (os.sep, os.altsep) if sep)
        or Path(name_or_dir).expanduser().is_dir()
    ):
        folder = Path(name_or_dir).expanduser()
        if data_dir is not None:
            raise ValueError(
                f"got a directory ({folder}) and data_dir={str(data_dir)!r}; "
                "pass the directory alone, or a dataset name with data_dir"
            )
        found, missing = _resolve_files(folder, STANDARD_FILES)
        if missing:
            raise DatasetNotFoundError(
                f"{folder} {_folder_status(folder, STANDARD_FILES)}; it needs "
                f"{', '.join(STANDARD_FILES.values())} (gzipped or not)"
            )
        return found
    return _locate(str(name_or_dir), data_dir, mirrors, download, progress, timeout)


def _check_counts(images: np.ndarray, labels: np.ndarray, image_path: Path, label_path: Path):
    if len(images) != len(labels):
        raise ValueError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} "
            "labels; both files must come from the same release (replace or re-download one)"
        )


def _ranges(values) -> str:
    """'0–4, 7, 9' for sorted distinct integers."""
    runs, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            runs.append(str(start) if start == v else f"{start}–{v}")
            start = None
    return ", ".join(runs)


def _size(x: np.ndarray) -> str:
    return "×".join(map(str, x.shape[1:]))


def check_splits(files: Mapping[str, Path], train, test, name_or_dir=None) -> int:
    """Check a classification dataset before training on it; return its number of classes C.

    Both splits must hold images, of the same shape; the training labels must be the classes
    0 … C − 1, each at least once, and the test labels among them. C is the registry's for a
    known dataset (10 for the MNIST family), else the classes the training labels show (at
    least 2, without gaps).

    Args:
        files: the four paths (as from `dataset_files`), named in the messages.
        train, test: (x, y) of each split, as from `load_idx_dataset`.
        name_or_dir: the dataset name (its registry entry gives C) or a folder.

    Raises:
        ValueError: naming the file at fault and what it holds.
    """
    (x_train, y_train), (x_test, y_test) = train, test
    for split, x in (("train", x_train), ("test", x_test)):
        if len(x) == 0:
            raise ValueError(f"{files[f'{split}_images']} holds no images")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{files['test_images']} holds {_size(x_test)} images but {files['train_images']} "
            f"holds {_size(x_train)} ones: a model takes one image size"
        )
    info = DATASETS.get(_normalize_name(name_or_dir)) if is_known_dataset(name_or_dir) else None
    known = info.num_classes if info is not None else None
    where = f"{info.name}'s {known} classes 0–{known - 1}" if info is not None else None
    for split, y in (("train", y_train), ("test", y_test)):
        if known is not None and (y.min() < 0 or y.max() >= known):
            i = int(np.flatnonzero((y < 0) | (y >= known))[0])
            raise ValueError(
                f"{files[f'{split}_labels']}: label {int(y[i])} (sample {i}) is not one of "
                f"{where}"
            )
    if y_train.min() < 0:
        i = int(np.flatnonzero(y_train < 0)[0])
        raise ValueError(f"{files['train_labels']}: label {int(y_train[i])} (sample {i}) is "
                         "negative; labels number the classes 0, 1, …")
    found = np.unique(y_train).tolist()
    classes = known if known is not None else int(found[-1]) + 1
    if len(found) < classes or classes < 2:
        holds = f"{files['train_labels']} holds class{'es' if len(found) > 1 else ''} " \
            f"{_ranges(found)}"
        if known is not None:
            raise ValueError(f"{holds} only, of {where}: every class needs training images")
        if len(found) == 1:
            raise ValueError(f"{holds} only: a classifier needs at least two classes")
        missing = sorted(set(range(classes)) - set(found))
        raise ValueError(
            f"{holds}, without {_ranges(missing)}: the labels must number the classes "
            f"0 … C − 1, each with training images"
        )
    outside = (y_test < 0) | (y_test >= classes)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{files['test_labels']}: label {int(y_test[i])} (sample {i}) is not among the "
            f"training classes 0–{classes - 1}"
        )
    return classes


def _prepare_images(x: np.ndarray, normalize: bool, flatten: bool) -> np.ndarray:
    if flatten:
        x = x.reshape(len(x), -1)
    if normalize:
        x = x.astype(np.float32)
        x /= 255.0
    return x


def load_idx_dataset(
    name_or_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    normalize: bool = True,
    flatten: bool = False,
    *,
    mirrors: str | Iterable[str] | None = None,
    download: bool = True,
    progress: bool = True,
    timeout: float = 30.0,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load an MNIST-format dataset as NumPy arrays.

    Args:
        name_or_dir: a known dataset name or a directory holding the four files
            (see `dataset_files`).
        data_dir: explicit folder for a dataset name (see `find_dataset`).
        normalize: images as float32 in [0, 1] (x / 255 computed in float32); else uint8.
        flatten: images as (N, H·W) instead of (N, H, W).
        mirrors, download, progress, timeout: as in `find_dataset`.

    Returns:
        ((x_train, y_train), (x_test, y_test)); x: (N, 28, 28) or (N, 784), float32 or
        uint8; y: (N,) int64.

    Raises:
        DatasetNotFoundError: the files were not found and could not be downloaded.
        IDXError: a file is corrupt, or an images file holds labels or vice versa.
        ValueError: an images file and its labels file disagree on the number of samples.
    """
    files = dataset_files(
        name_or_dir,
        data_dir,
        mirrors=mirrors,
        download=download,
        progress=progress,
        timeout=timeout,
    )
    splits = []
    for split in ("train", "test"):
        image_path, label_path = files[f"{split}_images"], files[f"{split}_labels"]
        x = read_idx(image_path, expect=IMAGES_MAGIC)
        y = read_idx(label_path, expect=LABELS_MAGIC)
        _check_counts(x, y, image_path, label_path)
        splits.append((_prepare_images(x, normalize, flatten), y.astype(np.int64)))
    return splits[0], splits[1]


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    normalize: bool = True,
    flatten: bool = False,
    **options,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST: `load_idx_dataset('mnist', data_dir, normalize, flatten, **options)`
    (options: mirrors, download, progress, timeout).

    Returns:
        ((x_train (60000, 28, 28), y_train (60000,)), (x_test (10000, 28, 28), y_test
        (10000,))); with flatten=True the images are (N, 784).
    """
    return load_idx_dataset("mnist", data_dir, normalize, flatten, **options)
