"""Cap the probes of layers that cannot use them, with a warning naming each layer.

A layer's XConv sketch keeps ``r * C_in`` numbers per sample (channel probes) or
``r`` (the other kinds) instead of the ``C_in * H * W`` of its input. Once the
sketch is no smaller than the input (``r >= H * W`` for channel probes, ``r >= C_in
* H * W`` otherwise) the estimate costs at least the memory of exact backprop and is
still noisy, so such a layer is better off exact.

The XConv layers apply that rule themselves, call by call (``xconv.layers``, "Never
more than exact": such a call falls back to the plain layer, keeps its input and
computes exact gradients; ``xconv.memory.fallback_report`` counts these calls).
:class:`ProbeCap` makes the same decision visible and permanent: in a forward
pre-hook during training it asks each XConv layer whether this call would fall
back (``layer.falls_back(input)``, the layer's own rule, so a layer with
``fallback=False`` is never capped) and, if so, sets the layer to exact backprop
(``probes=0``) before that forward runs. The call, and every later one, is then
exact: what the fallback would have computed, bit for bit, with the same saved
tensors and no probe seed drawn. So under the cap no training call falls back
(the per-call count stays zero) and the capped layers are what fell back.
``xconv.convert(..., example_input=...)`` applies the same rule before training.

After the batch, one warning (one line) lists the layers capped in it, each with its
input and the largest probe count that would still save memory there. ``summary.json``
lists the capped layers under ``probe_caps`` (and they drop out of
``gradient.xconv_layers``).
"""
from __future__ import annotations

import functools
import math
import warnings

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

import xconv
from xconv.convert import sketch_numbers_per_sample


class ProbeCapWarning(UserWarning):
    """A layer got more probes than it can use and was set to exact backprop."""


def most_useful_probes(probe: str, input_shape) -> int:
    """The largest probe count whose sketch is smaller than one sample of ``input_shape`` (N, C, *spatial):
    the largest ``r`` with ``xconv.layers.sketch_saves_memory(probe, r, input_shape[1:])``."""
    per_sample = math.prod(input_shape[1:])
    return (per_sample - 1) // sketch_numbers_per_sample(probe, 1, input_shape[1])


def cap_message(capped: list[dict]) -> str:
    """One line listing capped layers: ``layer (probes, kind, input, most useful probes)``."""
    layers = ", ".join(f"{cap['layer']} ({cap['probes']} {cap['probe']} probes on "
                       f"{'x'.join(map(str, cap['input_shape']))}, at most {cap['most_useful_probes']})"
                       for cap in capped)
    return (f"probes capped to 0 (exact backprop) in {len(capped)} layer{'s' if len(capped) > 1 else ''} whose "
            f"input is too small for a sketch to save memory: {layers} (summary.json: probe_caps)")


@rank_zero_only
def _warn_in_one_line(message: str) -> None:
    """A ProbeCapWarning without the source line Python prints under a warning (line 0 has none)."""
    warnings.warn_explicit(message, ProbeCapWarning, __file__, 0)


class ProbeCap(L.Callback):
    def __init__(self):
        self.capped: list[dict] = []
        self._warned = 0  # how many of them a warning has listed
        self._handles = []

    def on_train_start(self, trainer, pl_module):
        model = getattr(pl_module, "model", pl_module)  # names as in model.exact_layers
        for name, layer in xconv.xconv_layers(model):
            self._handles.append(layer.register_forward_pre_hook(functools.partial(self._check, name)))

    def _check(self, name, layer, args):
        if not layer.falls_back(args[0]):  # the layer's own per-call rule (it counts nothing)
            return
        sample = layer.sample_shape(args[0])  # (C_in, *spatial)
        cap = most_useful_probes(layer.probe, (1, *sample))
        self.capped.append({"layer": name, "probes": layer.probes, "probe": layer.probe,
                            "input_shape": list(sample), "most_useful_probes": cap})
        layer.set_xconv(probes=0, probe=layer.probe)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        new = self.capped[self._warned:]
        if new:
            self._warned = len(self.capped)
            _warn_in_one_line(cap_message(new))

    def _remove_hooks(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def on_train_end(self, trainer, pl_module):
        self._remove_hooks()

    def on_exception(self, trainer, pl_module, exception):
        self._remove_hooks()

    def summary_fields(self) -> dict:
        """What summary.json records: the layers set to exact because their probes were too many."""
        return {"probe_caps": self.capped}
