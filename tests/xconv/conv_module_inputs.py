"""The constructor arguments and inputs torch's own module tests give its conv layers.

Copied from the torch installed here (``torch/testing/_internal``), which cannot be imported
torch-only (``common_utils`` imports ``expecttest``):

* ``common_modules.module_inputs_torch_nn_ConvNd``: ``(C_in=4, C_out=5, kernel 3)``, spatial
  sizes ``3, 4, 5`` (one per dimension), batch 2 and no batch dimension, and ``padding="same"``
  for the non-transposed layers;
* the conv entries of ``common_nn.new_module_tests``: stride, padding, dilation, groups,
  depthwise, no bias, zero batch, ``padding="valid"``/``"same"`` (dilated, even kernels),
  transposed with ``output_padding``, and every padding mode (``reflect``, ``circular``,
  ``replicate``, ``zeros``) at stride 2 with padding ``(1, ..., d)``. torch skips ``reflect``
  in 3d (a FIXME from before 3d reflection padding existed); it exists now, so it is kept.

Each case is ``ConvCase(name, plain_cls, args, kwargs, input_size)`` with a batched
``input_size``; :func:`with_unbatched` adds the same case without the batch dimension (torch's
``no_batch_dim`` inputs), for every case whose batch is not empty.
"""
from __future__ import annotations

from typing import NamedTuple

import torch.nn as nn

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
PADDING_MODES = ("reflect", "circular", "replicate", "zeros")


class ConvCase(NamedTuple):
    name: str
    plain_cls: type
    args: tuple
    kwargs: dict
    input_size: tuple

    def unbatched(self) -> "ConvCase":
        return self._replace(name=f"{self.name}_no_batch_dim", input_size=self.input_size[1:])


def _module_inputs() -> list[ConvCase]:
    """``common_modules.module_inputs_torch_nn_ConvNd`` (batched; no_batch_dim via with_unbatched)."""
    cases = []
    for dims in (1, 2, 3):
        size = (2, 4) + tuple(i + 3 for i in range(dims))
        cases.append(ConvCase(f"module_inputs_Conv{dims}d", CONV[dims], (4, 5, 3), {}, size))
        cases.append(ConvCase(f"module_inputs_Conv{dims}d_same", CONV[dims], (4, 5, 3), {"padding": "same"}, size))
        cases.append(ConvCase(f"module_inputs_ConvTranspose{dims}d", CONV_TRANSPOSE[dims], (4, 5, 3), {}, size))
    return cases


# common_nn.new_module_tests, conv entries: (name, class, constructor args, constructor kwargs, input size)
_NEW_MODULE_TESTS = [
    ("Conv1d", nn.Conv1d, (4, 5, 3), {}, (2, 4, 10)),
    ("Conv1d_stride", nn.Conv1d, (4, 5, 3, 2), {}, (2, 4, 10)),
    ("Conv1d_pad1", nn.Conv1d, (4, 5, 3, 1, 1), {}, (2, 4, 10)),
    ("Conv1d_pad2", nn.Conv1d, (4, 5, 5, 1, 2), {}, (2, 4, 10)),
    ("Conv1d_pad1size1", nn.Conv1d, (4, 4, 3, 1, 1), {}, (1, 4, 1)),
    ("Conv1d_pad2size1", nn.Conv1d, (4, 4, 5, 1, 2), {}, (1, 4, 1)),
    ("Conv1d_zero_batch", nn.Conv1d, (4, 5, 3), {}, (0, 4, 10)),
    ("Conv1d_dilated", nn.Conv1d, (4, 5), {"kernel_size": 3, "dilation": 2}, (2, 4, 10)),
    ("Conv1d_groups", nn.Conv1d, (4, 6), {"kernel_size": 3, "groups": 2}, (2, 4, 6)),
    ("Conv1d_pad_valid", nn.Conv1d, (4, 5, 3), {"padding": "valid"}, (2, 4, 10)),
    ("Conv1d_pad_same", nn.Conv1d, (4, 5, 3), {"padding": "same"}, (2, 4, 10)),
    ("Conv1d_pad_same2", nn.Conv1d, (4, 5, 4), {"padding": "same"}, (2, 4, 10)),
    ("Conv1d_pad_same_dilated", nn.Conv1d, (4, 5, 4), {"padding": "same", "dilation": 2}, (2, 4, 10)),
    ("ConvTranspose1d", nn.ConvTranspose1d, (3, 4),
     {"kernel_size": 3, "stride": (3,), "padding": 1, "output_padding": (1,)}, (1, 3, 7)),
    ("ConvTranspose1d_no_bias", nn.ConvTranspose1d, (3, 4, 3, 2, 1, 1, 1, False), {}, (1, 3, 6)),
    ("ConvTranspose1d_dilated", nn.ConvTranspose1d, (3, 4, 3, 2, 1, 1, 1, True, 2), {}, (1, 3, 6)),
    ("ConvTranspose1d_groups", nn.ConvTranspose1d, (4, 6, 3),
     {"stride": (3,), "padding": 1, "output_padding": (1,), "groups": 2}, (2, 4, 7)),
    ("Conv2d", nn.Conv2d, (3, 4, (3, 2)), {}, (2, 3, 7, 5)),
    ("Conv2d_strided", nn.Conv2d, (3, 4, (3, 3), (2, 2)), {}, (2, 3, 6, 6)),
    ("Conv2d_padding", nn.Conv2d, (3, 4, (3, 3), (2, 2), (1, 1)), {}, (2, 3, 6, 6)),
    ("Conv2d_dilated", nn.Conv2d, (3, 2, (3, 3), (2, 2), (1, 1), (2, 2)), {}, (2, 3, 8, 8)),
    ("Conv2d_no_bias", nn.Conv2d, (3, 4, (3, 2), 1, 0, 1, 1, False), {}, (2, 3, 6, 5)),
    ("Conv2d_zero_batch", nn.Conv2d, (3, 4, (3, 2)), {}, (0, 3, 7, 5)),
    ("Conv2d_groups", nn.Conv2d, (4, 6, (3, 2)), {"groups": 2}, (2, 4, 6, 5)),
    ("Conv2d_pad_valid", nn.Conv2d, (2, 4, (3, 4)), {"padding": "valid"}, (2, 2, 6, 5)),
    ("Conv2d_pad_same", nn.Conv2d, (2, 4, (3, 4)), {"padding": "same"}, (2, 2, 6, 5)),
    ("Conv2d_pad_same_dilated", nn.Conv2d, (2, 4, (3, 4)), {"padding": "same", "dilation": 2}, (2, 2, 6, 5)),
    ("ConvTranspose2d", nn.ConvTranspose2d, (3, 4, 3, (3, 2), 1, (1, 1)), {}, (1, 3, 7, 6)),
    ("ConvTranspose2d_dilated", nn.ConvTranspose2d, (3, 4, 3, (2, 3), 1, (1, 1), 1, False, (2, 2)), {},
     (1, 3, 6, 7)),
    ("ConvTranspose2d_no_bias", nn.ConvTranspose2d, (3, 4, 3, (2, 3), 1, (1, 1), 1, False), {}, (1, 3, 6, 7)),
    ("ConvTranspose2d_groups", nn.ConvTranspose2d, (2, 4, (2, 3)), {"groups": 2}, (1, 2, 4, 5)),
    ("Conv2d_depthwise", nn.Conv2d, (4, 4, (3, 3)), {"groups": 4}, (2, 4, 6, 6)),
    ("Conv2d_depthwise_with_multiplier", nn.Conv2d, (4, 8, (3, 3)), {"groups": 4}, (2, 4, 6, 6)),
    ("Conv2d_depthwise_strided", nn.Conv2d, (4, 4, (3, 3)), {"stride": (2, 2), "groups": 4}, (2, 4, 6, 6)),
    ("Conv2d_depthwise_padded", nn.Conv2d, (4, 4, (3, 3)), {"padding": (1, 1), "groups": 4}, (2, 4, 6, 6)),
    ("Conv2d_depthwise_dilated", nn.Conv2d, (4, 4, (2, 2)), {"dilation": (2, 2), "groups": 4}, (2, 4, 5, 5)),
    ("Conv3d", nn.Conv3d, (2, 3, (2, 3, 2)), {}, (1, 2, 4, 5, 4)),
    ("Conv3d_no_bias", nn.Conv3d, (2, 3, (2, 3, 4), 1, 0, 1, 1, False), {}, (1, 2, 3, 4, 5)),
    ("Conv3d_1x1x1_no_bias", nn.Conv3d, (2, 3, (1, 1, 1), 1, 0, 1, 1, False), {}, (1, 2, 3, 4, 5)),
    ("Conv3d_stride", nn.Conv3d, (3, 4, 2, 2), {}, (2, 3, 5, 5, 5)),
    ("Conv3d_stride_padding", nn.Conv3d, (3, 4, 2, 2, 1), {}, (2, 3, 5, 5, 5)),
    ("Conv3d_zero_batch", nn.Conv3d, (3, 4, (2, 3, 4)), {}, (0, 3, 3, 4, 5)),
    ("Conv3d_groups", nn.Conv3d, (2, 4), {"kernel_size": 3, "groups": 2}, (1, 2, 4, 5, 4)),
    ("Conv3d_dilated", nn.Conv3d, (3, 4), {"kernel_size": 2, "dilation": 2}, (2, 3, 5, 5, 5)),
    ("Conv3d_dilated_strided", nn.Conv3d, (3, 4), {"kernel_size": 2, "dilation": 2, "stride": 2}, (2, 3, 5, 5, 5)),
    ("Conv3d_pad_valid", nn.Conv3d, (3, 4, (2, 3, 4)), {"padding": "valid"}, (2, 3, 6, 5, 4)),
    ("Conv3d_pad_same", nn.Conv3d, (3, 4, (2, 3, 4)), {"padding": "same"}, (2, 3, 6, 5, 4)),
    ("Conv3d_pad_same_dilated", nn.Conv3d, (3, 4, (2, 3, 4)), {"padding": "same", "dilation": 2}, (2, 3, 6, 5, 4)),
    ("ConvTranspose3d", nn.ConvTranspose3d, (2, 3, (2, 3, 2)), {}, (1, 2, 4, 5, 4)),
    ("ConvTranspose3d_dilated", nn.ConvTranspose3d, (2, 3, (2, 3, 2), 1, 0, 0, 1, True, (2, 2, 2)), {},
     (1, 2, 4, 5, 4)),
]


def _padding_modes() -> list[ConvCase]:
    """common_nn's padding-mode loop: ``Conv{d}d(2, 3, 3, stride 2, padding (1..d), mode)`` on 4^d inputs."""
    return [ConvCase(f"Conv{dims}d_{mode}_stride2_pad2", CONV[dims],
                     (2, 3, 3, 2, tuple(range(1, dims + 1)), 1, 1, True, mode), {}, (2, 2) + (4,) * dims)
            for mode in PADDING_MODES for dims in (1, 2, 3)]


def with_unbatched(cases: list[ConvCase]) -> list[ConvCase]:
    """Every case, followed by its no-batch-dimension twin where the batch is not empty."""
    return [variant for case in cases
            for variant in ([case, case.unbatched()] if case.input_size[0] > 0 else [case])]


#: Every case of torch's conv module tests, batched and unbatched.
CASES = with_unbatched(_module_inputs() + [ConvCase(*entry) for entry in _NEW_MODULE_TESTS] + _padding_modes())
