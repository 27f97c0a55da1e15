"""Images a person would rather look at (samples, masks): saved as PNG grids and sent to wandb.

Logger-agnostic: every run writes ``<run folder>/images/<key>_step<global_step>.png``;
each ``WandbLogger`` among the module's loggers also gets the images with captions.
"""
from __future__ import annotations

from pathlib import Path

import torch


def save_and_log_images(module, key: str, images: torch.Tensor, captions: list[str]) -> Path:
    """Save ``images`` (N, C, H, W) with values in [0, 1] as one grid PNG and log them to wandb.

    ``module`` is a LightningModule attached to a trainer; ``key`` names the images
    (e.g. ``"val/masks"``; "/" becomes "_" in the file name). Returns the PNG path.
    """
    from lightning.pytorch.loggers import WandbLogger
    from torchvision.utils import save_image

    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if len(captions) != images.shape[0]:
        raise ValueError(f"captions: need one per image ({images.shape[0]}), got {len(captions)}")
    images = images.detach().float().clamp(0, 1).cpu()
    step = module.trainer.global_step
    path = Path(module.trainer.default_root_dir) / "images" / f"{key.replace('/', '_')}_step{step}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path))
    # wandb (0.30 here) casts float pixels to uint8 without scaling (all black): hand it 0..255 bytes.
    pixels = (images * 255).round().to(torch.uint8)  # (N, C, H, W)
    for logger in module.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=list(pixels), caption=list(captions), step=step)
    return path
