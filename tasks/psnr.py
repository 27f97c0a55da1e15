"""Peak signal-to-noise ratio, on RGB or on the luma (Y) channel as super-resolution papers report it."""
from __future__ import annotations

import torch

# ITU-R BT.601 luma of RGB in [0, 1], scaled to [16, 235] / 255 (MATLAB's rgb2ycbcr, the usual SR protocol).
BT601_WEIGHTS = (65.481, 128.553, 24.966)


def psnr(prediction: torch.Tensor, target: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """``10 log10(peak^2 / MSE)`` over all elements, in dB (``inf`` for identical images)."""
    if prediction.shape != target.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(prediction.shape)} vs {tuple(target.shape)}")
    mse = (prediction.double() - target.double()).square().mean()
    return (10 * torch.log10(peak ** 2 / mse)).float()


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB in [0, 1] -> ``(N, 1, H, W)`` BT.601 luma in [16/255, 235/255]."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"rgb_to_y: need (N, 3, H, W), got {tuple(image.shape)}")
    weights = image.new_tensor(BT601_WEIGHTS).view(1, 3, 1, 1)
    return ((image * weights).sum(dim=1, keepdim=True) + 16.0) / 255.0  # (N, 1, H, W)


def shave(image: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels on each side of the last two axes."""
    if border == 0:
        return image
    return image[..., border:-border, border:-border]


def psnr_y(prediction: torch.Tensor, target: torch.Tensor, border: int = 0) -> torch.Tensor:
    """PSNR of the BT.601 luma with ``border`` pixels cropped (SR: border = scale factor)."""
    return psnr(shave(rgb_to_y(prediction), border), shave(rgb_to_y(target), border))
