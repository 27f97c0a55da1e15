"""Deep Image Prior tasks (superres, inpainting): the CLI, the Lanczos downsampler, PSNR, the photo loader."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

import xconv
from cli_runs import read_summary, run_cli
from xconv_harness.data import DatasetNotFound
from xconv_harness.data.photos import PHOTOS, InpaintingData, PhotoData, SuperResolutionData, load_photo
from xconv_harness.data.masks import make_mask
from xconv_harness.models.dip import SkipNet
from xconv_harness.models.downsampler import Lanczos2Downsampler, lanczos2_kernel
from xconv_harness.psnr import psnr, psnr_y, rgb_to_y

# Two DIP iterations on a 64x64 image (the smallest a 5-scale skip net takes), validated once.
TWO_STEPS = ["data.iterations=2", "data.size=64", "trainer.val_check_interval=2", "logger=none",
             "trainer.enable_progress_bar=false"]
METRICS = {
    "superres": ["val/psnr", "val/psnr_y", "val/best_psnr", "val/best_psnr_y", "val/best_step",
                 "test/psnr", "test/psnr_y", "test/best_psnr", "test/best_psnr_y", "test/bicubic_psnr_y"],
    "inpainting": ["val/psnr", "val/best_psnr", "val/best_step", "test/psnr", "test/best_psnr",
                   "test/corrupted_psnr"],
}


# The CLI ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    """``run(task, probes) -> (run_dir, summary)``, each configuration run once per module."""
    runs = {}

    def run(task: str, probes: int):
        if (task, probes) not in runs:
            run_dir = tmp_path_factory.mktemp(f"{task}{probes}") / "run"
            result = run_cli(run_dir, f"task={task}", f"probes={probes}", *TWO_STEPS)
            assert result.returncode == 0, result.stderr[-3000:]
            runs[task, probes] = run_dir, read_summary(run_dir)
        return runs[task, probes]

    return run


@pytest.mark.parametrize("probes", [0, 16])
@pytest.mark.parametrize("task", sorted(METRICS))
def test_two_dip_iterations_write_a_summary(two_step_run, task, probes):
    run_dir, summary = two_step_run(task, probes)
    assert summary["task"] == task and summary["data"] == "photo" and summary["model"] == "skip_net"
    assert summary["train_steps"] == 2
    metrics = summary["metrics"]
    for key in METRICS[task]:
        assert math.isfinite(metrics[key]), key
    selected = "psnr_y" if task == "superres" else "psnr"  # the score that picks the best iterate
    assert metrics[f"test/best_{selected}"] >= metrics[f"test/{selected}"] - 1e-4  # the final net was a candidate
    assert summary["activation_memory"]["saved_bytes"] > 0
    assert summary["fake_peak"]["bytes"] > summary["fake_peak"]["by_category"]["parameters"]  # one fake step ran
    assert summary["time"]["median_step_s"] > 0 and summary["time"]["batch_size"] == 1
    xconv_layers = summary["gradient"]["xconv_layers"]
    capped = [cap["layer"] for cap in summary["probe_caps"]]  # maps too small for 16 probes stay exact
    assert all(cap["input_shape"][1] * cap["input_shape"][2] <= probes for cap in summary["probe_caps"])
    assert len(xconv_layers) + len(capped) == (0 if probes == 0 else 5 * 5 + 1)  # 5 convs per scale, the head
    assert not set(capped) & set(xconv_layers)
    assert sorted(path.name for path in (run_dir / "images").glob("*.png")) == \
        ["test_images_step2.png", "val_images_step2.png"]


@pytest.mark.parametrize("task", sorted(METRICS))
def test_xconv_saves_fewer_activation_bytes(two_step_run, task):
    saved = {probes: two_step_run(task, probes)[1]["activation_memory"]["saved_bytes"] for probes in (0, 16)}
    assert saved[16] < saved[0]


def test_fast_dev_run(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(run_dir, "task=superres", "probes=4", "data.size=64", "trainer.fast_dev_run=true",
                     "logger=none", "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert math.isfinite(read_summary(run_dir)["metrics"]["test/psnr_y"])


def test_missing_image_file_is_a_clear_error(tmp_path):
    result = run_cli(tmp_path / "run", "task=inpainting", "data.image=/nonexistent/photo.png", "logger=none")
    assert result.returncode == 2
    assert "data.image='/nonexistent/photo.png'" in result.stderr and "astronaut" in result.stderr


# Lanczos downsampler ---------------------------------------------------------------------------
def test_lanczos_kernel_is_dips_lanczos2():
    kernel = lanczos2_kernel(4)
    assert kernel.shape == (16, 16)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(kernel, kernel.T) and torch.allclose(kernel, kernel.flip(0))
    assert kernel.min() < 0  # Lanczos lobes


def test_lanczos_downsampler_keeps_constants_and_divides_the_size():
    image = torch.full((2, 3, 64, 48), 0.37)
    low = Lanczos2Downsampler(4)(image)
    assert low.shape == (2, 3, 16, 12)
    assert torch.allclose(low, torch.full_like(low, 0.37), atol=1e-6)


def test_lanczos_downsampler_is_differentiable_and_close_to_pil():
    import skimage.data

    photo = Image.fromarray(skimage.data.astronaut()).resize((128, 128), Image.LANCZOS)
    image = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)[None]  # (1, 3, H, W)
    image.requires_grad_(True)
    low = Lanczos2Downsampler(4)(image)
    low.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    pil = np.asarray(photo.resize((32, 32), Image.LANCZOS), dtype=np.float32) / 255
    pil = torch.from_numpy(pil).permute(2, 0, 1)[None]
    assert psnr(low.detach().clamp(0, 1), pil) > 30  # the same filter up to PIL's rounding and borders


def test_lanczos_downsampler_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match="not divisible by the factor 4"):
        Lanczos2Downsampler(4)(torch.zeros(1, 3, 30, 32))


# PSNR --------------------------------------------------------------------------------------------
def test_psnr_of_identical_images_is_infinite():
    image = torch.rand(1, 3, 16, 16)
    assert psnr(image, image.clone()) == math.inf


def test_psnr_of_a_known_mse():
    image = torch.full((1, 3, 8, 8), 0.5)
    assert psnr(image + 0.1, image).item() == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert psnr(image + 0.01, image).item() == pytest.approx(40.0, abs=1e-3)  # MSE 1e-4


def test_bt601_luma_and_border_crop():
    white, black = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    assert torch.allclose(rgb_to_y(white), torch.full((1, 1, 4, 4), 235 / 255))
    assert torch.allclose(rgb_to_y(black), torch.full((1, 1, 4, 4), 16 / 255))
    target = torch.full((1, 3, 12, 12), 0.5)
    damaged = target.clone()
    damaged[..., :4, :] = 1.0  # only inside the 4-pixel border
    assert psnr_y(damaged, target, border=4) == math.inf
    assert psnr_y(damaged, target, border=0) < 20


# The photo loader --------------------------------------------------------------------------------
@pytest.fixture
def png_file(tmp_path):
    """A real photograph (scikit-image's coffee, 400x600) saved as PNG."""
    import skimage.data

    path = tmp_path / "coffee.png"
    Image.fromarray(skimage.data.coffee()).save(path)
    return path


def test_photo_from_a_png_file(png_file):
    photo = load_photo(str(png_file))
    assert photo.mode == "RGB" and photo.size == (600, 400)
    data = PhotoData(image=str(png_file), size=64, iterations=5)
    data.check()
    train, val, test = data.splits
    assert (len(train), len(val), len(test)) == (5, 1, 1)
    image = train[3]["image"]
    assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
    assert torch.equal(image, test[0]["image"])


def test_photo_size_null_keeps_dips_multiple_of_32(png_file):
    data = PhotoData(image=str(png_file), size=None, iterations=1)
    data.check()
    assert data.splits[0][0]["image"].shape == (3, 384, 576)


def test_greyscale_photograph_becomes_rgb():
    data = PhotoData(image="camera", size=64, iterations=1)
    data.check()
    image = data.splits[0][0]["image"]
    assert image.shape == (3, 64, 64) and torch.equal(image[0], image[1])


def test_superres_item_shapes(png_file):
    data = SuperResolutionData(image=str(png_file), size=64, iterations=1, scale_factor=4)
    data.check()
    item = data.splits[0][0]
    assert item["hr"].shape == (3, 64, 64) and item["lr"].shape == (3, 16, 16)
    assert item["bicubic"].shape == (3, 64, 64)
    assert 15 < psnr(item["bicubic"][None], item["hr"][None]) < 40


def test_inpainting_masks_are_deterministic_and_cover_a_fifth_to_a_third():
    data = InpaintingData(image="astronaut", size=128, iterations=1, mask="text", seed=3)
    data.check()
    mask = data.splits[0][0]["mask"]
    assert mask.shape == (1, 128, 128) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert 0.15 < 1 - mask.mean() < 0.35
    assert torch.equal(mask, make_mask("text", 128, 128, seed=3))
    assert not torch.equal(mask, make_mask("text", 128, 128, seed=4))
    boxes = make_mask("boxes", 128, 128, seed=0, fraction=0.25)
    assert 0.25 <= 1 - boxes.mean() < 0.3
    with pytest.raises(ValueError, match="data.mask='blobs'"):
        InpaintingData(mask="blobs")


@pytest.mark.parametrize("value", ["/nonexistent/photo.png", "astronautt"])
def test_unknown_image_is_dataset_not_found(value):
    with pytest.raises(DatasetNotFound) as error:
        PhotoData(image=value, iterations=1).check()
    message = str(error.value)
    assert f"data.image={value!r}" in message and ", ".join(PHOTOS) in message


def test_unreadable_file_is_dataset_not_found(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(DatasetNotFound, match="not a readable image file"):
        PhotoData(image=str(path), iterations=1).check()


# The skip network -----------------------------------------------------------------------------------
def test_skip_net_shapes_and_conversion():
    net = SkipNet(8, 3, channels_down=(8, 16, 16), channels_up=(8, 16, 16), channels_skip=(4, 4, 0),
                  padding="zeros")
    output = net(torch.rand(1, 8, 32, 48))
    assert output.shape == (1, 3, 32, 48) and 0 <= output.min() and output.max() <= 1
    convs = sum(isinstance(module, torch.nn.Conv2d) for module in net.modules())
    xconv.convert(net, probes=4)
    assert len(list(xconv.xconv_layers(net))) == convs == 3 * 4 + 2 + 1  # level convs, two skips, head
    net(torch.rand(1, 8, 32, 48)).mean().backward()


@pytest.mark.parametrize("kwargs,fragment", [
    ({"padding": "mirror"}, "model.padding='mirror'"),
    ({"upsample": "cubic"}, "model.upsample='cubic'"),
    ({"channels_up": (8, 8)}, "same non-zero length"),
])
def test_skip_net_rejects_bad_settings(kwargs, fragment):
    options = {"channels_down": (8, 8, 8), "channels_up": (8, 8, 8), "channels_skip": (4, 4, 4), **kwargs}
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        SkipNet(8, 3, **options)


def test_skip_net_rejects_too_small_inputs():
    net = SkipNet(8, 3, channels_down=(8,) * 5, channels_up=(8,) * 5, channels_skip=(4,) * 5)
    with pytest.raises(ValueError, match="at least 64x64"):
        net(torch.rand(1, 8, 32, 32))


def test_task_state_round_trips_through_a_checkpoint():
    from xconv_harness.dip import InpaintingTask

    def task():
        net = SkipNet(4, 3, channels_down=(4, 4), channels_up=(4, 4), channels_skip=(2, 2))
        return InpaintingTask(net, optimizer={"name": "adam", "lr": 1e-2}, input_depth=4)

    trained = task()
    batch = {"image": torch.rand(1, 3, 16, 16), "mask": torch.ones(1, 1, 16, 16)}
    trained._remember_if_best(trained.model(trained.network_input(batch["image"], perturb=False)), batch)
    checkpoint = {"state_dict": trained.state_dict()}
    trained.on_save_checkpoint(checkpoint)
    restored = task()
    restored.on_load_checkpoint(checkpoint)
    restored.load_state_dict(checkpoint["state_dict"])
    assert torch.equal(restored.noise, trained.noise) and torch.equal(restored.best_output, trained.best_output)
    assert restored.best_score == trained.best_score
