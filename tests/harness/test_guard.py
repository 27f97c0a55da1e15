"""The non-finite guard (tasks/guard.py): stop naming the step and the layer, or skip and count."""
import math

import lightning as L
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from xconv_harness.guard import NonFiniteError, NonFiniteGuard, NonFiniteWarning

BAD_STEP = 3


class Tiny(L.LightningModule):
    """Two linear layers trained by SGD. At ``bad_step`` the second layer's weight gradient turns NaN
    (``bad="grad"``, the loss stays finite) or the loss does (``bad="loss"``)."""

    def __init__(self, bad: str | None = None, bad_step: int = BAD_STEP):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.bad, self.bad_step = bad, bad_step
        self.model[2].weight.register_hook(self._poison_gradient)
        self.weights_after_step: list[dict] = []

    def _poison_gradient(self, grad):
        return grad * math.nan if self.bad == "grad" and self.global_step == self.bad_step else grad

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.model(x), y)
        if self.bad == "loss" and self.global_step == self.bad_step:
            loss = loss * math.inf
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.weights_after_step.append({k: v.detach().clone() for k, v in self.state_dict().items()})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def fit(module: Tiny, guard: NonFiniteGuard, steps: int) -> None:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 4, generator=generator), torch.randn(64, 1, generator=generator))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[guard])
    trainer.fit(module, DataLoader(data, batch_size=8))


def tiny(bad=None) -> Tiny:
    torch.manual_seed(0)
    return Tiny(bad)


@pytest.mark.parametrize("bad,named", [("grad", "gradient (first non-finite: model.2.weight)"),
                                       ("loss", "loss (inf)")])
def test_stop_names_the_step_and_layer_before_the_weights_change(bad, named):
    module = tiny(bad)
    with pytest.raises(NonFiniteError) as info:
        fit(module, NonFiniteGuard("stop"), steps=10)
    message = str(info.value)
    assert f"non-finite {named}" in message and f"at step {BAD_STEP} " in message, message
    # The weights are those after the last good step: an unguarded run of BAD_STEP steps ends there.
    good = tiny()
    fit(good, NonFiniteGuard("stop"), steps=BAD_STEP)
    for key, value in good.state_dict().items():
        assert torch.equal(module.state_dict()[key], value), key


def test_skip_drops_the_bad_step_counts_it_and_goes_on():
    module, guard = tiny("grad"), NonFiniteGuard("skip")
    with pytest.warns(NonFiniteWarning, match=f"model.2.weight.*at step {BAD_STEP} "):
        fit(module, guard, steps=6)
    after = module.weights_after_step
    assert len(after) == 6
    for key in after[0]:
        assert torch.equal(after[BAD_STEP][key], after[BAD_STEP - 1][key]), key  # the skipped step moved nothing
        assert not torch.equal(after[BAD_STEP + 1][key], after[BAD_STEP][key]), key  # training went on
        assert torch.isfinite(after[-1][key]).all(), key
    assert guard.summary_fields()["nonfinite"] == {
        "mode": "skip", "skipped_steps": 1,
        "skipped": [{"step": BAD_STEP, "epoch": 0, "batch": BAD_STEP, "loss_finite": True,
                     "first_nonfinite_grad": "model.2.weight", "processes": [0]}]}


def test_a_clean_run_is_untouched_and_a_bad_mode_is_refused():
    guard = NonFiniteGuard("skip")
    fit(tiny(), guard, steps=4)
    assert guard.summary_fields()["nonfinite"]["skipped_steps"] == 0
    with pytest.raises(ValueError, match="nonfinite='ignore': must be one of stop, skip"):
        NonFiniteGuard("ignore")


@pytest.mark.slow
def test_the_cli_stops_with_exit_code_3_and_the_last_checkpoint_stays_good(tmp_path):
    """lr 1e30 turns the second step's loss NaN: exit 3, one error line, and checkpoints/last.ckpt
    (written after every good step) holds finite weights from before the bad step."""
    from cli_runs import run_cli

    run_dir = tmp_path / "run"
    result = run_cli(run_dir, "task=classification", "data=digits", "logger=none", "probes=4",
                     "task.optimizer.lr=1e30", "ckpt_every_n_steps=1", "trainer.limit_train_batches=3",
                     "data.batch_size=16", "trainer.enable_progress_bar=false")
    assert result.returncode == 3, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "non-finite loss (nan)" in errors[0] and "at step 1 " in errors[0], errors
    assert "Traceback" not in result.stderr and not (run_dir / "summary.json").exists()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 1
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values() if value.is_floating_point())
