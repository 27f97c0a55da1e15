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
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn.modules.module import (register_module_forward_hook,
                                     register_module_forward_pre_hook)

__all__ = ["SavedTensorMeter", "PeakMemory", "saved_bytes"]

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
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self.total_bytes = 0
        self.bytes_by_kind: dict[str, int] = defaultdict(int)
        self.bytes_by_module: dict[str, int] = defaultdict(int)
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
        if key is None or key in self._parameter_storages or key in self._seen_storages:
            return tensor.detach()
        self._seen_storages.add(key)
        nbytes = tensor.untyped_storage().nbytes()
        kind, name = self._module_stack[-1] if self._module_stack else (OUTSIDE_MODULES, None)
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

    def counted(self, tensor: torch.Tensor) -> bool:
        """Whether the storage of ``tensor`` is among the bytes counted (it was saved)."""
        return _storage_key(tensor) in self._seen_storages

    def summary(self) -> dict:
        return {"saved_bytes": self.total_bytes, "saved_bytes_by_kind": dict(self.bytes_by_kind)}


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
