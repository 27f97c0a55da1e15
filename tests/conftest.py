import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import xconv

# Results scripts import their shared helpers as `import report` (scripts/report.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

PLAIN_TO_XCONV = {
    nn.Conv1d: xconv.XConv1d, nn.Conv2d: xconv.XConv2d, nn.Conv3d: xconv.XConv3d,
    nn.ConvTranspose1d: xconv.XConvTranspose1d, nn.ConvTranspose2d: xconv.XConvTranspose2d,
    nn.ConvTranspose3d: xconv.XConvTranspose3d,
}


def layer_pair(plain_cls, dtype=torch.float64, probes=8, probe="channel", **kwargs):
    """A plain torch layer and an XConv layer with the same weights."""
    plain = plain_cls(**kwargs).to(dtype)
    converted = PLAIN_TO_XCONV[plain_cls](**kwargs, probes=probes, probe=probe).to(dtype)
    converted.load_state_dict(plain.state_dict())
    return plain, converted


@pytest.fixture(autouse=True)
def _fixed_seed():
    torch.manual_seed(0)
