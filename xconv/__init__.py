"""xconv: low-memory convolution layers (XConv, arXiv 2106.06998).

``import xconv`` needs torch only. It gives drop-in convolution layers whose
weight gradient is estimated from a small random sketch of the layer input
(randomized trace estimation), 1-bit (Leaky)ReLUs, model conversion and
memory meters::

    import xconv
    model = xconv.convert(model, probes=16, relu=True)   # in place, same Parameters
    with xconv.memory.SavedTensorMeter() as meter:
        loss = model(x).sum()
"""
from . import fake_peak, keep_once, memory, planner, probes, rng
from .activations import BitLeakyReLU, BitReLU
from .checkpoint import checkpoint_sequential
from .linear import XLinear
from .convert import ACTIVATION_MODES, convert, left_plain, savers_for, set_probes, unconvert, xconv_layers
from .layers import (XConv1d, XConv2d, XConv3d, XConvMixin, XConvTranspose1d, XConvTranspose2d,
                     XConvTranspose3d, force_sketch)
from .planner import BudgetError, plan_budget
from .rng import get_rng_state, manual_seed, set_rng_state
from .segments import CheckpointPlan, checkpoint_plan, parse_checkpoint_mode, uncheckpoint

__version__ = "0.1.0"

__all__ = [
    "PROBE_KINDS", "XConv1d", "XConv2d", "XConv3d", "XConvTranspose1d", "XConvTranspose2d",
    "XConvTranspose3d", "XLinear", "XConvMixin", "BitReLU", "BitLeakyReLU", "convert", "unconvert",
    "set_probes", "xconv_layers", "left_plain", "ACTIVATION_MODES", "savers_for", "memory", "rng", "manual_seed", "get_rng_state",
    "set_rng_state", "checkpoint_sequential", "uncheckpoint", "checkpoint_plan", "parse_checkpoint_mode",
    "CheckpointPlan", "plan_budget", "BudgetError", "planner", "probes", "force_sketch", "fake_peak", "keep_once",
]


def __getattr__(name: str):
    if name == "PROBE_KINDS":  # the registered probe kinds' names, including kinds registered after import
        return probes.PROBE_KINDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
