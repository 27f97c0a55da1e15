"""Image classification (the paper's MNIST table and CIFAR-10 figure). Metric: top-1 accuracy."""
from __future__ import annotations

import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from .base import XConvTask
from .rules import Integer
from .table_metric import percent


class ClassificationTask(XConvTask):
    CONFIG_RULES = {"classes": Integer(least=2)}
    monitor_metric = "val/acc"
    monitor_mode = "max"
    table_metrics = (percent("test/acc", "test acc"),)

    def __init__(self, model, optimizer, scheduler=None, classes: int = 10):
        super().__init__(model, optimizer, scheduler)
        self.metrics = {stage: MulticlassAccuracy(num_classes=classes, average="micro")
                        for stage in ("val", "test")}
        for stage, metric in self.metrics.items():
            self.add_module(f"{stage}_accuracy", metric)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = F.cross_entropy(self.model(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str):
        images, labels = batch
        logits = self.model(images)
        self.metrics[stage].update(logits, labels)
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels), prog_bar=stage == "val")
        self.log(f"{stage}/acc", self.metrics[stage], prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")
