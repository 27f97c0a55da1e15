"""DDPM (Ho et al. 2020) in one small module: noise schedule, training loss, ancestral sampling.

* Linear beta schedule over ``timesteps`` steps (the paper: 1000 steps, 1e-4 to 0.02).
* Training: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with ``t`` uniform, loss
  ``MSE(eps_hat, eps)`` (epsilon prediction).
* Sampling: ancestral steps through the posterior ``q(x_prev | x_t, x0_hat)`` with
  ``x0_hat`` from the predicted noise, clipped to [-1, 1], and the posterior variance
  (diffusers' ``DDPMScheduler`` defaults: ``clip_sample=True``, ``variance_type="fixed_small"``).
  ``steps < timesteps`` respaces the chain onto evenly spaced timesteps
  (Nichol & Dhariwal 2021; the same chain as DDIM with eta = 1): the betas are recomputed
  from ``abar`` at the kept timesteps, so ``steps == timesteps`` is exactly full DDPM.
  Fewer steps is this harness's CPU substitution for evaluating samples.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .rules import require_int


def respaced_timesteps(timesteps: int, steps: int) -> torch.Tensor:
    """``steps`` increasing, evenly spaced timesteps ending at ``timesteps - 1`` (all of them when equal)."""
    if not isinstance(steps, int) or not 1 <= steps <= timesteps:
        raise ValueError(f"task.sample_steps={steps!r}: must be an integer in 1..{timesteps} "
                         f"(task.timesteps; equal = full DDPM)")
    # From the last timestep down, so that even one step starts from pure noise at t = timesteps - 1.
    return torch.linspace(timesteps - 1, 0, steps, dtype=torch.float64).round().long().flip(0)


class DDPMSchedule(nn.Module):
    """The noise schedule as buffers (they follow the task to its device); no parameters."""

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        require_int("task.timesteps", timesteps, 1)
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"task.beta_start={beta_start!r}, task.beta_end={beta_end!r}: need "
                             f"0 < beta_start <= beta_end < 1")
        self.timesteps = timesteps
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, dim=0).float(), persistent=False)

    def _at(self, values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return values[t][:, None, None, None]  # (B,) -> (B, 1, 1, 1), broadcast over images

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A draw of ``x_t ~ q(x_t | x0)`` with the given noise."""
        abar = self._at(self.alphas_cumprod, t)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def loss(self, model: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The epsilon-prediction loss ``MSE(model(x_t, t), noise)``."""
        return F.mse_loss(model(self.q_sample(x0, t, noise), t), noise)

    def random_timesteps(self, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, self.timesteps, (batch,), generator=generator).to(device)

    @torch.no_grad()
    def sample(self, model: nn.Module, shape: tuple[int, ...], steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling from pure noise with ``steps`` (default all) timesteps; values in [-1, 1].

        Noise is drawn on the CPU from ``generator`` (reproducible on any device).
        """
        device = self.alphas_cumprod.device
        kept = respaced_timesteps(self.timesteps, steps or self.timesteps).to(device)
        abar = self.alphas_cumprod[kept]
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        betas = 1 - abar / abar_prev  # the respaced chain's betas
        x = torch.randn(shape, generator=generator).to(device)
        for index in reversed(range(len(kept))):
            t = kept[index].expand(shape[0])
            eps = model(x, t)
            x0 = ((x - (1 - abar[index]).sqrt() * eps) / abar[index].sqrt()).clamp(-1, 1)
            # Posterior q(x_prev | x_t, x0): mean = c0 * x0 + ct * x_t, variance beta * (1 - abar_prev) / (1 - abar).
            c0 = abar_prev[index].sqrt() * betas[index] / (1 - abar[index])
            ct = (1 - betas[index]).sqrt() * (1 - abar_prev[index]) / (1 - abar[index])
            x = c0 * x0 + ct * x
            if index > 0:
                variance = betas[index] * (1 - abar_prev[index]) / (1 - abar[index])
                x = x + variance.sqrt() * torch.randn(shape, generator=generator).to(device)
        return x
