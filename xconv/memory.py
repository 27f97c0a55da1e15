"""Memory meters: what autograd keeps for backward, and peak memory.

``SavedTensorMeter`` counts the bytes of every tensor autograd saves during a
forward pass (``torch.autograd.graph.saved_tensors_hooks``), each storage once,
parameters excluded, grouped by the class of the innermost module that was
running when the tensor was saved (and, given the model, by that module's
qualified name, in the order the modules first ran). It is exact and
device-independent: the headline activation-memory figure.

``PeakMemory`` reports peak memory during a block: the CUDA caching
allocator's ``max_memory_allocated`` on GPU, and on CPU the growth of the
process's peak resident set size (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``), a coarser secondary figure.

``fallback_report(model)`` names the XConv layers whose calls fell back to exact
backprop because their sketch would not have been smaller than their input
(:mod:`xconv.layers`, "Never more than exact"), with how many calls and why;
``SavedTensorMeter(model).exact_fallbacks`` names them for the passes it metered.

``kept_tensors(output)`` / ``kept_bytes(output)`` count the same thing a second,
independent way, after the forward: by walking the autograd graph the output
hangs on. The hooks see only what autograd saves (the saved tensors of built-in
operations, ``ctx.save_for_backward``); the walk also sees what a custom autograd
Function keeps as a plain ``ctx`` attribute (``ctx.leak = x``), which holds
memory just the same.
"""
from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from dataclasses import dataclass, field, fields, is_dataclass

import torch
import torch.nn as nn
from torch.nn.modules.module import (register_module_forward_hook,
                                     register_module_forward_pre_hook)

from . import rng
from .fake_peak import FakePeak, fake_peak
from .layers import XConvCalls, XConvMixin

__all__ = ["SavedTensorMeter", "PeakMemory", "saved_bytes", "KeptTensor", "kept_tensors", "kept_bytes",
           "fallback_report", "FakePeak", "fake_peak"]

OUTSIDE_MODULES = "(no module)"
ROOT_MODULE = "<root>"


class SavedTensorMeter:
    """Context manager measuring the activation memory of the forward passes in it.

    Example::

        with SavedTensorMeter() as meter:
            loss = model(x).sum()
        meter.total_bytes, meter.bytes_by_kind  # {'Conv2d': ..., 'BatchNorm2d': ...}
        loss.backward()

    With ``SavedTensorMeter(model)`` the bytes are also grouped by the qualified
    name of the innermost module of ``model`` that saved them
    (``meter.bytes_by_module``, e.g. ``{'conv1': ..., 'layer1.0.bn1': ...}``;
    the root module is ``'<root>'``), and ``meter.call_order`` lists the names of
    every module of ``model`` in the order they first ran, savers or not.
    Modules outside ``model`` count under ``'(no module)'`` there.
    ``meter.storages_by_module`` names the storages each module saved, a storage that
    several modules saved under each of them (what :mod:`xconv.keep_once` reads).

    Also with ``model``: ``meter.xconv_calls`` maps the name of each XConv layer of ``model``
    that made a call which could use the estimator inside the block to an
    :class:`xconv.layers.XConvCalls` of those calls (sketched, forced, exact and why), and
    ``meter.exact_fallbacks`` (``{name: calls}``) names the layers that kept their input and
    computed exact gradients because their sketch would not have been smaller (their bytes are
    the plain layer's). The counts are the layers' own (``layer.calls``) taken at entry and exit.
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self.total_bytes = 0
        self.bytes_by_kind: dict[str, int] = defaultdict(int)
        self.bytes_by_module: dict[str, int] = defaultdict(int)
        # with ``model``: the storages each module saved, shared ones under every module that saved them
        self.storages_by_module: dict[str, set[tuple]] = defaultdict(set)
        self.call_order: list[str] = []
        self.tensors_saved = 0
        self._names = ({id(module): name or ROOT_MODULE for name, module in model.named_modules()}
                       if model is not None else None)
        self._seen_names: set[str] = set()
        self._seen_storages: set[tuple] = set()
        self._parameter_storages: set[tuple] = set()
        self._module_stack: list[tuple[str, str]] = []  # (kind, qualified name or None)
        self._handles = []
        self._hooks = None
        self._xconv = ({name or ROOT_MODULE: module for name, module in model.named_modules()
                        if isinstance(module, XConvMixin)} if model is not None else {})
        self._calls_before: dict[str, XConvCalls] = {}
        self.xconv_calls: dict[str, XConvCalls] = {}

    @property
    def exact_fallbacks(self) -> dict[str, int]:
        """``{layer name: calls}`` of the XConv layers of ``model`` that fell back to exact in the block."""
        return {name: calls.exact for name, calls in self.xconv_calls.items() if calls.exact}

    # Module tracking ----------------------------------------------------------
    def _enter_module(self, module: nn.Module, args):
        name = self._names.get(id(module)) if self._names is not None else None
        if name is None and self._module_stack:  # a module outside the model: keep the enclosing name
            name = self._module_stack[-1][1]
        elif name is not None and name not in self._seen_names:
            self._seen_names.add(name)
            self.call_order.append(name)
        self._module_stack.append((type(module).__name__, name))
        for parameter in module.parameters(recurse=False):
            self._parameter_storages.add(_storage_key(parameter))

    def _leave_module(self, module: nn.Module, args, output):
        if self._module_stack:
            self._module_stack.pop()

    # Saved tensors ------------------------------------------------------------
    def _pack(self, tensor: torch.Tensor):
        # Keep a detached alias, never ``tensor`` itself: a saved *output* would otherwise hold its
        # own grad_fn, a C++ reference cycle that no garbage collection frees when the graph is
        # dropped without a backward (pytorch/pytorch#115255). Autograd restores the metadata on unpack.
        if isinstance(tensor, nn.Parameter):
            return tensor.detach()
        key = _storage_key(tensor)
        if key is None or key in self._parameter_storages:
            return tensor.detach()
        kind, name = self._module_stack[-1] if self._module_stack else (OUTSIDE_MODULES, None)
        if self._names is not None:
            self.storages_by_module[name or OUTSIDE_MODULES].add(key)
        if key in self._seen_storages:
            return tensor.detach()
        self._seen_storages.add(key)
        nbytes = tensor.untyped_storage().nbytes()
        self.total_bytes += nbytes
        self.bytes_by_kind[kind] += nbytes
        if self._names is not None:
            self.bytes_by_module[name or OUTSIDE_MODULES] += nbytes
        self.tensors_saved += 1
        return tensor.detach()

    @staticmethod
    def _unpack(tensor):
        return tensor

    def __enter__(self) -> "SavedTensorMeter":
        self._calls_before = {name: _copy_calls(layer.calls) for name, layer in self._xconv.items()}
        self._handles = [register_module_forward_pre_hook(self._enter_module),
                         register_module_forward_hook(self._leave_module)]
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._module_stack.clear()
        self.bytes_by_kind = dict(self.bytes_by_kind)
        self.bytes_by_module = dict(self.bytes_by_module)
        for name, layer in self._xconv.items():
            calls = _calls_since(self._calls_before[name], layer.calls)
            if calls.total:
                self.xconv_calls[name] = calls

    def counted(self, tensor: torch.Tensor) -> bool:
        """Whether the storage of ``tensor`` is among the bytes counted (it was saved)."""
        return _storage_key(tensor) in self._seen_storages

    def summary(self) -> dict:
        return {"saved_bytes": self.total_bytes, "saved_bytes_by_kind": dict(self.bytes_by_kind)}


def _copy_calls(calls: XConvCalls) -> XConvCalls:
    return XConvCalls(calls.sketched, calls.exact, calls.forced, dict(calls.no_saving))


def _calls_since(before: XConvCalls, now: XConvCalls) -> XConvCalls:
    """The calls counted in ``now`` but not yet in ``before`` (``now`` reset in between: all of ``now``)."""
    if now.total < before.total:
        before = XConvCalls()
    no_saving = {why: count - before.no_saving.get(why, 0) for why, count in now.no_saving.items()}
    return XConvCalls(now.sketched - before.sketched, now.exact - before.exact, now.forced - before.forced,
                      {why: count for why, count in no_saving.items() if count})


def fallback_report(model: nn.Module) -> dict[str, dict]:
    """The XConv layers of ``model`` with calls whose sketch saved no memory, by qualified name.

    Counts every call that could use the estimator since the layer was made (or since
    ``layer.calls.reset()``); lists each layer with at least one call that fell back to exact
    (``exact_calls``) or sketched only because fallback was off (``forced_calls``)::

        {"layer4.0.conv2": {"exact_calls": 3, "sketched_calls": 0, "forced_calls": 0,
                            "no_saving": [{"input_shape": [64, 4, 4], "probes": 16, "probe": "channel",
                                           "sketch_numbers": 1024, "input_numbers": 1024, "calls": 3}]}}

    ``no_saving`` says why: per sample the sketch keeps ``sketch_numbers`` numbers, not fewer than
    the ``input_numbers`` of the input (shape ``input_shape`` = ``(C_in, *spatial)``). A fallback
    call kept the input and computed the plain layer's exact gradients. Plain JSON values; an
    empty dict when every call that could sketch saved memory.
    """
    report = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, XConvMixin) or not (layer.calls.exact or layer.calls.forced):
            continue
        calls = layer.calls
        report[name or ROOT_MODULE] = {
            "exact_calls": calls.exact, "sketched_calls": calls.sketched, "forced_calls": calls.forced,
            "no_saving": [{"input_shape": list(why.input_shape), "probes": why.probes, "probe": why.probe,
                           "sketch_numbers": why.sketch_numbers, "input_numbers": why.input_numbers,
                           "calls": count} for why, count in calls.no_saving.items()]}
    return report


@contextlib.contextmanager
def no_side_effects(model: nn.Module):
    """Buffers (BatchNorm statistics), torch's generators and XConv's generator are restored on exit."""
    kept = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    xconv_state = rng.get_rng_state()
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, value in kept:
                    buffer.copy_(value)
            rng.set_rng_state(xconv_state)


def _storage_key(tensor: torch.Tensor):
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse or otherwise storage-less tensors
        return None
    return (tensor.device, storage.data_ptr(), storage.nbytes())


def saved_bytes(model: nn.Module, *inputs, **kwargs) -> SavedTensorMeter:
    """Run ``model(*inputs, **kwargs)`` once and return the meter of its saved tensors
    (grouped by module kind and by module name)."""
    with SavedTensorMeter(model) as meter:
        model(*inputs, **kwargs)
    return meter


def metered_forward(model: nn.Module, *inputs, **kwargs) -> SavedTensorMeter:
    """:func:`saved_bytes` with gradients on and no side effects (:func:`no_side_effects`): what one
    training forward of ``model`` as it stands would keep, its output dropped."""
    with no_side_effects(model), torch.enable_grad(), SavedTensorMeter(model) as meter:
        output = model(*inputs, **kwargs)
        del output
    return meter


# The autograd graph's own count --------------------------------------------------

# C-level slots of a custom Function's ctx that can hold tensors besides its __dict__ (torch
# clears the first four after forward; a Function could still fill them, or ``metadata``).
_CTX_SLOTS = ("to_save", "dirty_tensors", "non_differentiable", "saved_for_forward", "metadata")
_NESTING = 3  # container levels searched inside a ctx attribute: ctx.a[0]["b"].field


@dataclass(frozen=True)
class KeptTensor:
    """One storage the autograd graph keeps: the node, where in it, and the storage's bytes."""

    node: str  # the node's name, e.g. "XConvFunctionBackward"
    where: str  # "saved_tensors[0]", "_saved_input", "ctx.leak", "ctx.cache['x']" ...
    nbytes: int  # bytes of the whole storage (views of one storage share it, as they share memory)


def kept_tensors(*outputs: torch.Tensor, parameters=()) -> list[KeptTensor]:
    """Every storage the autograd graph of ``outputs`` keeps for backward, each once.

    Walks every node reachable from the outputs' ``grad_fn`` (through ``next_functions``)
    and collects, deduplicated by storage (device, address, size):

    * built-in nodes (``ConvolutionBackward0``, ...): their saved tensors, the ``_saved_*``
      attributes (tensors, or tuples of tensors);
    * custom autograd Functions, whose node *is* the ``ctx``: ``ctx.saved_tensors``, every
      tensor-valued attribute of ``ctx.__dict__`` and of the ctx slots ``to_save``,
      ``dirty_tensors``, ``non_differentiable``, ``saved_for_forward`` and ``metadata``,
      including tensors inside lists, tuples, sets, dicts and dataclasses up to three levels
      deep (``ctx.a[0]["b"].field``).

    Excluded: parameters (``nn.Parameter`` objects, the leaves behind the graph's
    ``AccumulateGrad`` nodes that are parameters, and anything sharing a storage with
    ``parameters``: pass ``model.parameters()`` for frozen ones); the graph's leaves
    (``AccumulateGrad.variable``: the caller holds them, the graph only points at them) and the
    outputs, unless a node keeps them too.

    So ``kept_bytes = sum of nbytes(s)`` over the distinct storages ``s`` found, parameters left
    out; the bytes of a storage are all of it (``untyped_storage().nbytes()``), as
    :class:`SavedTensorMeter` counts: a kept view holds its whole storage. For graphs whose
    Functions keep tensors only through ``save_for_backward`` the two counts therefore agree; what the walk
    finds beyond the hooks is what a Function keeps some other way. Call it before backward:
    backward frees saved tensors (then only ctx attributes are left to count). Saved tensors are
    read as unpacked, so under saved-tensor hooks that pack to something other than a tensor
    (offloading, compression) the walk sees what unpacking returns.
    """
    nodes = _graph_nodes(output.grad_fn for output in outputs)
    excluded = {_storage_key(p) for p in parameters}
    excluded |= {_storage_key(node.variable) for node in nodes
                 if isinstance(getattr(node, "variable", None), nn.Parameter)}
    kept, seen = [], set()
    for node in nodes:
        for where, tensor in _node_tensors(node):
            key = _storage_key(tensor)
            if isinstance(tensor, nn.Parameter) or key is None or key in excluded or key in seen:
                continue
            seen.add(key)
            kept.append(KeptTensor(node.name(), where, tensor.untyped_storage().nbytes()))
    return kept


def kept_bytes(*outputs: torch.Tensor, parameters=()) -> int:
    """Total bytes of :func:`kept_tensors`: the memory the autograd graph of ``outputs`` holds."""
    return sum(kept.nbytes for kept in kept_tensors(*outputs, parameters=parameters))


def _graph_nodes(roots) -> list:
    """Every node reachable from ``roots`` (``grad_fn`` objects, None skipped), each once."""
    nodes, seen, stack = [], set(), [root for root in roots if root is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return nodes


def _node_tensors(node):
    """``(where, tensor)`` for every tensor one graph node refers to (see :func:`kept_tensors`)."""
    if isinstance(node, torch.autograd.function.BackwardCFunction):  # a custom Function: the node is ctx
        yield from _tensors_in(_readable(node, "saved_tensors"), "saved_tensors", _NESTING)
        for name in _CTX_SLOTS:
            yield from _tensors_in(_readable(node, name), name, _NESTING)
        for name, value in vars(node).items():
            yield from _tensors_in(value, f"ctx.{name}", _NESTING)
        return
    for name in dir(node):
        if name.startswith("_saved_"):
            yield from _tensors_in(_readable(node, name), name, 1)


def _readable(node, name: str):
    """``getattr(node, name)``, or None where backward already freed it."""
    try:
        return getattr(node, name)
    except RuntimeError:  # "Trying to backward through the graph a second time ..."
        return None


def _tensors_in(value, where: str, depth: int):
    """``(where, tensor)`` for ``value`` if a tensor, else for the tensors inside it, ``depth`` levels."""
    if isinstance(value, torch.Tensor):
        yield where, value
        return
    if depth == 0:
        return
    if isinstance(value, dict):
        items = ((f"{where}[{key!r}]", item) for key, item in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = ((f"{where}[{index}]", item) for index, item in enumerate(value))
    elif is_dataclass(value) and not isinstance(value, type):
        items = ((f"{where}.{f.name}", getattr(value, f.name)) for f in fields(value))
    else:
        return
    for item_where, item in items:
        yield from _tensors_in(item, item_where, depth - 1)


@dataclass
class PeakMemory:
    """Context manager: peak memory growth during the block, in bytes.

    ``source`` names what was measured: ``"cuda_max_memory_allocated"`` or
    ``"cpu_peak_rss_growth"`` (``"unavailable"`` where neither can be read).
    """

    device: torch.device | str = "cpu"
    peak_bytes: int = 0
    source: str = field(default="unavailable", init=False)
    _baseline: int = field(default=0, init=False, repr=False)

    def __enter__(self) -> "PeakMemory":
        device = torch.device(self.device)
        self._cuda = device.type == "cuda"
        if self._cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self._baseline = torch.cuda.memory_allocated(device)
            self.source = "cuda_max_memory_allocated"
        elif _reset_peak_rss():
            self._baseline = _read_status_kib("VmRSS") * 1024
            self.source = "cpu_peak_rss_growth"
        return self

    def __exit__(self, *exc) -> None:
        if self.source == "cuda_max_memory_allocated":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._baseline
        elif self.source == "cpu_peak_rss_growth":
            self.peak_bytes = max(0, _read_status_kib("VmHWM") * 1024 - self._baseline)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _read_status_kib("VmHWM") > 0
    except OSError:
        return False


def _read_status_kib(key: str) -> int:
    with open(f"/proc/{os.getpid()}/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0
