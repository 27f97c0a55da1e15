"""Deep Image Prior (Ulyanov et al.): super-resolution and inpainting (paper Table 3, Figs 21, 22, 31).

An untrained network maps a fixed random input to one image and is fitted to
the corrupted observation only; its structure is the prior. Every training step
is one DIP iteration on the single image (batch size 1).

Shared here (:class:`DeepImagePriorTask`): the fixed input (uniform noise times
``input_scale``, a buffer drawn from ``seed``), the per-step perturbation of that
input (``reg_noise_std``), PSNR against the clean image and the best iterate.
The best iterate is the output with the highest PSNR seen at any training or
validation step (the paper's protocol, an oracle choice); ``best_*`` metrics
measure it, the plain ones measure the current (final, in test) network on the
unperturbed input.

Metrics: ``val/psnr``, ``val/best_psnr``, ``val/best_step``; ``test/psnr`` (final),
``test/best_psnr`` and ``test/<baseline>_psnr`` (bicubic upsampling for SR, the
corrupted image for inpainting). Super-resolution adds ``psnr_y`` (BT.601 luma,
``scale_factor`` border pixels cropped: the paper's reported metric, which also
picks its best iterate) next to each ``psnr`` (RGB, full image).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import XConvTask
from .image_logging import save_and_log_images
from .models.downsampler import Lanczos2Downsampler
from .psnr import psnr, psnr_y
from .rules import POSITIVE, Integer, Number
from .table_metric import Metric


class DeepImagePriorTask(XConvTask):
    """Base of the DIP tasks. Subclasses define the target, the loss, the scores and the pictures."""

    CONFIG_RULES = {"input_depth": POSITIVE, "input_scale": Number(above=0), "reg_noise_std": Number(least=0),
                    "seed": Integer()}
    monitor_metric = "val/psnr"
    monitor_mode = "max"
    selection_metric = "psnr"  # the score that picks the best iterate
    baseline_name = "baseline"

    def __init__(self, model, optimizer, scheduler=None, input_depth: int = 32, input_scale: float = 0.1,
                 reg_noise_std: float = 0.03, seed: int = 0):
        super().__init__(model, optimizer, scheduler)
        if reg_noise_std < 0:
            raise ValueError(f"task.reg_noise_std={reg_noise_std!r}: must be >= 0")
        self.input_depth, self.input_scale = input_depth, input_scale
        self.reg_noise_std, self.seed = reg_noise_std, seed
        self.register_buffer("noise", None)  # (1, input_depth, H, W), drawn at the first batch
        self.register_buffer("best_output", None)  # (1, C, H, W)
        self.best_score, self.best_step = -math.inf, -1

    # What subclasses define ---------------------------------------------------
    def target(self, batch: dict) -> torch.Tensor:
        """The clean image the output is compared with, ``(1, C, H, W)``."""
        raise NotImplementedError

    def data_loss(self, output: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, output: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {"psnr": psnr(output, self.target(batch))}

    def baseline(self, batch: dict) -> torch.Tensor:
        """What one would have without DIP, ``(1, C, H, W)``."""
        raise NotImplementedError

    def pictures(self, output: torch.Tensor, batch: dict) -> tuple[torch.Tensor, list[str]]:
        """Images to look at, ``(K, C, H, W)``, and their captions."""
        raise NotImplementedError

    # Shared DIP logic -----------------------------------------------------------
    def network_input(self, like: torch.Tensor, perturb: bool) -> torch.Tensor:
        """The fixed noise (plus fresh ``reg_noise_std`` Gaussian noise if ``perturb``)."""
        if self.noise is None:
            generator = torch.Generator().manual_seed(self.seed)
            shape = (1, self.input_depth, *like.shape[-2:])
            self.noise = (torch.rand(shape, generator=generator) * self.input_scale).to(like.device)
        if perturb and self.reg_noise_std > 0:
            return self.noise + self.reg_noise_std * torch.randn_like(self.noise)
        return self.noise

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["dip_best"] = {"score": self.best_score, "step": self.best_step}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Give the buffers drawn during training their saved shapes, so ``load_state_dict`` fills them."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        for name in ("noise", "best_output"):
            if name in state:
                setattr(self, name, torch.empty_like(state[name]))
        best = checkpoint.get("dip_best", {})
        self.best_score, self.best_step = best.get("score", -math.inf), best.get("step", -1)

    def _remember_if_best(self, output: torch.Tensor, batch: dict) -> None:
        score = float(self.scores(output, batch)[self.selection_metric])
        if score > self.best_score:
            self.best_score, self.best_step = score, self.global_step
            self.best_output = output.detach().clone()

    def training_step(self, batch, batch_idx):
        output = self.model(self.network_input(self.target(batch), perturb=True))  # (1, C, H, W)
        loss = self.data_loss(output, batch)
        self.log("train/loss", loss, prog_bar=True)
        with torch.no_grad():
            self._remember_if_best(output, batch)
        return loss

    def _final_output(self, batch) -> torch.Tensor:
        return self.model(self.network_input(self.target(batch), perturb=False))

    def _log_scores(self, prefix: str, output: torch.Tensor, batch: dict) -> None:
        for name, value in self.scores(output, batch).items():
            self.log(f"{prefix}{name}", value, prog_bar=prefix.endswith("/") and name == self.selection_metric,
                     batch_size=1)

    def validation_step(self, batch, batch_idx):
        output = self._final_output(batch)
        self._remember_if_best(output, batch)
        self._log_scores("val/", output, batch)
        self._log_scores("val/best_", self.best_output, batch)
        self.log("val/best_step", float(self.best_step), batch_size=1)
        save_and_log_images(self, "val/images", *self.pictures(output, batch))

    def test_step(self, batch, batch_idx):
        output = self._final_output(batch)
        best = self.best_output if self.best_output is not None else output
        self._log_scores("test/", output, batch)
        self._log_scores("test/best_", best, batch)
        self._log_scores(f"test/{self.baseline_name}_", self.baseline(batch), batch)
        images, captions = self.pictures(output, batch)
        save_and_log_images(self, "test/images", torch.cat([images, best]),
                            [*captions, f"best iterate (step {self.best_step})"])


class SuperResolutionTask(DeepImagePriorTask):
    """x``scale_factor`` super-resolution: loss = MSE(Lanczos2-downsampled output, LR image)."""

    CONFIG_RULES = {"scale_factor": Integer(least=2)}
    monitor_metric = "val/psnr_y"
    selection_metric = "psnr_y"
    baseline_name = "bicubic"
    table_metrics = (Metric("test/best_psnr_y", "PSNR-Y best (dB)"), Metric("test/psnr_y", "PSNR-Y last (dB)"))
    baseline_metric = Metric("test/bicubic_psnr_y", "bicubic x4 upsampling, PSNR-Y (dB)")

    def __init__(self, model, optimizer, scheduler=None, scale_factor: int = 4, **options):
        super().__init__(model, optimizer, scheduler, **options)
        self.scale_factor = scale_factor
        self.downsample = Lanczos2Downsampler(scale_factor)

    def target(self, batch):
        return batch["hr"]

    def data_loss(self, output, batch):
        return F.mse_loss(self.downsample(output), batch["lr"])

    def scores(self, output, batch):
        return {"psnr": psnr(output, batch["hr"]), "psnr_y": psnr_y(output, batch["hr"], self.scale_factor)}

    def baseline(self, batch):
        return batch["bicubic"]

    def pictures(self, output, batch):
        return (torch.cat([batch["hr"], batch["bicubic"], output]),
                ["HR (truth)", f"LR, bicubic x{self.scale_factor}", "DIP output"])


class InpaintingTask(DeepImagePriorTask):
    """Inpainting: loss = MSE on the known pixels (mask 1); PSNR against the full image."""

    baseline_name = "corrupted"
    table_metrics = (Metric("test/best_psnr", "PSNR best (dB)"), Metric("test/psnr", "PSNR last (dB)"))
    baseline_metric = Metric("test/corrupted_psnr", "corrupted input (holes black), PSNR (dB)")

    def target(self, batch):
        return batch["image"]

    def data_loss(self, output, batch):
        mask = batch["mask"]  # (1, 1, H, W), broadcast over channels
        squared = (output - batch["image"]).square() * mask  # (1, C, H, W)
        return squared.sum() / (mask.sum() * output.shape[1])

    def baseline(self, batch):
        return batch["image"] * batch["mask"]  # missing pixels black

    def pictures(self, output, batch):
        return (torch.cat([self.baseline(batch), output, batch["image"]]),
                ["corrupted (input)", "DIP output", "truth"])
