"""Per-step activation memory, peak memory and step time of a training run.

The first ``memory_steps`` training steps run under the library's meters
(``SavedTensorMeter`` over the forward pass, ``PeakMemory`` over forward +
backward); the last of them is reported (the first is a warm-up, as in the
paper's protocol). Step time is wall-clock from batch start to batch end
(optimiser step included), synchronised on CUDA, median over the steps that
were not metered and not the first.

Fake peak: the model's inputs of the first training step are recorded (shapes and
dtypes, by a forward pre-hook), and when training ends one more training step of the
same model at those inputs runs on fake tensors (``xconv.memory.fake_peak``: PyTorch's
MemTracker under FakeTensorMode, nothing allocated) with the run's optimiser class and
settings. Its loss is the sum of the model's output (the task's own loss keeps a few
scalars more). The figure is device-independent on CPU and the GPU's allocator figure
on CUDA up to rounding and cuDNN workspaces (``xconv/fake_peak.py``); ``summary.json``
records it under ``fake_peak`` by category.
"""
from __future__ import annotations

import functools
import inspect
import statistics
import time

import lightning as L
import torch

from xconv.memory import PeakMemory, SavedTensorMeter, fake_peak


class StepMonitor(L.Callback):
    def __init__(self, memory_steps: int = 2):
        self.memory_steps = memory_steps
        self.step_seconds: list[float] = []  # every step, in order
        self.metered: list[dict] = []
        self.batch_size: int | None = None
        self._meter = self._peak = None
        self._start = 0.0
        self.model_inputs: list | None = None  # (shape, dtype) of each positional input, or the value itself
        self.fake: dict | None = None
        self._input_hook = None

    def on_train_start(self, trainer, pl_module):
        model = getattr(pl_module, "model", pl_module)
        self._input_hook = model.register_forward_pre_hook(self._record_inputs)

    def _record_inputs(self, module, args):
        if self.model_inputs is None and torch.is_grad_enabled():
            self.model_inputs = [(tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a for a in args]

    def on_train_end(self, trainer, pl_module):
        if self._input_hook is not None:
            self._input_hook.remove()
        if self.model_inputs is not None and trainer.is_global_zero:
            self.fake = fake_step_peak(getattr(pl_module, "model", pl_module), self.model_inputs,
                                       trainer.optimizers[0] if trainer.optimizers else None, pl_module.device)

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
            "fake_peak": self.fake,
            "time": {"median_step_s": median, "steps_timed": len(timed), "batch_size": self.batch_size,
                     "samples_per_s": (self.batch_size / median) if self.batch_size and median > 0 else None},
        }


def fake_step_peak(model: torch.nn.Module, inputs: list, optimizer, device: torch.device) -> dict:
    """One training step of ``model`` at ``inputs`` ((shape, dtype) pairs) on fake tensors: peak bytes
    in all and by category, the phase of the peak, the device measured as."""
    def make_inputs():
        return tuple(torch.zeros(item[0], dtype=item[1]) if isinstance(item, tuple) and len(item) == 2
                     and isinstance(item[1], torch.dtype) else item for item in inputs)

    build = None
    if optimizer is not None:  # the run's optimiser class and settings (defaults its constructor takes)
        takes = inspect.signature(type(optimizer)).parameters
        build = functools.partial(type(optimizer), **{key: value for key, value in optimizer.defaults.items()
                                                      if key in takes})
    was_training = model.training
    model.train()
    try:
        peak = fake_peak(model, make_inputs, optimizer=build, device=device)
    except Exception as error:  # a model fake tensors cannot run: the run's own figures stand
        return {"bytes": None, "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    finally:
        model.train(was_training)
    return {"bytes": peak.total_bytes, "by_category": dict(peak.by_category), "phase": peak.phase,
            "device": str(peak.device), "source": "fake_tensor_mem_tracker"}


def _batch_size(batch) -> int | None:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    return None
