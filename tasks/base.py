"""What every task shares: the model, the optimiser and scheduler built from config."""
from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn as nn

from . import rng_state
from .validate import require_int

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
SCHEDULERS = ("none", "plateau", "cosine", "warmup_cosine")


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, floor: float) -> float:
    """LR factor: linear warm-up to 1 over ``warmup_steps``, then cosine down to ``floor``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class XConvTask(L.LightningModule):
    """Base LightningModule: holds ``model`` and builds the optimiser from plain dicts.

    ``optimizer``: ``{name: adam|adamw|sgd, lr: float, **kwargs}``.
    ``scheduler``: ``{name: none|plateau|cosine, **kwargs}``; ``plateau`` steps on
    ``monitor`` (default the task's ``monitor_metric``), ``cosine`` anneals over
    ``trainer.max_epochs`` (or ``T_max``), ``warmup_cosine`` (``warmup_steps``,
    ``eta_min``) warms up linearly, then anneals every optimiser step to the run's end.
    """

    monitor_metric = "val/loss"
    monitor_mode = "min"

    def __init__(self, model: nn.Module, optimizer: dict, scheduler: dict | None = None):
        super().__init__()
        self.model = model
        self.optimizer_config = dict(optimizer)
        self.scheduler_config = dict(scheduler or {"name": "none"})

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    # Multi-process training and resuming ------------------------------------------------------
    def log(self, name, value, *args, **kwargs):
        """Logged tensors are averaged over DDP processes, so val/test numbers cover every shard
        (torchmetrics objects synchronise themselves; one process: nothing changes)."""
        from torchmetrics import Metric

        if not isinstance(value, Metric):
            kwargs.setdefault("sync_dist", True)
        return super().log(name, value, *args, **kwargs)

    def on_fit_start(self):
        """Under DDP each process draws its own XConv probes (rank 0 keeps the single-process stream)."""
        rng_state.offset_xconv_seed(torch.initial_seed(), self.global_rank)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = rng_state.gather()  # every rank's streams; a collective under DDP

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_states_to_restore = checkpoint.get("rng_states")

    def on_train_start(self):
        """Continue the random streams of a resumed run; restored here, after Lightning's own setup,
        right before the first resumed batch is drawn."""
        if getattr(self, "_rng_states_to_restore", None):
            rng_state.restore_for_this_rank(self._rng_states_to_restore)
            self._rng_states_to_restore = None

    def configure_optimizers(self):
        options = dict(self.optimizer_config)
        optimizer = OPTIMIZERS[options.pop("name")](self.parameters(), **options)
        options = dict(self.scheduler_config)
        name = options.pop("name")
        if name == "none":
            return optimizer
        if name == "plateau":
            monitor = options.pop("monitor", self.monitor_metric)
            options.setdefault("mode", self.monitor_mode)
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **options)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "monitor": monitor, "interval": "epoch"}}
        if name == "cosine":
            options.setdefault("T_max", max(1, self.trainer.max_epochs or 1))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, **options)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        if name == "warmup_cosine":
            return {"optimizer": optimizer, "lr_scheduler": {
                "scheduler": self._warmup_cosine(optimizer, **options), "interval": "step"}}
        raise ValueError(f"scheduler.name must be one of {SCHEDULERS}, got {name!r}")

    def _warmup_cosine(self, optimizer, warmup_steps: int = 0, eta_min: float = 0.0):
        require_int("scheduler.warmup_steps", warmup_steps, 0)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("scheduler.name=warmup_cosine needs a finite run: set trainer.max_epochs "
                             "or trainer.max_steps")
        floor = eta_min / self.optimizer_config["lr"]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(
            step, warmup_steps=warmup_steps, total_steps=int(total), floor=floor))
