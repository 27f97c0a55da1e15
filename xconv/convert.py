"""Turn an ordinary model into an XConv model, in place.

Conversion changes the class of each matching module to its XConv (or 1-bit
activation) subclass. The module object, its Parameters, buffers and hooks stay
the same, so optimisers built before conversion, ``state_dict`` keys and
checkpoints remain compatible both ways.
"""
from __future__ import annotations

import fnmatch
import warnings
from typing import Callable, Iterable, Union

import torch
import torch.nn as nn

from ._checks import check_probe_kind, check_probes
from .activations import BIT_ACTIVATION_FOR
from .compact import COMPACT_FOR
from .lossless import LOSSLESS_FOR
from .layers import DEFAULT_PROBE, DEFAULT_PROBES, XCONV_FOR, XConvMixin, sample_shape_of, sketch_saves_memory
from .linear import XLinear, check_linear_probe
from .keep_once import candidates_of, layers_kept_elsewhere
from .probes import probe_kind

__all__ = ["ACTIVATION_MODES", "convert", "unconvert", "set_probes", "xconv_layers", "savers_for", "left_plain"]

Skip = Union[None, str, Iterable[str], Callable[[str, nn.Module], bool]]

#: What ``activations=`` swaps, cumulatively: "lossless" keeps less with torch's gradients bit for bit
#: (:mod:`xconv.activations`, :mod:`xconv.lossless`); "compact" adds savers that keep an approximation
#: (:mod:`xconv.compact`: norms' x-hat in 8 bits, few-bit derivative codes of smooth activations).
ACTIVATION_MODES = ("exact", "lossless", "compact")
_SAVERS_FOR_MODE = {"exact": {}, "lossless": {**BIT_ACTIVATION_FOR, **LOSSLESS_FOR}}
_SAVERS_FOR_MODE["compact"] = {**_SAVERS_FOR_MODE["lossless"], **COMPACT_FOR}

_PLAIN_FOR = {xconv: plain for plain, xconv in XCONV_FOR.items()}
_PLAIN_FOR[XLinear] = nn.Linear
_PLAIN_FOR.update({saver: plain for plain, saver in _SAVERS_FOR_MODE["compact"].items()})


def savers_for(activations: str = "exact", relu: bool = False) -> dict[type, type]:
    """The torch module classes ``convert(activations=..., relu=...)`` swaps (besides convolutions),
    each mapped to the saver class that replaces it."""
    if activations not in ACTIVATION_MODES:
        raise ValueError(f"activations must be one of {', '.join(ACTIVATION_MODES)}, got {activations!r}")
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be True or False, got {relu!r}")
    return {**(BIT_ACTIVATION_FOR if relu else {}), **_SAVERS_FOR_MODE[activations]}


def convert(model: nn.Module, *, probes: int = DEFAULT_PROBES, probe: str = DEFAULT_PROBE,
            relu: bool = False, activations: str = "exact", linear: str | None = None, skip: Skip = None,
            example_input: torch.Tensor | tuple | None = None, keep_once: bool = True) -> nn.Module:
    """Swap every ``nn.ConvNd``/``nn.ConvTransposeNd`` of ``model`` for its XConv layer.

    Args:
        probes: probe count (0 = exact backprop; convert now, enable later with
            :func:`set_probes`).
        probe: probe kind, a name in :data:`xconv.PROBE_KINDS` (see :mod:`xconv.probes`).
        relu: also swap ``nn.ReLU``/``nn.LeakyReLU`` for the 1-bit activations.
        activations: what the other layers keep for backward (:data:`ACTIVATION_MODES`):
            "exact" leaves them alone; "lossless" swaps (Leaky)ReLU, ReLU6, Hardtanh, max and
            average pooling and dropout for savers that keep bits, offsets or shapes and give
            torch's gradients bit for bit (includes ``relu=True``); "compact" also swaps norms
            and smooth activations for savers that keep an approximation (x-hat in 8 bits,
            derivative codes; input gradients unbiased or within a stated error).
            ``probes=0, activations="lossless"`` is exact backprop with less memory.
        linear: a probe kind over the features ("gaussian", "rademacher", "orthogonal") to also
            swap every ``nn.Linear`` for :class:`xconv.linear.XLinear` with ``probes`` probes of
            that kind (a sketch of ``r`` numbers per row instead of ``in_features``); None
            (default) leaves linear layers alone.
        skip: layers to leave alone: a name pattern (``fnmatch``, matched against
            the qualified module name), a list of them, or a predicate
            ``skip(name, module) -> bool``.
        example_input: if given, ``model(example_input)`` is run once (no
            gradients) to see each layer's inputs; convolutions none of whose calls
            would sketch (a sketch no smaller than the input) are left plain. The
            others are converted and decide call by call (never more than exact).
            Then, with ``keep_once`` (:mod:`xconv.keep_once`): converted layers whose
            kept tensor another layer keeps anyway (an XConv layer after a plain ReLU,
            a 1-bit ReLU before a plain convolution) go back to their torch layer, which
            keeps that tensor at no extra cost (XConv layers: exact weight gradients).
            :func:`left_plain` names every layer left plain and why.
        keep_once: with ``example_input``, apply keep once (default). ``False`` keeps
            the paper's adaptive XConv: every layer whose sketch is smaller sketches,
            whatever its neighbours keep (the studies that reproduce the paper's
            figures use it).

    Returns ``model`` (converted in place). Subclasses of the torch layers with a
    forward of their own are not converted (a warning names them).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(model).__name__}")
    probes, probe = check_probes(probes), check_probe_kind(probe)
    savers = savers_for(activations, relu)
    linear = None if linear is None else check_linear_probe(linear)
    if not isinstance(keep_once, bool):
        raise TypeError(f"keep_once must be True or False, got {keep_once!r}")
    should_skip = _skip_predicate(skip)
    unprofitable = _layers_without_saving(model, probes, probe, linear, example_input)
    reasons = {name: "no call's sketch would be smaller than its input" for name in unprofitable}

    foreign = []
    for name, module in model.named_modules():
        if should_skip(name, module) or name in unprofitable:
            continue
        kind = type(module)
        if kind in XCONV_FOR:
            module.__class__ = XCONV_FOR[kind]
            module.set_xconv(probes=probes, probe=probe)
        elif kind is nn.Linear and linear is not None:
            module.__class__ = XLinear
            module.set_xconv(probes=probes, probe=linear)
        elif isinstance(module, XLinear):
            module.set_xconv(probes=probes, probe=linear or module.probe)
        elif isinstance(module, XConvMixin):
            module.set_xconv(probes=probes, probe=probe)
        elif kind in savers:
            module.__class__ = savers[kind]
        elif (isinstance(module, (*XCONV_FOR, *savers, *((nn.Linear,) if linear else ())))
              and kind not in _PLAIN_FOR):
            foreign.append(f"{name or '<root>'} ({kind.__name__})")
    if foreign:
        warnings.warn("xconv.convert left these subclasses of torch layers unconverted (their own "
                      "forward could not be kept): " + ", ".join(foreign), stacklevel=2)
    if example_input is not None and keep_once:
        reasons.update(_keep_once(model, example_input))
    model.__dict__[_LEFT_PLAIN] = reasons
    return model


_LEFT_PLAIN = "_xconv_left_plain"


def left_plain(model: nn.Module) -> dict[str, str]:
    """``{name: why}`` of the layers the last :func:`convert` with ``example_input`` left as torch's."""
    return dict(model.__dict__.get(_LEFT_PLAIN, {}))


def _keep_once(model: nn.Module, example_input) -> dict[str, str]:
    """Turn back converted layers whose kept tensor another layer keeps, until none is found."""
    found: dict[str, str] = {}
    while True:
        candidates = candidates_of(model, _PLAIN_FOR)
        redundant = layers_kept_elsewhere(model, example_input, candidates) if candidates else {}
        if not redundant:
            return found
        for name in redundant:
            _to_plain(candidates[name][0])
        found.update(redundant)


def unconvert(model: nn.Module) -> nn.Module:
    """Undo :func:`convert` in place: every XConv layer and saver becomes its torch layer."""
    for module in model.modules():
        _to_plain(module)
    model.__dict__.pop(_LEFT_PLAIN, None)
    return model


def _to_plain(module: nn.Module) -> None:
    plain = _PLAIN_FOR.get(type(module))
    if plain is not None:
        if isinstance(module, XConvMixin):
            for setting in ("probes", "probe", "fallback", "_xconv_calls"):
                module.__dict__.pop(setting, None)
        module.__class__ = plain


def set_probes(model: nn.Module, probes: int, probe: str | None = None) -> int:
    """Set the probe count of every XConv layer (linear ones too), and the convolutions' probe kind
    unless ``probe`` is None (linear layers keep theirs: :mod:`xconv.linear`); returns how many."""
    probes = check_probes(probes)
    probe = check_probe_kind(probe) if probe is not None else None
    layers = list(xconv_layers(model))
    for _, layer in layers:
        keeps_kind = probe is None or isinstance(layer, XLinear)
        layer.set_xconv(probes=probes, probe=layer.probe if keeps_kind else probe)
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


def _layers_without_saving(model, probes, probe, linear, example_input) -> set[str]:
    """Names of convolutions (and, with ``linear``, linear layers) none of whose calls at
    ``example_input`` would sketch.

    The per-call rule of the XConv layers (:func:`xconv.layers.sketch_saves_memory`: the sketch keeps
    fewer numbers per sample than the input), applied ahead of time to every call of a dry run
    at ``example_input``: a layer every call of which would fall back to exact is left plain
    (exact for every input, nothing to decide per call); a layer with at least one call that would
    sketch is converted, and decides call by call.
    """
    if example_input is None or probes == 0:
        return set()
    decisions: dict[str, list[bool]] = {}  # name: for each call, whether it would sketch
    handles = []
    for name, module in model.named_modules():
        if type(module) is nn.Linear:  # converted only with ``linear`` (subclasses never)
            kind = linear
        elif isinstance(module, XLinear):
            kind = linear or module.probe
        else:
            kind = probe if type(module) in XCONV_FOR or isinstance(module, XConvMixin) else None
        if kind is not None:
            def record(mod, args, name=name, kind=kind):
                shape = sample_shape_of(mod, args[0])  # (C_in, *spatial), or (in_features,)
                decisions.setdefault(name, []).append(shape is not None and sketch_saves_memory(kind, probes, shape))
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
    return {name for name, sketches in decisions.items() if not any(sketches)}
