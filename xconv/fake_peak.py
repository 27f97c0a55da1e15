"""Peak memory of one training step, measured on fake tensors: any batch, any machine, nothing allocated.

:func:`fake_peak` runs one real training step (forward, loss, backward, optimizer
step) of a model on *fake* tensors (``torch._subclasses.fake_tensor.FakeTensorMode``:
tensors with a shape, dtype and device but no data) under PyTorch's ``MemTracker``
(``torch.distributed._tools.mem_tracker``), which follows every tensor storage as it
is created and freed. The answer is the peak of live tensor bytes during the step,
by category: parameters, buffers, gradients, optimizer state, inputs, activations
(tensors made in forward) and temporaries (made in backward). A ResNet-18 step at
batch 1392 (about 70 GB) takes seconds on a laptop CPU and allocates nothing.

    import xconv
    from xconv.fake_peak import fake_peak
    model = xconv.convert(torchvision.models.resnet18(), probes=16)
    peak = fake_peak(model, (1392, 3, 224, 224), loss_fn=xconv.fake_peak.cross_entropy(1000))
    peak.total_bytes, peak.by_category  # {'parameters': ..., 'activations': ..., ...}

The model is left untouched, and so are XConv's and torch's random streams: for the step, each parameter and buffer is replaced by a
fake one with the requested device and dtype, and put back afterwards. So the model
may live anywhere, including on the ``meta`` device (a zero-argument factory is
called under ``torch.device("meta")``: a model too large for this machine costs nothing).

What it measures, and how that compares with ``torch.cuda.max_memory_allocated``
-----------------------------------------------------------------------------
The sum of the bytes of every live tensor storage, at its highest point during the
step. That is what the CUDA caching allocator's ``max_memory_allocated`` counts,
except for:

* allocator rounding: CUDA rounds every block up to 512 bytes; MemTracker applies
  this on ``cuda`` devices only (on ``cpu`` at most 511 bytes per live tensor are missing);
* memory a kernel allocates internally without a tensor (cuDNN convolution
  workspaces, cuBLAS workspaces): not seen;
* kernel choices that depend on the device. A fake CUDA tensor needs a real CUDA
  context for backward (the autograd engine asks the driver: pytorch issue #92627),
  so on a machine without a GPU the step runs as ``cpu`` (``device=None`` picks
  ``cuda`` when a GPU is usable, else ``cpu``). The shapes are the same; what
  differs is what a few ops save: CPU dropout keeps a float noise tensor, CUDA's
  fused dropout a bool mask (4 bytes against 1 per element); CPU BatchNorm keeps
  the same tensors as CUDA's native kernel (cuDNN's adds a small reserve).

XConv runs under fake tensors like any layer: its call seeds are pure Python
(:mod:`xconv.rng`) and its probes are drawn as fake tensors (:mod:`xconv.probes`).
``torch.utils.checkpoint`` (and :func:`xconv.checkpoint_sequential`) runs as well:
its recomputation in backward is counted (MemTracker's caveat: between activations
and temporaries it may misattribute during recomputation; the total is right).

The step, in order (``zero_grad`` chooses where gradients are released):

1. a warm-up that only creates state, no forward: zero gradients and one optimizer
   step, so momentum buffers or Adam moments exist as in a running training loop;
2. ``"before_forward"`` (default): ``optimizer.zero_grad()`` (gradients freed), forward,
   loss, backward, ``optimizer.step()``; ``"after_forward"``: forward, loss,
   ``zero_grad()``, backward, step (the XConv paper's measured loop: the previous
   step's gradients are alive during forward); ``"keep"``: ``zero_grad(set_to_none=False)``
   first, gradients allocated throughout.

Without an optimizer (``optimizer=None``) the step is forward, loss and backward, and
gradients are released like ``model.zero_grad`` would.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves

from . import rng

__all__ = ["fake_peak", "FakePeak", "cross_entropy", "CATEGORIES", "ZERO_GRAD_MODES", "default_device"]

#: Report categories, from MemTracker's reference types.
CATEGORIES = {"Parameter": "parameters", "Buffer": "buffers", "Gradient": "gradients",
              "Optstate": "optimizer_state", "Other": "inputs", "Activation": "activations",
              "Temp": "temporaries"}
ZERO_GRAD_MODES = ("before_forward", "after_forward", "keep")


@dataclass
class FakePeak:
    """The peak of one fake training step (bytes), on ``device``.

    ``by_category`` splits ``total_bytes``: parameters, buffers, gradients,
    optimizer_state, inputs (the batch), activations (made in forward),
    temporaries (made in backward). ``phase`` is where the peak was reached
    (``forward``, ``backward`` or ``optimizer``); ``after_forward_bytes`` what was
    alive when backward started. ``other_devices``: peaks on other devices (CPU
    scalars of some optimizers), by category. ``seconds``: wall-clock of the step.
    """

    device: torch.device
    total_bytes: int
    by_category: dict[str, int]
    phase: str
    after_forward_bytes: int
    seconds: float
    other_devices: dict[str, dict[str, int]] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = ", ".join(f"{name} {_format_bytes(value)}" for name, value in self.by_category.items() if value)
        return f"peak {_format_bytes(self.total_bytes)} on {self.device} in {self.phase} ({parts})"


def _format_bytes(nbytes: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{nbytes} B"


def default_device() -> torch.device:
    """``cuda`` if a GPU is usable (fake CUDA tensors need its context for backward), else ``cpu``."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def cross_entropy(classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``loss_fn``: cross-entropy of ``(B, classes)`` logits against (fake) labels, made inside the step."""
    if not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be an integer >= 1, got {classes!r}")

    def loss(output: torch.Tensor) -> torch.Tensor:
        labels = torch.randint(0, classes, output.shape[:1], device=output.device)
        return F.cross_entropy(output, labels)
    return loss


def _sum_of_outputs(output) -> torch.Tensor:
    leaves = [t for t in tree_leaves(output)
              if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]
    if not leaves:
        raise ValueError("the model's output has no floating-point tensor that requires grad: give a loss_fn")
    return sum(t.float().sum() for t in leaves)


def fake_peak(model: nn.Module | Callable[[], nn.Module],
              inputs: Sequence[int] | Sequence[Sequence[int]] | Callable[[], object], *,
              loss_fn: Callable[[object], torch.Tensor] | None = None,
              optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
              zero_grad: str = "before_forward",
              device: torch.device | str | None = None,
              dtype: torch.dtype | None = None,
              fake: bool = True) -> FakePeak:
    """Peak memory of one training step of ``model`` on fake tensors (see the module docstring).

    Args:
        model: an ``nn.Module`` (any device, ``meta`` included; left untouched), or a
            zero-argument factory returning one, called under ``torch.device("meta")``.
            Its ``training`` flag is used as it is (call ``model.train()`` first).
        inputs: the batch: one shape ``(B, C, H, W)``, a list of shapes (several
            positional inputs), or a zero-argument callable returning an input or a
            tuple of positional inputs, called inside fake mode with ``device`` as the
            default device (so ``torch.randn(...)`` there costs nothing).
            Shapes make inputs of ``dtype`` (default: torch's default dtype).
        loss_fn: ``loss_fn(output) -> scalar``; default: the sum of the output's
            floating tensors. :func:`cross_entropy` makes a classification loss.
        optimizer: ``optimizer(params) -> torch.optim.Optimizer``, e.g.
            ``functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)``; its state counts.
            None: no optimizer step.
        zero_grad: ``"before_forward"``, ``"after_forward"`` or ``"keep"`` (see the module docstring).
        device: the fake device (default :func:`default_device`). ``cuda`` without a
            usable GPU is refused: backward on fake CUDA tensors needs a CUDA context.
        dtype: cast floating parameters and buffers (and inputs given as shapes) to it;
            None keeps the model's dtypes.
        fake: False runs the very same step on real tensors (it allocates: parameters are
            copies, or zeros for a ``meta`` model), to check the fake figure against a real
            run (MemTracker on real tensors, ``torch.cuda.max_memory_allocated``).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    if zero_grad not in ZERO_GRAD_MODES:
        raise ValueError(f"zero_grad must be one of {', '.join(ZERO_GRAD_MODES)}, got {zero_grad!r}")
    device = default_device() if device is None else torch.device(device)
    if device.type == "cuda":
        if fake and not torch.cuda.is_available():
            raise ValueError("device='cuda' needs a usable GPU: backward on fake CUDA tensors needs a CUDA context "
                             "(pytorch issue #92627); measure with device='cpu' (see xconv.fake_peak's docstring)")
        torch.empty(1, device=device)  # initialises the CUDA context the autograd engine asks for
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a zero-argument factory, got {type(model).__name__}")
        with torch.device("meta"):
            model = model()
        if not isinstance(model, nn.Module):
            raise TypeError(f"the model factory returned {type(model).__name__}, not an nn.Module")
    loss_fn = _sum_of_outputs if loss_fn is None else loss_fn

    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    with _random_streams_kept(device), _dispatch_cache_kept(), _fake_state(model, mode, device, dtype, fake), mode:
        batch = _make_inputs(inputs, device, dtype)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = optimizer(params) if optimizer is not None else None
        _warm_up(params, opt)
        tracker = _tracker()
        tracker.track_external(model, *([opt] if opt is not None else []), *batch)
        phases, peaks = [], []

        def mark(phase: str) -> None:
            phases.append(phase)
            peaks.append(sum(snap["Total"] for snap in tracker.get_tracker_snapshot("peak").values()))

        started = time.perf_counter()
        with tracker:
            mark("start")
            if zero_grad != "after_forward":
                _release_gradients(model, opt, set_to_none=zero_grad == "before_forward")
            loss = loss_fn(model(*batch))
            if zero_grad == "after_forward":
                _release_gradients(model, opt, set_to_none=True)
            mark("forward")
            after_forward = tracker.get_tracker_snapshot("current").get(device, {}).get("Total", 0)
            loss.backward()
            del loss
            mark("backward")
            if opt is not None:
                opt.step()
                mark("optimizer")
        seconds = time.perf_counter() - started
        snapshot = tracker.get_tracker_snapshot("peak")
        del batch, opt, params, tracker

    phase = "forward"
    for index in range(1, len(peaks)):
        if peaks[index] > peaks[index - 1]:
            phase = phases[index]
    mine = snapshot.pop(device, {})
    return FakePeak(device=device, total_bytes=int(mine.get("Total", 0)), by_category=_categories(mine),
                    phase=phase, after_forward_bytes=int(after_forward), seconds=seconds,
                    other_devices={str(d): _categories(s) for d, s in snapshot.items() if s.get("Total", 0)})


def _tracker():
    """A MemTracker that keeps the step's peak only (not every module's): about twice as fast on
    the many small ops of XConv's probe chunks. Plain MemTracker if its internals are not as expected."""
    from torch.distributed._tools import mem_tracker

    class GlobalPeakTracker(mem_tracker.MemTracker):
        def _update_peak_stats(self, peak_state) -> None:
            for dev, dev_snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < dev_snap[mem_tracker._TOTAL_KEY]:
                    self._peak_mem[dev] = dev_snap[mem_tracker._TOTAL_KEY]
                    self._peak_mem_snap[dev] = dict(dev_snap)

    tracker = GlobalPeakTracker()
    expected = ("_curr_mem_snap", "_peak_mem", "_peak_mem_snap")
    if not (all(hasattr(tracker, name) for name in expected) and hasattr(mem_tracker, "_TOTAL_KEY")):
        return mem_tracker.MemTracker()
    return tracker


@contextlib.contextmanager
def _dispatch_cache_kept():
    """Drop the entries this step added to FakeTensorMode's process-wide dispatch cache: it helps
    within a step (probe chunks repeat shapes), but every new batch size adds megabytes that would
    pile up over the hundreds of steps of a batch search."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    cache = getattr(FakeTensorMode, "cache", None)
    known = len(cache) if isinstance(cache, dict) else None
    try:
        yield
    finally:
        if known is not None:
            for key in list(cache)[known:]:  # a dict keeps insertion order: ours came last
                cache.pop(key, None)


@contextlib.contextmanager
def _random_streams_kept(device: torch.device):
    """XConv's stream and torch's generators as they were before the step (a measurement must not
    change what training draws next). Fake tensors draw nothing from torch's generators anyway."""
    xconv_state = rng.get_rng_state()
    try:
        with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else [], device_type="cuda"):
            yield
    finally:
        rng.set_rng_state(xconv_state)


def _categories(snapshot: dict) -> dict[str, int]:
    by_name = {getattr(key, "value", key): int(value) for key, value in snapshot.items()}
    return {name: by_name.get(reftype, 0) for reftype, name in CATEGORIES.items()}


def _make_inputs(inputs, device: torch.device, dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
    if callable(inputs):
        with torch.device(device):
            made = inputs()
        return made if isinstance(made, tuple) else (made,)
    shapes = list(inputs)
    if shapes and all(isinstance(n, int) for n in shapes):
        shapes = [shapes]
    if not shapes or not all(isinstance(s, (tuple, list, torch.Size)) and all(isinstance(n, int) and n >= 0 for n in s)
                             for s in shapes):
        raise ValueError(f"inputs must be a shape (B, C, H, W), a list of shapes or a callable, got {inputs!r}")
    return tuple(torch.randn(tuple(shape), dtype=dtype, device=device) for shape in shapes)


def _warm_up(params: list[nn.Parameter], opt: torch.optim.Optimizer | None) -> None:
    """Gradients and optimizer state as after a previous step (no forward needed: all fake)."""
    for p in params:
        p.grad = torch.zeros_like(p)
    if opt is not None:
        opt.step()


def _release_gradients(model: nn.Module, opt, *, set_to_none: bool) -> None:
    if opt is not None:
        opt.zero_grad(set_to_none=set_to_none)
    else:
        model.zero_grad(set_to_none=set_to_none)


@contextlib.contextmanager
def _fake_state(model: nn.Module, mode, device: torch.device, dtype: torch.dtype | None, fake: bool = True):
    """Replace every parameter and buffer of ``model`` by a fake one (on ``device``, floating ones in
    ``dtype``) for the duration; shared tensors stay shared; the originals come back on exit.
    ``fake=False``: real copies instead (zeros for ``meta`` tensors)."""
    originals: list[tuple[dict, str, object]] = []
    fakes: dict = {}

    def fake_of(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in fakes:
            target = dtype if dtype is not None and t.is_floating_point() else t.dtype
            with mode, torch.no_grad():
                if fake or t.device.type == "meta":
                    made = torch.empty_strided(t.size(), t.stride(), dtype=target, device=device)
                    fakes[id(t)] = made if fake else made.zero_()
                else:
                    fakes[id(t)] = t.detach().to(device=device, dtype=target, copy=True)
        return fakes[id(t)]

    try:
        for module in model.modules():
            for table in (module._parameters, module._buffers):
                for name, tensor in list(table.items()):
                    if tensor is None:
                        continue
                    originals.append((table, name, tensor))
                    stand_in = fake_of(tensor)
                    if isinstance(tensor, nn.Parameter):
                        key = ("parameter", id(tensor))
                        if key not in fakes:
                            fakes[key] = nn.Parameter(stand_in, requires_grad=tensor.requires_grad)
                        stand_in = fakes[key]
                    table[name] = stand_in
        yield model
    finally:
        for table, name, tensor in reversed(originals):
            table[name] = tensor
