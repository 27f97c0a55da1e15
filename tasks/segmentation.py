"""2D semantic segmentation (the paper's GlaS experiment, Table 4 / Fig 23-24).

Loss: 0.5 * cross-entropy + Dice, the multiclass form of the paper's BCEDice
(0.5 * BCE + Dice). Metrics as the paper's val.py, macro-averaged over classes
(torchmetrics): IoU (Jaccard), Dice (F1), pixel accuracy, precision, recall.
Once per validation epoch a few validation images are saved and logged next to
their true and predicted masks (:mod:`xconv_harness.image_logging`).
"""
from __future__ import annotations

import colorsys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex,
                                         MulticlassPrecision, MulticlassRecall)

from .base import XConvTask
from .image_logging import save_and_log_images
from .rules import Integer, require_int
from .table_metric import percent


def segmentation_metrics(classes: int, prefix: str) -> MetricCollection:
    """``<prefix>iou``, ``dice``, ``acc`` (pixel accuracy), ``precision``, ``recall``."""
    return MetricCollection({
        "iou": MulticlassJaccardIndex(classes, average="macro"),
        "dice": MulticlassF1Score(classes, average="macro"),
        "acc": MulticlassAccuracy(classes, average="micro"),
        "precision": MulticlassPrecision(classes, average="macro"),
        "recall": MulticlassRecall(classes, average="macro"),
    }, prefix=prefix)


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """1 - mean over classes of the soft Dice of softmax(logits) (N, C, H, W) against labels (N, H, W)."""
    probabilities = logits.softmax(1)
    one_hot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(probabilities.dtype)  # (N, C, H, W)
    overlap = (probabilities * one_hot).sum((0, 2, 3))  # (C,)
    total = probabilities.sum((0, 2, 3)) + one_hot.sum((0, 2, 3))  # (C,)
    return 1 - ((2 * overlap + smooth) / (total + smooth)).mean()


def mask_colors(classes: int) -> torch.Tensor:
    """A fixed, evenly spaced hue per class: (classes, 3) RGB in [0, 1]."""
    return torch.tensor([colorsys.hsv_to_rgb(k / classes, 0.85, 0.95) for k in range(classes)])


def colorize(labels: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """Labels (N, H, W) -> RGB images (N, 3, H, W)."""
    return colors.to(labels.device)[labels].permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)


class SegmentationTask(XConvTask):
    CONFIG_RULES = {"classes": Integer(least=2), "num_images": Integer(least=0, note=" (0 = no images)")}
    monitor_metric = "val/iou"
    monitor_mode = "max"
    table_metrics = (percent("test/iou", "IoU"), percent("test/dice", "Dice"), percent("test/acc", "pixel acc"),
                     percent("test/precision", "precision"), percent("test/recall", "recall"))

    def __init__(self, model: nn.Module, optimizer: dict, scheduler: dict | None = None, classes: int = 2,
                 num_images: int = 4):
        super().__init__(model, optimizer, scheduler)
        require_int("task.classes", classes, 2)
        require_int("task.num_images", num_images, 0, " (0 = no images)")
        self.classes, self.num_images = classes, num_images
        self.metrics = nn.ModuleDict({stage: segmentation_metrics(classes, f"{stage}/")
                                      for stage in ("val", "test")})

    def setup(self, stage: str) -> None:
        data_classes = getattr(self.trainer.datamodule, "num_classes", None)
        if data_classes is not None and data_classes != self.classes:
            raise ValueError(f"data.num_classes={self.classes}: the data has {data_classes} classes; "
                             f"set data.num_classes={data_classes}")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return 0.5 * F.cross_entropy(logits, labels) + dice_loss(logits, labels)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = self.loss(self.model(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self.model(images)
        self.metrics[stage].update(logits, labels)
        self.log(f"{stage}/loss", self.loss(logits, labels), prog_bar=stage == "val")
        self.log_dict(self.metrics[stage], prog_bar=False)
        return logits

    def validation_step(self, batch, batch_idx):
        logits = self._evaluate(batch, "val")
        if batch_idx == 0 and self.num_images and not self.trainer.sanity_checking:
            self._log_masks(batch[0][:self.num_images], batch[1][:self.num_images],
                            logits[:self.num_images].argmax(1))

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def _log_masks(self, images: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor) -> None:
        """One picture per sample: input | true mask | predicted mask, side by side."""
        colors = mask_colors(self.classes)
        panels = torch.cat([images.clamp(0, 1), colorize(labels, colors), colorize(predicted, colors)],
                           dim=-1)  # (N, 3, H, 3 * W)
        captions = [f"val image {i}: input | true mask | predicted mask (epoch {self.current_epoch})"
                    for i in range(len(panels))]
        save_and_log_images(self, "val/masks", panels, captions)
