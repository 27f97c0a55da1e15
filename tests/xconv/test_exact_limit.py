"""The estimator's deterministic limit: a second moment of exactly I gives the exact weight gradient.

The estimate ``(1/r) sum_p dW(pad(e_p), L_p)`` is linear in the probes' second
moment ``(1/r) sum_p e_p e_p^T``. ``r = D`` probes, ``sqrt(D)`` times each standard
basis vector once (the coordinate kinds of ``coordinate_probes.py``), make it I
exactly, so the estimate must be the plain layer's weight gradient up to
rounding (float64), in every geometry of ``geometries.py`` and both sketch
layouts: a bias in any stride, dilation, group, tap, padding mode or scale shows
here without statistics. ``r = D`` orthonormal probes of the built-in
``orthogonal`` kind are exact the same way.
"""
import math

import pytest
import torch

from xconv.probes import probe_kind

from coordinate_probes import toy_kind  # noqa: F401  (fixture: a coordinate kind in each layout)
from estimates import draw_estimates, exact_gradients, problem
from geometries import GEOMETRIES, TRANSPOSED
from single_thread import one_torch_thread  # noqa: F401  (autouse: tiny tensors, one thread)

RELATIVE_ROUNDING = 1e-10


def assert_exact_with_one_probe_per_dimension(name: str, probe: str) -> None:
    """``D`` probes of ``probe`` (``D`` = numbers per probe) give the exact weight gradient."""
    channels, *spatial = GEOMETRIES[name].input_shape[1:]
    dimension = math.prod(probe_kind(probe).probe_shape(channels, spatial))
    layers = problem(name, probe, probes=dimension)
    exact = exact_gradients(layers)["weight"]
    (estimate,) = draw_estimates(layers.converted, layers.x, layers.grad_out, count=1)
    error = ((estimate - exact).norm() / exact.norm()).item()
    assert error <= RELATIVE_ROUNDING, f"{name}, {probe}, r = {dimension}: relative error {error:.3g}"


@pytest.mark.parametrize("name", GEOMETRIES)
def test_one_coordinate_probe_per_dimension_gives_the_exact_weight_gradient(name, toy_kind):
    assert_exact_with_one_probe_per_dimension(name, toy_kind)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_orthogonal_probes_spanning_the_input_give_the_exact_weight_gradient(name):
    assert_exact_with_one_probe_per_dimension(name, "orthogonal")


def features(geometry) -> set[str]:
    """The layer features ``geometry`` exercises."""
    kwargs, dims = geometry.kwargs, len(geometry.input_shape) - 2
    kernel = kwargs["kernel_size"]
    kernel = (kernel,) * dims if isinstance(kernel, int) else tuple(kernel)
    padding = None if geometry.layer in TRANSPOSED else kwargs.get("padding", 0)
    found = {geometry.layer.__name__, *geometry.families, "bias" if kwargs.get("bias", True) else "no bias"}
    found |= {name for name, present in [
        ("stride", kwargs.get("stride", 1) not in (1, (1,) * dims)),
        ("depthwise", kwargs.get("groups", 1) == kwargs["in_channels"] > 1),
        ("same, odd kernel", padding == "same" and all(k % 2 for k in kernel)),
        ("same, even kernel", padding == "same" and not all(k % 2 for k in kernel)),
        ("valid", padding == "valid"),
        ("non-square kernel", len(set(kernel)) > 1),
        ("output_padding", kwargs.get("output_padding", 0) not in (0, (0,) * dims)),
    ] if present}
    return found


REQUIRED = {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
            "zeros", "reflect", "replicate", "circular", "stride", "dilated", "grouped", "depthwise",
            "same, odd kernel", "same, even kernel", "valid", "non-square kernel", "output_padding",
            "bias", "no bias"}


def test_the_geometries_cover_every_layer_feature():
    covered = set().union(*map(features, GEOMETRIES.values()))
    assert REQUIRED - covered == set()
