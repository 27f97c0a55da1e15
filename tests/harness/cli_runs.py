"""Helpers for running the harness CLI in tests, and tiny dataset files in torchvision's layouts."""
from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def run_cli(run_dir: Path, *overrides: str, multirun: bool = False, timeout: int = 300, wandb_silent: bool = True):
    """``python -m xconv.run`` in a subprocess; returns the CompletedProcess."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true" if wandb_silent else "false")
    folder = f"hydra.sweep.dir={run_dir}" if multirun else f"hydra.run.dir={run_dir}"
    command = [sys.executable, "-m", "xconv.run", *(["-m"] if multirun else []), folder, *overrides]
    return subprocess.run(command, cwd=run_dir.parent, env=env, capture_output=True, text=True,
                          timeout=timeout)


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _idx(array: np.ndarray) -> bytes:
    """IDX file bytes for a uint8 array (the MNIST format)."""
    magic = struct.pack(">HBB", 0, 0x08, array.ndim)
    return magic + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_mnist_like(folder: Path, train: int = 64, test: int = 32, compress: bool = False, seed: int = 0):
    """Small MNIST-format files (train-images-idx3-ubyte ...) with learnable labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 50, (count, 28, 28)).astype(np.uint8)
        for index, label in enumerate(labels):  # a bright bar whose row encodes the label
            images[index, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
        for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            data = _idx(array)
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)


def write_cifar10(root: Path, per_batch: int = 16, seed: int = 0):
    """Small CIFAR-10 python-pickle batches in torchvision's layout (md5 will not match)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (per_batch, 3 * 32 * 32)).astype(np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist()}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)


def write_fake_pets(root: Path, ids: dict[str, list[str]], size=(30, 40)) -> None:
    """The layout torchvision's OxfordIIITPet reads: images/<id>.jpg, annotations/trimaps/<id>.png,
    annotations/{trainval,test}.txt with lines "<id> <class> <species> <breed id>"."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    height, width = size
    rng = np.random.default_rng(0)
    for split, names in ids.items():
        lines = []
        for name in names:
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
                base / "images" / f"{name}.jpg")
            trimap = np.full((height, width), 2, dtype=np.uint8)  # background
            trimap[:, : width // 2] = 1  # pet on the left half
            trimap[:, width // 2] = 3  # border
            Image.fromarray(trimap, mode="L").save(base / "annotations" / "trimaps" / f"{name}.png")
            lines.append(f"{name} 1 1 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
