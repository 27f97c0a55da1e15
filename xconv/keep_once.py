"""Keep once: a converted layer whose kept tensor another layer keeps anyway goes back to torch's.

Autograd keeps a storage once however many operations save it. So where a plain
layer already keeps a tensor, a converted neighbour's smaller stand-in for the
same tensor is pure extra memory:

* an XConv layer whose input another layer keeps (a plain ReLU keeps its output,
  the next convolution's input): its sketch adds ``r·C_in`` numbers per sample
  and saves nothing, while the plain convolution would keep the input for free
  and compute the exact weight gradient;
* a saver whose torch module would keep a tensor another layer keeps (a 1-bit
  ReLU before a plain convolution: torch's ReLU keeps the output the convolution
  keeps anyway, so the bits are extra).

:func:`layers_kept_elsewhere` finds them on one forward at an example input (train
mode, or eval mode where the example cannot run in train mode, e.g. BatchNorm on a batch of
one; gradients on; no side effects): for each candidate, the storage its torch layer
would keep (:data:`TORCH_KEEPS`: the input or the output) is looked up among the
storages every other module saved (``SavedTensorMeter(model).storages_by_module``), call by
call: a layer called several times (torchvision's ResNet blocks call one ReLU twice) goes back
only if every call's tensor is kept elsewhere.
:func:`xconv.convert` calls it with ``example_input`` and turns the layers found back
into their torch layers, round after round until none is found (a layer turned back
keeps its tensor, which may make a neighbour's stand-in redundant in turn).

Pools and dropout are never candidates: their savers keep less than torch's module
even when the input is kept anyway (uint8 offsets against int64 indices, shapes,
bit masks against bool masks).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import XConvMixin
from .memory import OUTSIDE_MODULES, ROOT_MODULE, _storage_key, metered_forward

#: The tensor torch's own module keeps for backward ("input" or "output"). Norms also keep per-channel
#: statistics. In place, only ReLU and LeakyReLU keep their result (the storage they overwrote); the
#: others keep a private copy of their original input (:data:`KEEPS_RESULT_IN_PLACE`).
TORCH_KEEPS: dict[type, str] = {
    nn.ReLU: "output", nn.Sigmoid: "output", nn.Tanh: "output",
    nn.LeakyReLU: "input", nn.Hardtanh: "input", nn.ReLU6: "input", nn.SiLU: "input", nn.GELU: "input",
    nn.Hardswish: "input", nn.Mish: "input",
    nn.BatchNorm1d: "input", nn.BatchNorm2d: "input", nn.BatchNorm3d: "input", nn.GroupNorm: "input",
    nn.InstanceNorm1d: "input", nn.InstanceNorm2d: "input", nn.InstanceNorm3d: "input", nn.LayerNorm: "input",
}
KEEPS_RESULT_IN_PLACE = (nn.ReLU, nn.LeakyReLU)


def torch_keeps(plain: type, inplace: bool) -> str | None:
    """What torch's ``plain`` module keeps that another layer could keep too: "input", "output", or
    None (a tensor of its own: in-place modules other than (Leaky)ReLU keep a copy of their input)."""
    if inplace:
        return "output" if issubclass(plain, KEEPS_RESULT_IN_PLACE) else None
    return TORCH_KEEPS.get(plain)


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def layers_kept_elsewhere(model: nn.Module, example_input, candidates: dict[str, tuple[nn.Module, str]]
                          ) -> dict[str, str]:
    """``{name: reason}`` of the ``candidates`` (``{name: (module, "input" | "output")}``) whose tensor
    another module of ``model`` keeps at ``example_input`` (one forward, no side effects)."""
    # The watched tensors themselves are held until the end: a freed storage's address could be
    # reused by a later tensor that some module saves, a false match.
    watched: dict[str, list[torch.Tensor]] = {name: [] for name in candidates}
    handles = []
    for name, (module, which) in candidates.items():
        def record(tensor, name=name):
            if tensor is not None:
                watched[name].append(tensor)
        if which == "input":
            handles.append(module.register_forward_pre_hook(lambda mod, args, record=record: record(_first_tensor(args))))
        else:
            handles.append(module.register_forward_hook(
                lambda mod, args, output, record=record: record(_first_tensor(output))))
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    training = {module: module.training for module in model.modules()}
    try:
        try:
            meter = metered_forward(model.train(), *inputs)
        except (ValueError, RuntimeError):  # e.g. BatchNorm over one value per channel (a batch of one)
            for tensors in watched.values():
                tensors.clear()
            meter = metered_forward(model.eval(), *inputs)  # dropout then passes its input through
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in training.items():
            module.training = mode
    saved_by = {other: stored for other, stored in meter.storages_by_module.items() if other != OUTSIDE_MODULES}
    found = {}
    for name, tensors in watched.items():
        own = name or ROOT_MODULE
        keys = [_storage_key(tensor) for tensor in tensors]
        keepers = [sorted(other for other, stored in saved_by.items() if other != own and key in stored)
                   for key in keys]
        if tensors and all(keepers):  # every call's tensor: a module that runs once per call may not revert
            found[name] = (f"its {candidates[name][1]} is kept by "
                           f"{', '.join(sorted({k for call in keepers for k in call}))} anyway")
    return found


def candidates_of(model: nn.Module, plain_for: dict[type, type]) -> dict[str, tuple[nn.Module, str]]:
    """The converted layers of ``model`` that keep a stand-in for a tensor torch's layer would keep:
    XConv layers (their input) and savers whose torch layer keeps a tensor others may keep (:func:`torch_keeps`)."""
    found = {}
    for name, module in model.named_modules():
        plain = plain_for.get(type(module))
        if plain is None:
            continue
        if isinstance(module, XConvMixin):  # with probes it keeps a sketch; without, its input itself
            which = "input" if module.probes > 0 else None
        else:
            which = torch_keeps(plain, getattr(module, "inplace", False))
        if which is not None:
            found[name] = (module, which)
    return found
