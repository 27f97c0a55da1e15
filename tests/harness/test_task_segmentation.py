"""task=segmentation: the CLI end to end, the texture-mosaic builder and the Oxford-IIIT Pet loader."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_runs import read_summary, run_cli, write_fake_pets
from xconv_harness.data import DatasetNotFound
from xconv_harness.data.segmentation import (OxfordPetData, RotateFlip, TextureMosaicData, build_mosaic_splits,
                                     load_source, split_sources)
from xconv_harness.segmentation import dice_loss

METRICS = ("iou", "dice", "acc", "precision", "recall")
# Two training steps at 32x32 on a few mosaics, one validation and one test batch.
TINY = ["trainer.max_steps=2", "trainer.max_epochs=1", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "data.image_size=32", "data.batch_size=4", "data.eval_batch_size=4",
        "data.train_count=8", "data.val_count=4", "data.test_count=4", "task.num_images=2"]


def run_segmentation(run_dir: Path, *overrides: str) -> dict:
    result = run_cli(run_dir, "task=segmentation", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return read_summary(run_dir)


def check_summary(summary: dict) -> None:
    for stage in ("val", "test"):
        for metric in METRICS:
            value = summary["metrics"][f"{stage}/{metric}"]
            assert math.isfinite(value) and 0 <= value <= 1, (stage, metric, value)
    assert summary["activation_memory"]["saved_bytes"] > 0
    assert summary["fake_peak"]["bytes"] > summary["fake_peak"]["by_category"]["parameters"]  # one fake step ran
    assert summary["time"]["median_step_s"] > 0
    assert summary["train_steps"] == 2


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("segmentation") / "exact"
    return run_dir, run_segmentation(run_dir, "probes=0", *TINY)


def test_cli_exact(exact_run):
    run_dir, summary = exact_run
    check_summary(summary)
    assert summary["gradient"]["mode"] == "exact" and summary["data"] == "texture_mosaic"
    # Input | true | predicted masks of the validation epoch: a PNG in the run folder, and in wandb.
    for folder, pattern in (("images", "val_masks_step*.png"), ("wandb", "**/media/images/val/masks*.png")):
        pictures = list((run_dir / folder).glob(pattern))
        assert pictures, f"no {pattern} under {folder}/"
        assert np.asarray(Image.open(pictures[0])).max() > 0  # not blank


def test_cli_xconv_saves_activation_memory(exact_run, tmp_path):
    _, exact = exact_run
    xconv = run_segmentation(tmp_path / "xconv", "probes=16", "logger=none", *TINY)
    check_summary(xconv)
    assert xconv["gradient"]["mode"] == "xconv"
    assert len(xconv["gradient"]["xconv_layers"]) > 10  # every conv of the U-Net is converted
    assert xconv["activation_memory"]["saved_bytes"] < exact["activation_memory"]["saved_bytes"]


def coded_sources(count: int = 4, height: int = 40, width: int = 50) -> list[torch.Tensor]:
    """Sources whose pixels say where they come from: channels (column, row, source index)."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return [torch.stack([cols, rows, torch.full_like(rows, k)]).float() for k in range(count)]


def test_mosaic_labels_name_their_source_and_test_pixels_are_disjoint():
    sources = coded_sources()
    cut = 35  # round(50 * 0.7): columns [0, 35) train/val, [35, 50) test
    train, val, test = build_mosaic_splits(sources, size=12, counts=(30, 10, 30), test_fraction=0.3, seed=0)
    for split, dataset in (("train", train), ("val", val), ("test", test)):
        for index in range(len(dataset)):
            image, labels = dataset[index]
            assert image.shape == (3, 12, 12) and labels.shape == (12, 12) and labels.dtype == torch.long
            assert torch.equal(image[2].long(), labels)  # every pixel comes from its label's source
            columns = image[0]
            if split == "test":
                assert columns.min() >= cut
            else:
                assert columns.max() < cut
    labels = torch.stack([train[i][1] for i in range(len(train))])
    assert labels.unique().tolist() == [0, 1, 2, 3]


def test_split_sources_cuts_columns():
    left, right = split_sources(coded_sources(count=1), 0.3)
    assert left[0].shape[-1] == 35 and right[0].shape[-1] == 15
    assert left[0][0].max() == 34 and right[0][0].min() == 35


def test_rotate_flip_keeps_image_and_mask_aligned():
    train, _, _ = build_mosaic_splits(coded_sources(), size=12, counts=(20, 1, 1), test_fraction=0.3, seed=1)
    augmented = RotateFlip(train)
    for index in range(len(augmented)):
        image, labels = augmented[index]
        assert torch.equal(image[2].long(), labels)


def test_mosaic_data_is_deterministic_given_the_seed():
    def samples(seed, mosaic_seed=None):
        data = TextureMosaicData(textures=["brick", "coffee", "moon"], size=32, train_count=6, val_count=3,
                                 test_count=3, augment=False, seed=seed, mosaic_seed=mosaic_seed)
        data.setup()
        return [data.splits[split][i] for split in range(3) for i in range(3)]

    def same(first, second):
        return all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))

    first, again, other = samples(3), samples(3), samples(4)
    for (image, labels), (image2, labels2) in zip(first, again):
        assert torch.equal(image, image2) and torch.equal(labels, labels2)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other))
    for image, labels in first:
        assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
        assert 0 <= labels.min() and labels.max() < 3
    # mosaic_seed fixes the images whatever the run's seed; they are mosaic_seed's own mosaics
    assert same(samples(3, mosaic_seed=4), samples(0, mosaic_seed=4)) and same(samples(3, mosaic_seed=4), other)
    assert not same(samples(3, mosaic_seed=4), first)


def test_real_sources_are_rgb_in_unit_range():
    for name in ("brick", "chelsea"):  # a grey texture and a colour photograph
        image = load_source(name, scale=0.5)
        assert image.dim() == 3 and image.shape[0] == 3 and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.01


def test_mosaic_errors_name_the_key():
    with pytest.raises(ValueError, match="data.textures"):
        TextureMosaicData(textures=["brick", "nope"])
    with pytest.raises(ValueError, match="data.image_size"):
        build_mosaic_splits(coded_sources(), size=48, counts=(1, 1, 1), test_fraction=0.3, seed=0)


def test_dice_loss():
    labels = torch.randint(0, 3, (2, 8, 8))
    perfect = 50.0 * torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()  # (N, C, H, W)
    assert dice_loss(perfect, labels) < 1e-4
    assert dice_loss(torch.zeros(2, 3, 8, 8), labels) > 0.5


def test_pet_loader_on_fake_files(tmp_path):
    ids = {"trainval": [f"Abyssinian_{i}" for i in range(1, 9)], "test": ["Abyssinian_20", "Abyssinian_21"]}
    write_fake_pets(tmp_path, ids)
    data = OxfordPetData(root=str(tmp_path), size=32, val_fraction=0.25, augment=False, batch_size=2)
    data.check()
    train, val, test = data.splits
    assert (len(train), len(val), len(test)) == (6, 2, 2)
    image, labels = test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert labels.shape == (32, 32) and labels.dtype == torch.long
    assert set(labels.unique().tolist()) <= {0, 1, 2}
    assert (labels[:, :14] == 0).all() and (labels[:, 18:] == 1).all()  # trimap 1 (pet) -> 0, 2 -> 1
    images, masks = next(iter(data.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)


def test_pet_loader_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DatasetNotFound, match="data.download=true"):
        OxfordPetData(root=str(tmp_path)).check()


def test_cli_on_fake_pets(tmp_path):
    write_fake_pets(tmp_path / "pets", {"trainval": [f"Bengal_{i}" for i in range(1, 11)],
                                        "test": ["Bengal_30", "Bengal_31"]})
    summary = run_segmentation(tmp_path / "run", "probes=0", "logger=none", "data=oxford_pet",
                      f"data.root={tmp_path / 'pets'}", "data.val_fraction=0.2", *TINY[:7])
    check_summary(summary)
    assert summary["data"] == "oxford_pet"
