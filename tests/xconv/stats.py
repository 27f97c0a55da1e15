"""Statistics for testing an unbiased estimator against its exact value.

Given M i.i.d. estimates (rows of ``samples``) of a tensor whose exact value is
``exact``, the test looks at J linear functionals ``w_j`` of the estimate, fixed
by ``exact`` alone (:func:`functionals`):

* every coordinate (a bias in one weight);
* ``exact`` itself (a scale error of the whole estimate);
* ``exact`` restricted to one tap of one kernel dimension (a bias confined to
  one kernel dimension, or to the taps that reach the padding), to one
  output channel and to one input channel (weight axes 0 and 1).

For each, ``z_j = (mean_j - <w_j, exact>) / (std_j / sqrt(M))`` with ``mean_j``
and ``std_j`` the mean and standard deviation of ``<w_j, estimate>`` over the M
estimates: a Student t statistic with M - 1 degrees of freedom when the estimate
is unbiased (and the mean near Gaussian: each estimate of XConv is already a mean
over r probes). The statistic is ``max_j |z_j|``; the threshold puts
``FALSE_REJECTION / J`` in each functional's two tails, so by the union
(Bonferroni) bound an unbiased estimator is rejected with probability at most
``FALSE_REJECTION`` (1e-6), whatever the correlations between functionals. A
bias ``b`` moves ``z_j`` by ``sqrt(M) <w_j, b> / std_j``: it grows with M.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import torch

#: Probability that :func:`assert_unbiased` rejects an unbiased estimator (union bound, t tails).
FALSE_REJECTION = 1e-6
# z_j of an estimate with no spread (exact up to rounding) is measured against this relative rounding.
_ROUNDING = 1e-9


class BiasTest(NamedTuple):
    """``max_j |z_j|``, the threshold it must not exceed, and the functional where it is largest."""

    statistic: float
    threshold: float
    worst: str

    @property
    def rejected(self) -> bool:
        return self.statistic > self.threshold


def functionals(exact: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """The rows ``w_j`` (a ``(J, exact.numel())`` matrix) and their names."""
    exact = exact.double()
    rows = [torch.eye(exact.numel(), dtype=torch.float64)]
    names = [f"weight{list(index)}" for index in itertools.product(*map(range, exact.shape))]
    masks = [("all", torch.ones_like(exact, dtype=torch.bool))] + _slice_masks(exact.shape)
    rows.append(torch.stack([(exact * mask).flatten() for _, mask in masks]))
    names += [f"exact over {name}" for name, _ in masks]
    return torch.cat(rows), names


def _slice_masks(shape: torch.Size) -> list[tuple[str, torch.Tensor]]:
    """One mask per index of each axis: axes 0 and 1 (channels), then each kernel dimension's taps."""
    masks = []
    for axis, size in enumerate(shape):
        label = f"channel axis {axis}" if axis < 2 else f"kernel dim {axis - 2}"
        for index in range(size if size > 1 else 0):
            mask = torch.zeros(shape, dtype=torch.bool)
            mask.select(axis, index).fill_(True)
            masks.append((f"{label} index {index}", mask))
    return masks


def z_scores(samples: torch.Tensor, exact: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``z_j`` of each functional (row of ``rows``) over the estimates in ``samples``."""
    samples = samples.double().flatten(1)  # (M, P)
    exact = exact.double().flatten()
    values = samples @ rows.T  # (M, J)
    count = values.shape[0]
    rounding = _ROUNDING * rows.norm(dim=1) * exact.norm()
    spread = (values.var(0) / count + rounding ** 2).sqrt()
    return (values.mean(0) - rows @ exact) / spread


def threshold(functional_count: int, sample_count: int, rate: float = FALSE_REJECTION) -> float:
    """``t`` with ``P(|T| > t) = rate / functional_count`` for Student's T with ``sample_count - 1``
    degrees of freedom (Cornish-Fisher expansion of the normal quantile, Abramowitz & Stegun 26.7.5)."""
    z = -torch.special.ndtri(torch.tensor(rate / (2 * functional_count), dtype=torch.float64)).item()
    nu = sample_count - 1
    return (z + (z ** 3 + z) / (4 * nu) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * nu ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * nu ** 3))


def bias_statistic(samples: torch.Tensor, exact: torch.Tensor) -> BiasTest:
    """The test of "the estimates in ``samples`` have mean ``exact``" (see the module docstring)."""
    rows, names = functionals(exact)
    z = z_scores(samples, exact, rows).abs()
    worst = int(z.argmax())
    return BiasTest(z[worst].item(), threshold(len(names), samples.shape[0]), names[worst])


def assert_unbiased(samples: torch.Tensor, exact: torch.Tensor) -> None:
    test = bias_statistic(samples, exact)
    assert not test.rejected, (
        f"mean of {samples.shape[0]} estimates is off the exact value: |z| = {test.statistic:.3g} at "
        f"{test.worst}, above the threshold {test.threshold:.3g} (false-rejection rate {FALSE_REJECTION:g})")


def fitted_slope(x, y, y_std):
    """Weighted least-squares slope of y on x and its standard error."""
    x, y, w = (torch.as_tensor(v, dtype=torch.float64) for v in (x, y, 1 / torch.as_tensor(y_std) ** 2))
    x_bar = (w * x).sum() / w.sum()
    y_bar = (w * y).sum() / w.sum()
    sxx = (w * (x - x_bar) ** 2).sum()
    slope = (w * (x - x_bar) * (y - y_bar)).sum() / sxx
    return slope.item(), (1 / sxx).sqrt().item()
