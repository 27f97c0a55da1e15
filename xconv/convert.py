"""Turn an ordinary model into an XConv model, in place.

Conversion changes the class of each matching module to its XConv (or 1-bit
activation) subclass. The module object, its Parameters, buffers and hooks stay
the same, so optimisers built before conversion, ``state_dict`` keys and
checkpoints remain compatible both ways.
"""
from __future__ import annotations

import fnmatch
import math
import warnings
from typing import Callable, Iterable, Union

import torch
import torch.nn as nn

from ._checks import check_probe_kind, check_probes
from .activations import BIT_ACTIVATION_FOR, BitLeakyReLU, BitReLU
from .layers import DEFAULT_PROBE, DEFAULT_PROBES, XCONV_FOR, XConvMixin
from .probes import probe_kind

__all__ = ["convert", "unconvert", "set_probes", "xconv_layers"]

Skip = Union[None, str, Iterable[str], Callable[[str, nn.Module], bool]]

_PLAIN_FOR = {xconv: plain for plain, xconv in XCONV_FOR.items()}
_PLAIN_FOR.update({BitReLU: nn.ReLU, BitLeakyReLU: nn.LeakyReLU})


def convert(model: nn.Module, *, probes: int = DEFAULT_PROBES, probe: str = DEFAULT_PROBE,
            relu: bool = False, skip: Skip = None,
            example_input: torch.Tensor | tuple | None = None) -> nn.Module:
    """Swap every ``nn.ConvNd``/``nn.ConvTransposeNd`` of ``model`` for its XConv layer.

    Args:
        probes: probe count (0 = exact backprop; convert now, enable later with
            :func:`set_probes`).
        probe: probe kind, a name in :data:`xconv.PROBE_KINDS` (see :mod:`xconv.probes`).
        relu: also swap ``nn.ReLU``/``nn.LeakyReLU`` for the 1-bit activations.
        skip: layers to leave alone: a name pattern (``fnmatch``, matched against
            the qualified module name), a list of them, or a predicate
            ``skip(name, module) -> bool``.
        example_input: if given, ``model(example_input)`` is run once (no
            gradients) to see each layer's input, and convolutions whose sketch
            would not be smaller than their input are left exact.

    Returns ``model`` (converted in place). Subclasses of the torch layers with a
    forward of their own are not converted (a warning names them).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(model).__name__}")
    probes, probe = check_probes(probes), check_probe_kind(probe)
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be True or False, got {relu!r}")
    should_skip = _skip_predicate(skip)
    unprofitable = _layers_without_saving(model, probes, probe, example_input)

    foreign = []
    for name, module in model.named_modules():
        if should_skip(name, module) or name in unprofitable:
            continue
        kind = type(module)
        if kind in XCONV_FOR:
            module.__class__ = XCONV_FOR[kind]
            module.set_xconv(probes=probes, probe=probe)
        elif isinstance(module, XConvMixin):
            module.set_xconv(probes=probes, probe=probe)
        elif relu and kind in BIT_ACTIVATION_FOR:
            module.__class__ = BIT_ACTIVATION_FOR[kind]
        elif isinstance(module, tuple(XCONV_FOR)) or (relu and isinstance(module, tuple(BIT_ACTIVATION_FOR))):
            foreign.append(f"{name or '<root>'} ({kind.__name__})")
    if foreign:
        warnings.warn("xconv.convert left these subclasses of torch layers unconverted (their own "
                      "forward could not be kept): " + ", ".join(foreign), stacklevel=2)
    return model


def unconvert(model: nn.Module) -> nn.Module:
    """Undo :func:`convert` in place: every XConv/1-bit module becomes its torch layer."""
    for module in model.modules():
        plain = _PLAIN_FOR.get(type(module))
        if plain is not None:
            if isinstance(module, XConvMixin):
                del module.probes, module.probe
            module.__class__ = plain
    return model


def set_probes(model: nn.Module, probes: int, probe: str | None = None) -> int:
    """Set the probe count (and optionally kind) of every XConv layer; returns how many."""
    probes = check_probes(probes)
    layers = list(xconv_layers(model))
    for _, layer in layers:
        layer.set_xconv(probes=probes, probe=check_probe_kind(probe) if probe is not None else layer.probe)
    return len(layers)


def xconv_layers(model: nn.Module):
    """Yield ``(name, layer)`` for every XConv layer of ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, XConvMixin):
            yield name, module


def _skip_predicate(skip: Skip) -> Callable[[str, nn.Module], bool]:
    if skip is None:
        return lambda name, module: False
    if callable(skip):
        return skip
    patterns = [skip] if isinstance(skip, str) else list(skip) if isinstance(skip, (list, tuple, set)) else None
    if patterns is None or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"skip must be a name pattern, a list of patterns or a predicate, got {skip!r}")
    return lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def sketch_numbers_per_sample(probe: str, probes: int, channels: int) -> int:
    """Numbers an XConv layer with ``probes`` probes of kind ``probe`` keeps per sample (e.g. r*C_in
    for "channel", r for "gaussian"; see :mod:`xconv.probes`)."""
    return probe_kind(probe).numbers_per_sample(probes, channels)


def _layers_without_saving(model, probes, probe, example_input) -> set[str]:
    """Names of convolutions whose sketch is not smaller than their input."""
    if example_input is None or probes == 0:
        return set()
    input_shapes: dict[str, torch.Size] = {}
    handles = []
    for name, module in model.named_modules():
        if type(module) in XCONV_FOR or isinstance(module, XConvMixin):
            def record(mod, args, name=name):
                input_shapes.setdefault(name, args[0].shape)
            handles.append(module.register_forward_pre_hook(record))
    training = {module: module.training for module in model.modules()}
    model.eval()  # the dry run must not touch BatchNorm running statistics
    try:
        with torch.no_grad():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in training.items():
            module.training = mode
    return {name for name, shape in input_shapes.items()
            if sketch_numbers_per_sample(probe, probes, shape[1]) >= math.prod(shape[1:])}
