"""What every task shares: the model, the optimiser and scheduler built from config, and what the
task declares about itself for the harness (its config rules and the metrics its tables show)."""
from __future__ import annotations

import lightning as L
import torch
import torch.nn as nn

from . import rng_state
from .config_nodes import instantiate, target
from .schedules import stepping, warmup_cosine  # noqa: F401  (warmup_cosine: its home before schedules.py)
from .table_metric import Metric


class XConvTask(L.LightningModule):
    """Base LightningModule: holds ``model`` and builds the optimiser and scheduler from config sections.

    ``optimizer``: ``{_target_: <torch optimiser>, _partial_: true, lr: float, **kwargs}``
    (conf/optimizer/*.yaml). ``scheduler``: the same for a scheduler (conf/scheduler/*.yaml),
    or ``_target_: null`` / None for none; :data:`xconv_harness.schedules.STEPPING` says what
    the run adds (``plateau`` steps on ``monitor``, default the task's ``monitor_metric``;
    ``cosine`` anneals over ``trainer.max_epochs`` unless ``T_max`` is set; ``warmup_cosine``
    anneals every optimiser step to the run's end).

    What a task declares about itself, as class attributes:

    * ``CONFIG_RULES``: what its own constructor keys may be (``task.<key>``, :mod:`xconv_harness.rules`);
    * ``monitor_metric`` / ``monitor_mode``: the validation metric plateau schedulers step on, which
      is also the validation curve the results tables plot beside the training loss;
    * ``table_metrics``: the test metrics a results table shows, the headline first (empty: every
      ``test/`` metric the runs logged);
    * ``baseline_metric``: a metric every run logs for a non-learned baseline, or None.
    """

    monitor_metric = "val/loss"
    monitor_mode = "min"
    table_metrics: tuple[Metric, ...] = ()
    baseline_metric: Metric | None = None

    def __init__(self, model: nn.Module, optimizer: dict, scheduler: dict | None = None):
        super().__init__()
        self.model = model
        self.optimizer_config = dict(optimizer)
        self.scheduler_config = dict(scheduler or {})

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    # Multi-process training and resuming ------------------------------------------------------
    def log(self, name, value, *args, **kwargs):
        """Logged tensors are averaged over DDP processes, so val/test numbers cover every shard
        (torchmetrics objects synchronise themselves; one process: nothing changes)."""
        from torchmetrics import Metric as TorchMetric

        if not isinstance(value, TorchMetric):
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

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The configured optimiser over this task's parameters (no scheduler)."""
        return instantiate(self.optimizer_config)(self.parameters())

    def configure_optimizers(self):
        optimizer = self.build_optimizer()
        if self.scheduler_config.get("_target_") is None:
            return optimizer
        config = dict(self.scheduler_config)
        how = stepping(target(config))
        monitor = config.pop("monitor", self.monitor_metric)
        scheduler = instantiate({**how.supplies(self), **config})(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {
            "scheduler": scheduler, "interval": how.interval, **({"monitor": monitor} if how.monitored else {})}}
