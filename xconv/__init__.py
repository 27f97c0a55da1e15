"""xconv: low-memory convolution layers (XConv, arXiv 2106.06998).

``import xconv`` needs torch only.
"""
from . import rng
from ._checks import PROBE_KINDS
from .layers import (XConv1d, XConv2d, XConv3d, XConvTranspose1d, XConvTranspose2d,
                     XConvTranspose3d)
from .rng import get_rng_state, manual_seed, set_rng_state

__version__ = "0.1.0"
