"""A plain torch layer and its XConv twin with the same weights."""
import torch
import torch.nn as nn

import xconv

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
