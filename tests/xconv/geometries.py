"""The one list of layer configurations the estimator tests share.

Every kind of layer (Conv1d/2d/3d, ConvTranspose1d/2d/3d) with stride,
dilation, groups (depthwise too), every padding mode (zeros, reflect,
replicate, circular), ``padding="same"`` with odd and even kernels,
``padding="valid"``, non-square kernels, ``output_padding`` and bias on and off.
Shapes are small: one probe per input number (``C_in * prod(spatial)`` of
them, at most 400) keeps the exactness tests fast.

``probes`` is r, the probes per estimate in the statistical tests: 256, more
where strides leave input positions that a kernel tap never reads (they add
noise to the estimate of that tap and nothing to its mean); chosen so that a
10% bias is rejected with a margin of about 3 standard deviations
(``tests/xconv/test_power.py``).
"""
from __future__ import annotations

from typing import NamedTuple

import torch.nn as nn

TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class Geometry(NamedTuple):
    """A plain torch layer class, the input shape, the layer's constructor arguments and r."""

    layer: type
    input_shape: tuple[int, ...]
    kwargs: dict
    probes: int = 256

    @property
    def padding_mode(self) -> str | None:
        """The padding mode, or None when the layer pads nothing (transposed layers pad no input)."""
        padding = self.kwargs.get("padding", 0)
        if self.layer in TRANSPOSED or padding in (0, "valid") or padding == (0,) * (len(self.input_shape) - 2):
            return None
        return self.kwargs.get("padding_mode", "zeros")

    @property
    def families(self) -> tuple[str, ...]:
        """The configuration families this geometry belongs to (a row of the power table each)."""
        dims = f"{len(self.input_shape) - 2}d"
        families = [dims]
        if self.layer in TRANSPOSED:
            families.append("transposed")
        if self.kwargs.get("groups", 1) > 1:
            families.append("grouped")
        if self.kwargs.get("dilation", 1) not in (1, (1,) * (len(self.input_shape) - 2)):
            families.append("dilated")
        if self.padding_mode is not None:
            families.append(self.padding_mode)
        return tuple(families)


GEOMETRIES = {
    # 1d
    "1d-replicate": Geometry(nn.Conv1d, (4, 3, 11), dict(
        in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="replicate"), probes=384),
    "1d-dilation-stride": Geometry(nn.Conv1d, (4, 2, 16), dict(
        in_channels=2, out_channels=3, kernel_size=4, stride=3, dilation=2), probes=768),
    "1d-same-odd-reflect": Geometry(nn.Conv1d, (3, 2, 12), dict(
        in_channels=2, out_channels=3, kernel_size=5, padding="same", padding_mode="reflect", bias=False),
        probes=384),
    "1d-circular-groups": Geometry(nn.Conv1d, (3, 4, 10), dict(
        in_channels=4, out_channels=6, kernel_size=3, padding=2, padding_mode="circular", groups=2)),
    # 2d
    "2d-pad1": Geometry(nn.Conv2d, (4, 3, 9, 8), dict(
        in_channels=3, out_channels=4, kernel_size=3, padding=1), probes=384),
    "2d-stride-dilation-groups-reflect": Geometry(nn.Conv2d, (4, 4, 9, 8), dict(
        in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, dilation=(2, 1), groups=2,
        padding=2, padding_mode="reflect"), probes=768),
    "2d-same-even-circular": Geometry(nn.Conv2d, (3, 3, 7, 10), dict(
        in_channels=3, out_channels=4, kernel_size=4, padding="same", padding_mode="circular"), probes=384),
    "2d-same-even-zeros": Geometry(nn.Conv2d, (3, 2, 8, 7), dict(
        in_channels=2, out_channels=3, kernel_size=(2, 4), padding="same", bias=False), probes=384),
    "2d-replicate-stride": Geometry(nn.Conv2d, (3, 2, 10, 9), dict(
        in_channels=2, out_channels=3, kernel_size=3, stride=(2, 3), padding=(1, 2),
        padding_mode="replicate"), probes=512),
    "2d-depthwise": Geometry(nn.Conv2d, (4, 4, 6, 6), dict(
        in_channels=4, out_channels=4, kernel_size=3, groups=4, padding=1), probes=384),
    "2d-valid-nonsquare": Geometry(nn.Conv2d, (3, 3, 7, 8), dict(
        in_channels=3, out_channels=2, kernel_size=(3, 2), stride=(1, 2), padding="valid"), probes=512),
    # 3d
    "3d-pad1": Geometry(nn.Conv3d, (2, 2, 5, 4, 6), dict(
        in_channels=2, out_channels=3, kernel_size=3, padding=1), probes=384),
    "3d-stride-groups": Geometry(nn.Conv3d, (2, 4, 5, 5, 4), dict(
        in_channels=4, out_channels=2, kernel_size=(3, 2, 1), stride=2, groups=2), probes=1024),
    "3d-same-odd-replicate": Geometry(nn.Conv3d, (2, 2, 4, 5, 4), dict(
        in_channels=2, out_channels=2, kernel_size=3, padding="same", padding_mode="replicate", bias=False),
        probes=512),
    "3d-circular-dilation": Geometry(nn.Conv3d, (2, 2, 5, 4, 5), dict(
        in_channels=2, out_channels=3, kernel_size=(2, 3, 2), dilation=(1, 2, 1), padding=(1, 2, 1),
        padding_mode="circular"), probes=384),
    "3d-reflect": Geometry(nn.Conv3d, (2, 2, 4, 5, 5), dict(
        in_channels=2, out_channels=2, kernel_size=(3, 1, 3), padding=(1, 0, 1), padding_mode="reflect"),
        probes=384),
    # transposed (no padding mode: their padding crops the output)
    "transpose1d": Geometry(nn.ConvTranspose1d, (4, 3, 7), dict(
        in_channels=3, out_channels=2, kernel_size=4, stride=2)),
    "transpose1d-dilation-outpad": Geometry(nn.ConvTranspose1d, (3, 2, 8), dict(
        in_channels=2, out_channels=3, kernel_size=3, stride=3, dilation=2, padding=1, output_padding=1,
        bias=False)),
    "transpose2d-stride-groups": Geometry(nn.ConvTranspose2d, (4, 4, 5, 6), dict(
        in_channels=4, out_channels=6, kernel_size=3, stride=2, groups=2, padding=1, output_padding=1),
        probes=384),
    "transpose2d-dilation": Geometry(nn.ConvTranspose2d, (3, 2, 4, 5), dict(
        in_channels=2, out_channels=3, kernel_size=(2, 3), dilation=2, bias=False)),
    "transpose3d": Geometry(nn.ConvTranspose3d, (2, 2, 3, 4, 3), dict(
        in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=1, output_padding=(1, 0, 1))),
}
