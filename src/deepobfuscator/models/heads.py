"""Attack classifiers on features besides the VGG head: a small ResNet and a linear probe."""
from __future__ import annotations

import torch
from torch import nn

from .reconstructors import ResidualBlock, conv_bn_relu
from .vgg import scaled


class ResNetHead(nn.Module):
    """A small ResNet-style attribute classifier on features: stem, three residual stages, global pool, linear."""

    def __init__(self, in_channels: int, num_outputs: int, width: float = 1.0, batch_norm: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        c1, c2, c3 = scaled(128, width), scaled(256, width), scaled(512, width)
        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, c1, batch_norm),
            ResidualBlock(c1, c1, 1, batch_norm),
            ResidualBlock(c1, c2, 2, batch_norm),
            ResidualBlock(c2, c3, 2, batch_norm),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c3, num_outputs))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> logits ``[N, num_outputs]``."""
        return self.head(self.features(features))


class LinearProbe(nn.Module):
    """A linear classifier on globally average-pooled features (one vector of C values per image)."""

    def __init__(self, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(in_channels, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> logits ``[N, num_outputs]``."""
        return self.linear(self.pool(features))
