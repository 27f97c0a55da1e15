"""Statistics for testing an unbiased estimator against its exact value.

Given M i.i.d. estimates (rows of ``samples``, P numbers each) of a vector
whose exact value is ``exact``, ``T = M * ||mean - exact||^2`` has mean
``tr(Sigma)`` and, for a near-Gaussian mean (CLT), standard deviation
``sqrt(2 tr(Sigma^2))``, both estimated from the samples. A biased estimator
adds ``M * ||bias||^2`` to T, which grows with M.
"""
from __future__ import annotations

import math

import torch


def bias_statistic(samples: torch.Tensor, exact: torch.Tensor) -> tuple[float, float, float]:
    """Return ``(T, mean of T, std of T)`` under the hypothesis "unbiased"."""
    samples = samples.double().flatten(1)  # (M, P)
    exact = exact.double().flatten()
    count = samples.shape[0]
    centered = samples - samples.mean(0)
    trace_sigma = centered.pow(2).sum().item() / (count - 1)
    gram = centered @ centered.T  # (M, M): tr(Sigma^2) = ||C C^T||_F^2 / (M-1)^2
    trace_sigma_sq = gram.pow(2).sum().item() / (count - 1) ** 2
    statistic = count * (samples.mean(0) - exact).pow(2).sum().item()
    return statistic, trace_sigma, math.sqrt(2 * trace_sigma_sq)


def assert_unbiased(samples: torch.Tensor, exact: torch.Tensor, sigmas: float = 6.0) -> None:
    statistic, mean, std = bias_statistic(samples, exact)
    assert statistic <= mean + sigmas * std, (
        f"mean of {samples.shape[0]} estimates is off the exact value: "
        f"M*||mean-exact||^2 = {statistic:.4g}, expected {mean:.4g} +- {std:.4g}")


def fitted_slope(x, y, y_std):
    """Weighted least-squares slope of y on x and its standard error."""
    x, y, w = (torch.as_tensor(v, dtype=torch.float64) for v in (x, y, 1 / torch.as_tensor(y_std) ** 2))
    x_bar = (w * x).sum() / w.sum()
    y_bar = (w * y).sum() / w.sum()
    sxx = (w * (x - x_bar) ** 2).sum()
    slope = (w * (x - x_bar) * (y - y_bar)).sum() / sxx
    return slope.item(), (1 / sxx).sqrt().item()
