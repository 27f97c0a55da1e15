"""Memory meters: what autograd keeps for backward, and peak memory.

``SavedTensorMeter`` counts the bytes of every tensor autograd saves during a
forward pass (``torch.autograd.graph.saved_tensors_hooks``), each storage once,
parameters excluded, grouped by the class of the innermost module that was
running when the tensor was saved. It is exact and device-independent: the
headline activation-memory figure.

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


class SavedTensorMeter:
    """Context manager measuring the activation memory of the forward passes in it.

    Example::

        with SavedTensorMeter() as meter:
            loss = model(x).sum()
        meter.total_bytes, meter.bytes_by_kind  # {'Conv2d': ..., 'BatchNorm2d': ...}
        loss.backward()
    """

    def __init__(self) -> None:
        self.total_bytes = 0
        self.bytes_by_kind: dict[str, int] = defaultdict(int)
        self.tensors_saved = 0
        self._seen_storages: set[tuple] = set()
        self._parameter_storages: set[tuple] = set()
        self._module_stack: list[str] = []
        self._handles = []
        self._hooks = None

    # Module tracking ----------------------------------------------------------
    def _enter_module(self, module: nn.Module, args):
        self._module_stack.append(type(module).__name__)
        for parameter in module.parameters(recurse=False):
            self._parameter_storages.add(_storage_key(parameter))

    def _leave_module(self, module: nn.Module, args, output):
        if self._module_stack:
            self._module_stack.pop()

    # Saved tensors ------------------------------------------------------------
    def _pack(self, tensor: torch.Tensor):
        if isinstance(tensor, nn.Parameter):
            return tensor
        key = _storage_key(tensor)
        if key is None or key in self._parameter_storages or key in self._seen_storages:
            return tensor
        self._seen_storages.add(key)
        nbytes = tensor.untyped_storage().nbytes()
        kind = self._module_stack[-1] if self._module_stack else OUTSIDE_MODULES
        self.total_bytes += nbytes
        self.bytes_by_kind[kind] += nbytes
        self.tensors_saved += 1
        return tensor

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

    def summary(self) -> dict:
        return {"saved_bytes": self.total_bytes, "saved_bytes_by_kind": dict(self.bytes_by_kind)}


def _storage_key(tensor: torch.Tensor):
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse or otherwise storage-less tensors
        return None
    return (tensor.device, storage.data_ptr(), storage.nbytes())


def saved_bytes(model: nn.Module, *inputs, **kwargs) -> SavedTensorMeter:
    """Run ``model(*inputs, **kwargs)`` once and return the meter of its saved tensors."""
    with SavedTensorMeter() as meter:
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
