"""Probe caps (tasks/probe_cap.py): layers that cannot use their probes go exact, with a warning."""
import lightning as L
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import xconv
from xconv_harness.probe_cap import ProbeCap, ProbeCapWarning, most_useful_probes


@pytest.mark.parametrize("probe", ["channel", "gaussian"])
@pytest.mark.parametrize("side", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("probes", [3, 4, 15, 16, 17])
def test_the_cap_is_the_librarys_own_rule(probe, side, probes):
    """A layer gets capped exactly when xconv.convert(example_input=...) would leave it exact."""
    model = nn.Sequential(nn.Conv2d(2, 3, 1))
    xconv.convert(model, probes=probes, probe=probe, example_input=torch.zeros(1, 2, side, side))
    left_exact = not list(xconv.xconv_layers(model))
    assert (probes > most_useful_probes(probe, (1, 2, side, side))) == left_exact


class TwoScales(L.LightningModule):
    """An XConv layer at 8x8 (64 positions) and two at 4x4 (16), all with 16 channel probes."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(xconv.XConv2d(3, 4, 3, padding=1, probes=16), nn.AvgPool2d(2),
                                   xconv.XConv2d(4, 4, 3, padding=1, probes=16),
                                   xconv.XConv2d(4, 2, 3, padding=1, probes=16))

    def training_step(self, batch, batch_idx):
        return F.mse_loss(self.model(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_layers_given_more_probes_than_positions_are_capped_with_one_warning_line():
    torch.manual_seed(0)
    module, cap = TwoScales(), ProbeCap()
    data = TensorDataset(torch.randn(8, 3, 8, 8), torch.randn(8, 2, 4, 4))
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cap])
    with pytest.warns(ProbeCapWarning) as caught:
        trainer.fit(module, DataLoader(data, batch_size=4))
    assert [str(warning.message) for warning in caught if warning.category is ProbeCapWarning] == [
        "probes capped to 0 (exact backprop) in 2 layers whose input is too small for a sketch to save memory: "
        "2 (16 channel probes on 4x4x4, at most 15), 3 (16 channel probes on 4x4x4, at most 15) "
        "(summary.json: probe_caps)"]  # one warning for both layers, and not again at the next step
    assert module.model[0].probes == 16 and module.model[2].probes == module.model[3].probes == 0
    assert cap.summary_fields() == {"probe_caps": [
        {"layer": layer, "probes": 16, "probe": "channel", "input_shape": [4, 4, 4], "most_useful_probes": 15}
        for layer in ("2", "3")]}
