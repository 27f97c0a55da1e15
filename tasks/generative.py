"""Image generation with DDPM (the paper's MNIST diffusion, Fig. 15, 16, 36). Metric: FID.

Training minimises the epsilon-prediction loss of :mod:`xconv_harness.diffusion` on images scaled
to [-1, 1]. ``val/loss`` and ``test/loss`` are the same loss at timesteps and noise fixed
per batch (seeded by ``seed``, the stage and the batch index), so they are comparable
between runs over the same data. At test time ``fid_samples`` images are generated with
``sample_steps`` ancestral steps (fewer than ``timesteps`` = respaced chain, the CPU
substitution; equal = full DDPM) and compared with as many real test images through a
feature extractor trained on the dataset's training set (:mod:`xconv_harness.fid`): ``test/fid``, plus
that extractor's accuracy on those real images (``test/fid_extractor_acc``). The extractor is
trained with ``fid_seed``, not the run's seed, so runs of every seed share one extractor and their
FIDs compare (an extractor per seed made FID's spread over seeds mostly the extractors').
``fid_untrained=true`` also logs ``test/fid_untrained``: the FID of samples drawn from the model's
initial weights, the floor a trained model must clearly beat for its FID to mean anything. A grid of
samples goes to ``<run folder>/images`` and to wandb. ``trainer.fast_dev_run`` only checks
this path: FID of at most 16 samples drawn with at most 2 steps, and a newly trained
extractor is not cached.
"""
from __future__ import annotations


import copy

import torch
import torch.nn as nn

from . import fid
from .base import XConvTask
from .data.classification import DATASETS, NORMALISATION
from .diffusion import DDPMSchedule, respaced_timesteps
from .image_logging import save_and_log_images
from .rules import POSITIVE, SEED, Choice, Flag, Integer, Number, Text, require_int
from .table_metric import Metric, percent

STAGES = ("val", "test")
FAST_DEV_RUN_SAMPLES, FAST_DEV_RUN_STEPS = 16, 2  # fast_dev_run only checks the sampling path


class PixelRange(nn.Module):
    """The data module's normalised images ``(x - mean) / std`` back to [0, 1] or to [-1, 1]."""

    def __init__(self, dataset: str):
        super().__init__()
        if dataset not in NORMALISATION:
            raise ValueError(f"task.dataset={dataset!r}: must be one of {', '.join(NORMALISATION)}")
        mean, std = NORMALISATION[dataset]
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)  # (1, C, 1, 1)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def unit(self, images: torch.Tensor) -> torch.Tensor:
        return (images * self.std.to(images.device) + self.mean.to(images.device)).clamp(0, 1)

    def signed(self, images: torch.Tensor) -> torch.Tensor:
        return self.unit(images) * 2 - 1


class GenerativeTask(XConvTask):
    """DDPM training of ``model`` (eps_hat = model(x_t, t)) on the data module's images.

    ``dataset`` names the data module's normalisation (undone to [-1, 1]); ``timesteps``,
    ``beta_start``, ``beta_end``: the linear schedule; ``sample_steps``: respaced sampling
    steps for FID (= ``timesteps`` for full DDPM); ``fid_samples``: generated (and real)
    images for FID, drawn ``sample_batch_size`` at a time; ``fid_cache_dir``, ``fid_epochs``,
    ``fid_seed``: the feature extractor's cache, training length and seed (shared by every run
    seed); ``fid_untrained``: also score the untrained model's samples; ``grid_images``: samples
    shown; ``seed``: evaluation noise and sampling noise.
    """

    CONFIG_RULES = {
        "dataset": Choice(options=DATASETS), "timesteps": POSITIVE, "beta_start": Number(above=0, below=1),
        "beta_end": Number(above=0, below=1), "sample_steps": POSITIVE, "fid_samples": Integer(least=2),
        "sample_batch_size": POSITIVE, "fid_cache_dir": Text(), "fid_epochs": POSITIVE, "fid_seed": SEED,
        "fid_untrained": Flag(), "grid_images": POSITIVE, "seed": Integer(),
    }
    monitor_metric = "val/loss"
    monitor_mode = "min"
    table_metrics = (Metric("test/fid", "FID", digits=2, higher_is_better=False),
                     Metric("test/loss", "test loss", digits=4, higher_is_better=False),
                     percent("test/fid_extractor_acc", "FID extractor acc"))
    baseline_metric = Metric("test/fid_untrained", "samples of the untrained model (initial weights), FID",
                             higher_is_better=False)

    def __init__(self, model, optimizer, scheduler=None, *, dataset: str, timesteps: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02, sample_steps: int = 100,
                 fid_samples: int = 256, sample_batch_size: int = 256, fid_cache_dir: str = "~/.cache/xconv/fid",
                 fid_epochs: int = 1, fid_seed: int = 0, fid_untrained: bool = False, grid_images: int = 64,
                 seed: int = 0):
        super().__init__(model, optimizer, scheduler)
        self.schedule = DDPMSchedule(timesteps, beta_start, beta_end)
        respaced_timesteps(timesteps, sample_steps)  # raises for a bad sample_steps before training
        for key, value, least in (("fid_samples", fid_samples, 2), ("sample_batch_size", sample_batch_size, 1),
                                  ("grid_images", grid_images, 1), ("fid_epochs", fid_epochs, 1)):
            require_int(f"task.{key}", value, least)
        self.pixels = PixelRange(dataset)
        self.dataset, self.sample_steps, self.fid_samples = dataset, sample_steps, fid_samples
        self.sample_batch_size, self.grid_images, self.seed = sample_batch_size, grid_images, seed
        self.fid_cache_dir, self.fid_epochs, self.fid_seed = fid_cache_dir, fid_epochs, fid_seed
        # The initial weights (seeded, so a resumed run rebuilds the same ones), kept only to score them.
        self._initial_weights = ({name: value.detach().clone() for name, value in model.state_dict().items()}
                                 if fid_untrained else None)
        self._real: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    # Training and the fixed-noise evaluation loss ---------------------------------------------
    def training_step(self, batch, batch_idx):
        x0 = self.pixels.signed(batch[0])
        t = self.schedule.random_timesteps(x0.shape[0], x0.device)
        loss = self.schedule.loss(self.model, x0, t, torch.randn_like(x0))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _fixed_loss(self, x0: torch.Tensor, stage: str, batch_idx: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed((self.seed * len(STAGES) + STAGES.index(stage)) * 100_003
                                                  + batch_idx)
        t = self.schedule.random_timesteps(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        return self.schedule.loss(self.model, x0, t, noise)

    def validation_step(self, batch, batch_idx):
        x0 = self.pixels.signed(batch[0])
        self.log("val/loss", self._fixed_loss(x0, "val", batch_idx), prog_bar=True, batch_size=x0.shape[0])

    def on_test_epoch_start(self):
        self._real, self._labels = [], []

    def test_step(self, batch, batch_idx):
        images, labels = batch
        x0 = self.pixels.signed(images)
        self.log("test/loss", self._fixed_loss(x0, "test", batch_idx), batch_size=x0.shape[0])
        wanted = self.fid_samples - sum(len(real) for real in self._real)
        if wanted > 0:  # the first fid_samples test images are FID's real set
            self._real.append(self.pixels.unit(images[:wanted]))
            self._labels.append(labels[:wanted])

    # Sampling and FID -------------------------------------------------------------------------
    def generate(self, count: int, shape: tuple[int, int, int], steps: int | None = None,
                 model: nn.Module | None = None) -> torch.Tensor:
        """``count`` samples in [0, 1] (N, C, H, W) of ``shape`` (C, H, W) from ``model`` (default: the
        task's), reproducible for a model and ``seed``."""
        model = self.model if model is None else model
        generator = torch.Generator().manual_seed(self.seed)
        chunks = []
        for start in range(0, count, self.sample_batch_size):
            size = min(self.sample_batch_size, count - start)
            x = self.schedule.sample(model, (size, *shape), steps or self.sample_steps, generator)
            chunks.append((x + 1) / 2)
        return torch.cat(chunks).clamp(0, 1)

    def _feature_net(self, in_channels: int, image_size: int) -> fid.FeatureNet:
        """The extractor trained with ``fid_seed`` on the dataset's whole training set (the same for
        every run seed), from the cache when there."""
        return fid.extractor_for(self.trainer.datamodule, cache_dir=self.fid_cache_dir, dataset=self.dataset,
                                 seed=self.fid_seed, epochs=self.fid_epochs, in_channels=in_channels,
                                 image_size=image_size, device=self.device,
                                 save=not self.trainer.fast_dev_run)  # fast_dev_run leaves no files behind

    @staticmethod
    def _fid(feature_net: fid.FeatureNet, real: torch.Tensor, samples: torch.Tensor) -> float:
        distance = fid.FrechetDistance(feature_net)
        distance.update(real, real=True)
        distance.update(samples, real=False)
        return distance.compute()

    def on_test_epoch_end(self):
        if not self._real:
            raise RuntimeError("task=generative: FID needs real test images, but no test batch ran "
                               "(trainer.limit_test_batches=0?)")
        real, labels = torch.cat(self._real), torch.cat(self._labels)
        count, steps = len(real), self.sample_steps
        if self.trainer.fast_dev_run:
            count, steps = min(count, FAST_DEV_RUN_SAMPLES), min(steps, FAST_DEV_RUN_STEPS)
            real, labels = real[:count], labels[:count]
        samples = self.generate(count, tuple(real.shape[1:]), steps)
        feature_net = self._feature_net(real.shape[1], real.shape[-1])
        self.log("test/fid", self._fid(feature_net, real, samples))
        self.log("test/fid_extractor_acc", fid.extractor_accuracy(feature_net, real, labels))
        if self._initial_weights is not None:
            untrained = copy.deepcopy(self.model)
            untrained.load_state_dict(self._initial_weights)
            self.log("test/fid_untrained", self._fid(feature_net, real, self.generate(count, tuple(real.shape[1:]),
                                                                                      steps, untrained)))
        shown = samples[:self.grid_images]
        save_and_log_images(self, "test/samples", shown,
                            [f"DDPM sample {i}, {steps} steps" for i in range(len(shown))])
