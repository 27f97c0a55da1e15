"""Segmentation networks: segmentation-models-pytorch's U-Net (stand-in for the paper's TriConvUNeXt)."""
from __future__ import annotations

import torch.nn as nn

from ..rules import POSITIVE, ChoiceOf, Integer, Side, config_rules, input_side, require_int

ENCODER_DEPTH = 5  # smp.Unet's default encoder_depth, which smp_unet keeps: the input is halved 5 times


def encoder_names() -> tuple[str, ...]:
    """The encoders segmentation-models-pytorch can build (``model.encoder``)."""
    import segmentation_models_pytorch as smp

    return tuple(smp.encoders.get_encoder_names())


@input_side(lambda section: Side(multiple=2 ** ENCODER_DEPTH,
                                 why=f"smp_unet with encoder_depth {ENCODER_DEPTH} halves it {ENCODER_DEPTH} times"))
@config_rules(encoder=ChoiceOf(current=encoder_names), in_channels=POSITIVE, classes=Integer(least=2))
def smp_unet(encoder: str = "resnet18", in_channels: int = 3, classes: int = 2) -> nn.Module:
    """``smp.Unet(encoder, encoder_weights=None, ...)``: randomly initialised, ``classes`` logit maps.

    Input height and width must be multiples of 32 (five 2x downsamplings: ``input_side_rule``).
    """
    import segmentation_models_pytorch as smp

    require_int("model.classes", classes, 2)
    return smp.Unet(encoder, encoder_weights=None, in_channels=in_channels, classes=classes)
