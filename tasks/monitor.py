"""Per-step activation memory, peak memory and step time of a training run.

The first ``memory_steps`` training steps run under the library's meters
(``SavedTensorMeter`` over the forward pass, ``PeakMemory`` over forward +
backward); the last of them is reported (the first is a warm-up, as in the
paper's protocol). Step time is wall-clock from batch start to batch end
(optimiser step included), synchronised on CUDA, median over the steps that
were not metered and not the first.
"""
from __future__ import annotations

import statistics
import time

import lightning as L
import torch

from xconv.memory import PeakMemory, SavedTensorMeter


class StepMonitor(L.Callback):
    def __init__(self, memory_steps: int = 2):
        self.memory_steps = memory_steps
        self.step_seconds: list[float] = []  # every step, in order
        self.metered: list[dict] = []
        self.batch_size: int | None = None
        self._meter = self._peak = None
        self._start = 0.0

    def _synchronize(self, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.batch_size is None:
            self.batch_size = _batch_size(batch)
        self._synchronize(pl_module)
        if len(self.step_seconds) < self.memory_steps:
            self._peak = PeakMemory(pl_module.device).__enter__()
            self._meter = SavedTensorMeter().__enter__()
        self._start = time.perf_counter()

    def on_before_backward(self, trainer, pl_module, loss):
        if self._meter is not None:  # the forward pass is over: stop counting saved tensors
            self._meter.__exit__(None, None, None)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self._peak is not None:
            self._peak.__exit__(None, None, None)
            self.metered.append({"saved_bytes": self._meter.total_bytes,
                                 "saved_bytes_by_kind": dict(self._meter.bytes_by_kind),
                                 "peak_bytes": self._peak.peak_bytes, "peak_source": self._peak.source})
            self._meter = self._peak = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._synchronize(pl_module)
        self.step_seconds.append(time.perf_counter() - self._start)
        if self._meter is not None:  # a step without backward (e.g. skipped): close the meters
            self._meter.__exit__(None, None, None)
            self._peak.__exit__(None, None, None)
            self._meter = self._peak = None

    def summary(self) -> dict:
        timed = self.step_seconds[max(self.memory_steps, 1):] or self.step_seconds[1:] or self.step_seconds
        median = statistics.median(timed) if timed else float("nan")
        last = self.metered[-1] if self.metered else {}
        return {
            "activation_memory": {"saved_bytes": last.get("saved_bytes"),
                                  "saved_bytes_by_kind": last.get("saved_bytes_by_kind", {}),
                                  "measured_on_step": len(self.metered)},
            "peak_memory": {"bytes": last.get("peak_bytes"), "source": last.get("peak_source")},
            "time": {"median_step_s": median, "steps_timed": len(timed), "batch_size": self.batch_size,
                     "samples_per_s": (self.batch_size / median) if self.batch_size and median > 0 else None},
        }


def _batch_size(batch) -> int | None:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    return None
