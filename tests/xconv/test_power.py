"""The unbiasedness tests have power: their statistic rejects deliberately biased estimators.

Same statistic (``stats.bias_statistic``), geometries, probe counts, estimate
counts, data and seeds as ``test_estimator.py``'s unbiasedness tests, which
must pass on the same estimates; each geometry and built-in probe kind must
reject

* a scale error: the whole estimate times 0.9, and times 1.1;
* a bias confined to one kernel dimension: the last tap of the last kernel
  dimension (of size > 1) times 1.1, the rest unbiased;
* a bias confined to one padding mode (geometries that pad their input; one
  probe kind per sketch layout, "channel" and "gaussian"): the estimates of a
  layer padding its probes in the wrong mode (``estimates.WRONG_PADDING``:
  zeros as circular, the other modes as zeros).

A scale or tap error confined to one layer class (say non-transposed Conv3d
only) is one of these in every geometry of that class. The tests are marked
``power`` and run in the default suite after ``test_estimator.py``, whose
estimates they reuse (``estimates.weight_gradient_estimates`` is cached); only
the wrong-padding estimates are new draws, hence one probe kind per layout.
``pytest -m power`` runs them alone.
"""
from typing import Callable

import pytest
import torch

import xconv

from estimates import weight_gradient_estimates, wrong_padding_estimates
from geometries import GEOMETRIES
from single_thread import one_torch_thread  # noqa: F401  (autouse: tiny tensors, one thread)
from stats import bias_statistic, threshold, z_scores


def last_tap_times(factor: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Estimates ``(M, C, C', *kernel)`` -> the same with the last tap of the last kernel dimension
    of size > 1 multiplied by ``factor``."""
    def biased(estimates):
        kernel = estimates.shape[3:]
        dim = max(d for d, size in enumerate(kernel) if size > 1)
        estimates = estimates.clone()
        estimates.select(3 + dim, kernel[dim] - 1).mul_(factor)
        return estimates
    return biased


BIASES = {
    "scale 0.9": lambda estimates: 0.9 * estimates,
    "scale 1.1": lambda estimates: 1.1 * estimates,
    "last tap x1.1": last_tap_times(1.1),
}
PADDED = [name for name, geometry in GEOMETRIES.items() if geometry.padding_mode is not None]


def escaped(biased: dict[str, torch.Tensor], exact: torch.Tensor) -> dict[str, str]:
    """The biased estimate sets the statistic does not reject, with the statistic's verdict."""
    tests = {bias: bias_statistic(estimates, exact) for bias, estimates in biased.items()}
    return {bias: f"|z| = {test.statistic:.3g} <= {test.threshold:.3g}" for bias, test in tests.items()
            if not test.rejected}


@pytest.mark.power
@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
@pytest.mark.parametrize("name", GEOMETRIES)
def test_scale_and_one_tap_errors_are_rejected(name, probe):
    exact, estimates = weight_gradient_estimates(name, probe)
    assert not bias_statistic(estimates, exact["weight"]).rejected  # the unbiased estimates pass
    assert escaped({bias: make(estimates) for bias, make in BIASES.items()}, exact["weight"]) == {}


@pytest.mark.power
@pytest.mark.parametrize("probe", ["channel", "gaussian"])
@pytest.mark.parametrize("name", PADDED)
def test_probes_padded_in_the_wrong_mode_are_rejected(name, probe):
    exact, _ = weight_gradient_estimates(name, probe)
    assert escaped({"wrong padding": wrong_padding_estimates(name, probe)}, exact["weight"]) == {}


# The statistic's false-rejection side ---------------------------------------------------------------

def test_the_threshold_is_the_student_t_quantile():
    """Against scipy.stats.t.isf(rate / (2 J), M - 1), computed once with SciPy 1.17."""
    assert threshold(100, 128) == pytest.approx(6.135362796358465, abs=1e-4)
    assert threshold(300, 200) == pytest.approx(6.192296396471822, abs=1e-4)
    assert threshold(1, 128, rate=0.05) == pytest.approx(1.9788195347028543, abs=1e-6)


def test_z_scores_of_unbiased_gaussian_estimates_exceed_the_threshold_at_its_rate():
    """4000 independent coordinates of 128 Gaussian estimates each: the share of |z| above the
    5% threshold is 5% (binomial: 200 +- 13.8 of 4000; bound 6 sd)."""
    generator = torch.Generator().manual_seed(0)
    count, coordinates = 128, 4000
    samples = 3.0 + 0.5 * torch.randn(count, coordinates, generator=generator, dtype=torch.float64)
    z = z_scores(samples, torch.full((coordinates,), 3.0, dtype=torch.float64),
                 torch.eye(coordinates, dtype=torch.float64))
    exceeded = int((z.abs() > threshold(1, count, rate=0.05)).sum())
    assert abs(exceeded - 200) <= 6 * 13.8, exceeded
