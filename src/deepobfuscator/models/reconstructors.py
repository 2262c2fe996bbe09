"""Adversary reconstructors: features -> image in [0, 1]. The attacker never sees pooling indices."""
from __future__ import annotations

import torch
from torch import nn

from .vgg import scaled


def deconv(in_ch: int, out_ch: int, batch_norm: bool = True) -> list[nn.Module]:
    """3x3 stride-1 transposed conv (+BN) + ReLU."""
    layers: list[nn.Module] = [nn.ConvTranspose2d(in_ch, out_ch, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return layers


class MirrorReconstructor(nn.Module):
    """AR: the mirror of O (paper Table 1): upsample, deconv3-128, deconv3-64, upsample, deconv3-64, deconv3-3."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], width: float = 1.0,
                 batch_norm: bool = True) -> None:
        super().__init__()
        h, w = image_size
        c128, c64 = scaled(128, width), scaled(64, width)
        self.net = nn.Sequential(
            nn.Upsample(size=(h // 2, w // 2), mode="nearest"),
            *deconv(in_channels, c128, batch_norm),
            *deconv(c128, c64, batch_norm),
            nn.Upsample(size=(h, w), mode="nearest"),
            *deconv(c64, c64, batch_norm),
            nn.ConvTranspose2d(c64, 3, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``[N, C, h, w]`` -> images ``[N, 3, H, W]`` in [0, 1]."""
        return self.net(features)
