"""The paper's classification networks."""
from __future__ import annotations

import torch.nn as nn

from ..rules import POSITIVE, Integer, Side

# The keys both networks take.
CLASSIFIER_RULES = {"in_channels": POSITIVE, "num_classes": Integer(least=2), "image_size": POSITIVE}


class MnistNet(nn.Module):
    """The MNIST-table network (paper Table 1, a Flux model there):
    conv3x3(1->16)-pool-conv3x3(16->32)-pool-conv3x3(32->32)-pool-dense(288->10).

    ``features.0`` is the first conv, which the paper keeps exact.
    """

    CONFIG_RULES = CLASSIFIER_RULES

    @staticmethod
    def input_side_rule(section: dict) -> Side:
        return Side(least=8, why="MnistNet halves it with three 2x max-pools")

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 8
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * side * side, num_classes))  # 288 at 28x28

    def forward(self, x):
        return self.classifier(self.features(x))


class CifarNet(nn.Module):
    """The paper's CIFAR-10 network (its Fig. 13, from the RAD paper): four 5x5 convs
    3->16->32, avg-pool, 32->32->32, avg-pool, FC(2048->10) at 32x32."""

    CONFIG_RULES = CLASSIFIER_RULES

    @staticmethod
    def input_side_rule(section: dict) -> Side:
        return Side(least=4, why="CifarNet halves it with two 2x average-pools")

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, padding=2), nn.ReLU(),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * side * side, num_classes))  # 2048 at 32x32

    def forward(self, x):
        return self.classifier(self.features(x))
