"""What every task shares: the model, the optimiser and scheduler built from config."""
from __future__ import annotations

import lightning as L
import torch
import torch.nn as nn

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
SCHEDULERS = ("none", "plateau", "cosine")


class XConvTask(L.LightningModule):
    """Base LightningModule: holds ``model`` and builds the optimiser from plain dicts.

    ``optimizer``: ``{name: adam|adamw|sgd, lr: float, **kwargs}``.
    ``scheduler``: ``{name: none|plateau|cosine, **kwargs}``; ``plateau`` steps on
    ``monitor`` (default the task's ``monitor_metric``), ``cosine`` anneals over
    ``trainer.max_epochs`` (or ``T_max``).
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
        raise ValueError(f"scheduler.name must be one of {SCHEDULERS}, got {name!r}")
