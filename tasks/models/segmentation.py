"""Segmentation networks: segmentation-models-pytorch's U-Net (stand-in for the paper's TriConvUNeXt)."""
from __future__ import annotations

import torch.nn as nn

from ..rules import POSITIVE, Integer, Text, config_rules, require_int


@config_rules(encoder=Text(), in_channels=POSITIVE, classes=Integer(least=2))
def smp_unet(encoder: str = "resnet18", in_channels: int = 3, classes: int = 2) -> nn.Module:
    """``smp.Unet(encoder, encoder_weights=None, ...)``: randomly initialised, ``classes`` logit maps.

    Input height and width must be multiples of 32 (five 2x downsamplings).
    """
    import segmentation_models_pytorch as smp

    require_int("model.classes", classes, 2)
    return smp.Unet(encoder, encoder_weights=None, in_channels=in_channels, classes=classes)
