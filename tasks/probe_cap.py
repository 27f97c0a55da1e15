"""Cap the probes of layers that cannot use them, with a warning naming each layer.

A layer's XConv sketch keeps ``r * C_in`` numbers per sample (channel probes) or
``r`` (the other kinds) instead of the ``C_in * H * W`` of its input. Once the
sketch is no smaller than the input (``r >= H * W`` for channel probes, ``r >= C_in
* H * W`` otherwise) the estimate costs at least the memory of exact backprop and is
still noisy, so such a layer is better off exact: the same rule as
``xconv.convert(..., example_input=...)`` (``xconv.convert.sketch_numbers_per_sample``).

The shapes are known only when data flows, so :class:`ProbeCap` checks every XConv
layer's input in a forward pre-hook during training; a layer whose probe count is
too large is set to exact backprop (``probes=0``) before that forward runs, so no
step ever uses it, and a warning says which layer, its input and the largest probe
count that would still save memory there. ``summary.json`` lists the capped layers
under ``probe_caps`` (and they drop out of ``gradient.xconv_layers``).
"""
from __future__ import annotations

import functools
import math

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

import xconv
from xconv.convert import sketch_numbers_per_sample


class ProbeCapWarning(UserWarning):
    """A layer got more probes than it can use and was set to exact backprop."""


def most_useful_probes(probe: str, input_shape) -> int:
    """The largest probe count whose sketch is smaller than one sample of ``input_shape`` (N, C, *spatial)."""
    per_sample = math.prod(input_shape[1:])
    return (per_sample - 1) // sketch_numbers_per_sample(probe, 1, input_shape[1])


class ProbeCap(L.Callback):
    def __init__(self):
        self.capped: list[dict] = []
        self._handles = []

    def on_train_start(self, trainer, pl_module):
        model = getattr(pl_module, "model", pl_module)  # names as in model.exact_layers
        for name, layer in xconv.xconv_layers(model):
            self._handles.append(layer.register_forward_pre_hook(functools.partial(self._check, name)))

    def _check(self, name, layer, args):
        if not layer.uses_estimator():
            return
        shape = tuple(args[0].shape)
        cap = most_useful_probes(layer.probe, shape)
        if layer.probes <= cap:
            return
        self.capped.append({"layer": name, "probes": layer.probes, "probe": layer.probe,
                            "input_shape": list(shape[1:]), "most_useful_probes": cap})
        rank_zero_warn(
            f"layer {name}: probes={layer.probes} capped to 0 (exact backprop): with {layer.probe} probes on "
            f"its {'x'.join(map(str, shape[1:]))} input, at most {cap} probes keep a sketch smaller than the "
            f"input", category=ProbeCapWarning)
        layer.set_xconv(probes=0, probe=layer.probe)

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
