"""task=generative (DDPM): the CLI end to end, the DDPM math, the U-Net, the FID extractor cache."""
import math

import pytest
import torch

from cli_runs import read_summary, run_cli
from xconv_harness import fid
from xconv_harness.data.classification import NORMALISATION, load_digits
from xconv_harness.diffusion import DDPMSchedule, respaced_timesteps
from xconv_harness.base import warmup_cosine
from xconv_harness.generative import PixelRange
from xconv_harness.models.unet import DiffusionUNet

SMALL = ["task=generative", "data=digits", "logger=none", "data.train_subset=256", "model.block_channels=[8,16]",
         "model.attention_levels=[1]", "trainer.enable_progress_bar=false"]
TWO_STEPS = [*SMALL, "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
             "data.batch_size=16", "data.eval_batch_size=32", "task.fid_samples=16", "task.sample_steps=2"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``cli_run(probes)``: run dir and summary of a 2-step CLI run on digits (each probes value once)."""
    folder, done = tmp_path_factory.mktemp("generative"), {}

    def run(probes: int):
        if probes not in done:
            run_dir = folder / f"run{probes}"
            result = run_cli(run_dir, *TWO_STEPS, f"probes={probes}", f"task.fid_cache_dir={folder / 'fid'}")
            assert result.returncode == 0, result.stderr[-3000:]
            done[probes] = run_dir, read_summary(run_dir)
        return done[probes]

    return run


@pytest.mark.parametrize("probes", [0, 16])
def test_cli_run_writes_fid_losses_memory_and_samples(cli_run, probes):
    run_dir, summary = cli_run(probes)
    assert summary["task"] == "generative" and summary["data"] == "digits" and summary["model"] == "ddpm_unet"
    for key in ("val/loss", "test/loss", "test/fid", "test/fid_extractor_acc"):
        assert math.isfinite(summary["metrics"][key]), key
    assert summary["metrics"]["test/fid"] >= 0
    assert summary["train_steps"] == 2
    assert summary["activation_memory"]["saved_bytes"] > 0
    assert summary["fake_peak"]["bytes"] > summary["fake_peak"]["by_category"]["parameters"]  # one fake step ran
    assert summary["time"]["median_step_s"] > 0
    assert bool(summary["gradient"]["xconv_layers"]) == (probes > 0)
    assert (run_dir / "images" / "test_samples_step2.png").exists()


def test_xconv_saves_less_activation_memory_than_exact(cli_run):
    saved = {probes: cli_run(probes)[1]["activation_memory"]["saved_bytes"] for probes in (0, 16)}
    assert saved[16] < saved[0]


def test_fast_dev_run_works_and_leaves_no_extractor_file(tmp_path):
    result = run_cli(tmp_path / "run", *SMALL, "probes=4", "trainer.fast_dev_run=true",
                     f"task.fid_cache_dir={tmp_path / 'fid'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert math.isfinite(read_summary(tmp_path / "run")["metrics"]["test/fid"])
    assert not (tmp_path / "fid").exists()


@pytest.mark.slow
def test_runs_of_every_seed_share_one_extractor_and_score_the_untrained_model(tmp_path):
    """FIDs compare across seeds only through one extractor (task.fid_seed, not seed); fid_untrained
    scores the initial weights' samples, which differ from the trained model's."""
    for seed in (0, 1):
        result = run_cli(tmp_path / f"run{seed}", *TWO_STEPS, f"seed={seed}", "task.fid_untrained=true",
                         f"task.fid_cache_dir={tmp_path / 'fid'}")
        assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "fid").iterdir())) == 1
    metrics = read_summary(tmp_path / "run1")["metrics"]
    assert math.isfinite(metrics["test/fid_untrained"]) and metrics["test/fid_untrained"] != metrics["test/fid"]


# The DDPM math -----------------------------------------------------------------------------------
def test_linear_schedule_alphas_cumprod_decrease_from_one_minus_beta_start():
    abar = DDPMSchedule(1000, 1e-4, 0.02).alphas_cumprod
    assert abar.shape == (1000,)
    assert (abar[1:] < abar[:-1]).all() and (abar > 0).all()
    assert abar[0].item() == pytest.approx(1 - 1e-4, rel=1e-6)
    assert abar[-1].item() < 1e-4  # x_T is essentially pure noise


def test_q_sample_at_t0_is_close_to_x0_and_at_t_max_close_to_noise():
    schedule = DDPMSchedule()
    x0, noise = torch.rand(8, 1, 28, 28) * 2 - 1, torch.randn(8, 1, 28, 28)
    first = schedule.q_sample(x0, torch.zeros(8, dtype=torch.long), noise)
    assert (first - x0).abs().max() < 0.011 * noise.abs().max()  # sqrt(1 - abar_0) = 0.01
    last = schedule.q_sample(x0, torch.full((8,), 999), noise)
    assert torch.allclose(last, noise, atol=0.01)


def test_respaced_timesteps_full_strided_and_bad_values():
    assert torch.equal(respaced_timesteps(1000, 1000), torch.arange(1000))
    steps = respaced_timesteps(1000, 50)
    assert len(steps) == 50 and steps[-1] == 999 and steps[0] == 0 and (steps[1:] > steps[:-1]).all()
    assert respaced_timesteps(1000, 1).tolist() == [999]
    for bad in (0, 1001, 2.5):
        with pytest.raises(ValueError, match="task.sample_steps"):
            respaced_timesteps(1000, bad)


def gaussian_chain_std(schedule: DDPMSchedule, steps: int, s: float) -> float:
    """Exact std of the sampler's output for x0 ~ N(0, s^2) and the optimal predictor: every step is
    linear-Gaussian, x_prev = (c0 * a_t + ct) x_t + sigma z with E[x0 | x_t] = a_t x_t."""
    abar = schedule.alphas_cumprod.double()[respaced_timesteps(schedule.timesteps, steps)]
    variance = 1.0
    for i in reversed(range(steps)):
        prev = abar[i - 1] if i > 0 else abar.new_tensor(1.0)
        beta = 1 - abar[i] / prev
        a = abar[i].sqrt() * s ** 2 / (abar[i] * s ** 2 + 1 - abar[i])
        c0, ct = prev.sqrt() * beta / (1 - abar[i]), (1 - beta).sqrt() * (1 - prev) / (1 - abar[i])
        variance = (c0 * a + ct) ** 2 * variance + beta * (1 - prev) / (1 - abar[i])
    return variance.sqrt().item()


@pytest.mark.parametrize("steps", [1000, 100, 10])
def test_sampling_with_the_exact_noise_predictor_matches_the_gaussian_chain(steps):
    """For x0 ~ N(0, s^2) the optimal predictor is E[eps | x_t] = sqrt(1-abar) x_t / (abar s^2 + 1 - abar).
    Full DDPM then gives samples of std ~ s; respaced chains give the (smaller) std of their exact
    linear-Gaussian recursion (the plug-in x0 ignores Var[x0 | x_t])."""
    schedule, s = DDPMSchedule(), 0.3

    def oracle(x, t):
        abar = schedule.alphas_cumprod[t][:, None, None, None]
        return (1 - abar).sqrt() * x / (abar * s ** 2 + 1 - abar)

    samples = schedule.sample(oracle, (8192, 1, 1, 1), steps, torch.Generator().manual_seed(0))
    assert samples.mean().abs() < 0.02
    assert samples.std().item() == pytest.approx(gaussian_chain_std(schedule, steps, s), rel=0.03)
    if steps == 1000:
        assert samples.std().item() == pytest.approx(s, rel=0.03)


def test_loss_is_mse_of_the_noise_prediction():
    schedule = DDPMSchedule()
    x0, noise, t = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 500, 999])
    perfect = lambda x, steps: noise  # noqa: E731
    assert schedule.loss(perfect, x0, t, noise).item() == 0
    assert schedule.loss(lambda x, steps: torch.zeros_like(x), x0, t, noise).item() == pytest.approx(
        noise.pow(2).mean().item())


def test_pixel_range_undoes_the_data_normalisation():
    mean, std = NORMALISATION["fashion_mnist"]
    images = torch.rand(2, 1, 4, 4)
    pixels = PixelRange("fashion_mnist")
    normalised = (images - mean[0]) / std[0]
    assert torch.allclose(pixels.unit(normalised), images, atol=1e-6)
    assert torch.allclose(pixels.signed(normalised), images * 2 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="task.dataset"):
        PixelRange("imagenet")


def test_warmup_cosine_rises_linearly_then_anneals_to_the_floor():
    factors = [warmup_cosine(step, warmup_steps=10, total_steps=110, floor=0.1) for step in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in zip(factors[9:], factors[10:]))
    assert factors[110] == pytest.approx(0.1)


# The U-Net ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,widths,attention", [(28, (16, 32, 64), (2,)), (28, (8, 16), (0, 1)), (9, (8, 16, 16), ())])
def test_unet_predicts_noise_of_the_input_shape(size, widths, attention):
    model = DiffusionUNet(in_channels=1, block_channels=widths, layers_per_block=2, attention_levels=attention,
                          norm_groups=8)
    x = torch.randn(2, 1, size, size)
    out = model(x, torch.tensor([0, 999]))
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unet_time_conditioning_changes_the_output():
    model = DiffusionUNet(block_channels=(8, 16), attention_levels=(1,), norm_groups=8)
    x = torch.randn(1, 1, 28, 28)
    assert not torch.allclose(model(x, torch.tensor([0])), model(x, torch.tensor([900])))


def test_unet_rejects_bad_settings_naming_the_key():
    with pytest.raises(ValueError, match="model.attention_levels"):
        DiffusionUNet(block_channels=(16, 32), attention_levels=(2,), norm_groups=8)
    with pytest.raises(ValueError, match="model.norm_groups"):
        DiffusionUNet(block_channels=(16, 24), attention_levels=(), norm_groups=16)
    with pytest.raises(ValueError, match="model.layers_per_block"):
        DiffusionUNet(layers_per_block=0, norm_groups=8)
    with pytest.raises(ValueError, match="model.block_channels"):
        DiffusionUNet(block_channels=(), norm_groups=8)


# The FID extractor -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    (train_x, train_y), (test_x, test_y) = load_digits()
    return train_x.float() / 255, train_y, test_x.float() / 255, test_y


@pytest.fixture(scope="module")
def cached(tmp_path_factory, digits):
    """An extractor trained on digits through the cache: (path, calls to load_data, net, mtime)."""
    train_x, train_y = digits[:2]
    calls = []

    def load_data():
        calls.append(1)
        return train_x, train_y

    path = fid.cache_path(tmp_path_factory.mktemp("fid") / "cache", dataset="digits", num_images=len(train_y),
                          seed=0, fingerprint=fid.fingerprint(train_x[:16]))
    net = fid.load_or_train(path, load_data, in_channels=1, image_size=28, epochs=2)
    return path, load_data, calls, net, path.stat().st_mtime_ns


def test_feature_extractor_is_trained_once_then_loaded_from_the_cache(cached, digits):
    path, load_data, calls, first, written = cached
    assert calls == [1]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left behind
    second = fid.load_or_train(path, load_data, in_channels=1, image_size=28, epochs=2)
    assert calls == [1] and path.stat().st_mtime_ns == written  # loaded, not retrained
    test_x, test_y = digits[2:]
    assert torch.equal(first(test_x[:8]), second(test_x[:8]))
    assert second(test_x[:8]).shape == (8, fid.FeatureNet.num_features)
    assert fid.extractor_accuracy(second, test_x, test_y) > 0.5  # the features know the digits


def test_training_does_not_touch_the_callers_random_state(digits):
    state = torch.get_rng_state()
    fid.train_feature_net(digits[0][:64], digits[1][:64], batch_size=32)
    assert torch.equal(torch.get_rng_state(), state)


def test_cache_key_tells_datasets_sizes_seeds_and_contents_apart(tmp_path, digits):
    train_x = digits[0]
    key = dict(dataset="digits", num_images=100, seed=0, fingerprint=fid.fingerprint(train_x[:16]))
    paths = {fid.cache_path(tmp_path, **key),
             fid.cache_path(tmp_path, **{**key, "dataset": "mnist"}),
             fid.cache_path(tmp_path, **{**key, "num_images": 101}),
             fid.cache_path(tmp_path, **{**key, "seed": 1}),
             fid.cache_path(tmp_path, **{**key, "fingerprint": fid.fingerprint(train_x[16:32])})}
    assert len(paths) == 5 and all(fid.ARCHITECTURE in path.name for path in paths)


def test_fid_is_small_between_real_halves_and_large_against_noise(cached, digits):
    net, test_x = cached[3], digits[2]

    def distance(a, b):
        metric = fid.FrechetDistance(net)
        metric.update(a, real=True)
        metric.update(b, real=False)
        return metric.compute()

    same = distance(test_x[:180], test_x[180:360])
    noise = distance(test_x[:180], torch.rand(180, 1, 28, 28))
    assert 0 <= same < noise / 10


def test_unet_activations_are_modules_the_compact_savers_swap():
    """Every tensor the U-Net keeps for backward is kept by a layer module (none by a block's own
    functional code), so ``activations="compact"`` reaches its SiLUs: none stays a torch SiLU."""
    import xconv
    from xconv.memory import saved_bytes

    model = xconv.convert(DiffusionUNet(block_channels=(8, 16), attention_levels=(1,), norm_groups=8),
                          probes=4, activations="compact")
    kept = saved_bytes(model, torch.randn(2, 1, 16, 16), torch.tensor([3, 700])).bytes_by_kind
    assert not {"ResidualBlock", "DiffusionUNet", "SiLU", "GroupNorm"} & set(kept), kept
    assert kept["CompactSiLU"] > 0
