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


def conv_bn_relu(in_ch: int, out_ch: int, batch_norm: bool = True) -> list[nn.Module]:
    """3x3 conv (+BN) + ReLU, size-preserving."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return layers


def image_head(in_ch: int, image_size: tuple[int, int], width: float, batch_norm: bool) -> nn.Sequential:
    """The decoder tail shared by attack reconstructors: two upsamplings to exactly ``image_size``, then RGB."""
    h, w = image_size
    c64 = scaled(64, width)
    return nn.Sequential(
        nn.Upsample(size=(max(1, h // 2), max(1, w // 2)), mode="nearest"),
        *conv_bn_relu(in_ch, c64, batch_norm),
        nn.Upsample(size=(h, w), mode="nearest"),
        *conv_bn_relu(c64, c64, batch_norm),
        nn.Conv2d(c64, 3, 3, padding=1),
        nn.Sigmoid(),
    )


class UNetReconstructor(nn.Module):
    """URec: a U-Net on the feature map (its own down/up paths joined by skips), then the image head.

    Only the features enter: the skips connect the reconstructor's own encoder and decoder levels.
    ``depth`` 1 is URec#1, 2 is URec#2. Odd feature sizes are handled by resizing to the skip's size.
    """

    def __init__(self, in_channels: int, image_size: tuple[int, int], depth: int = 1, width: float = 1.0,
                 batch_norm: bool = True) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"U-Net depth must be at least 1, got {depth}")
        chans = [scaled(128 * 2 ** level, width) for level in range(depth + 1)]
        self.down = nn.ModuleList()
        prev = in_channels
        for ch in chans:
            self.down.append(nn.Sequential(*conv_bn_relu(prev, ch, batch_norm), *conv_bn_relu(ch, ch, batch_norm)))
            prev = ch
        self.up = nn.ModuleList(
            nn.Sequential(*conv_bn_relu(chans[level + 1] + chans[level], chans[level], batch_norm),
                          *conv_bn_relu(chans[level], chans[level], batch_norm))
            for level in reversed(range(depth))
        )
        self.head = image_head(chans[0], image_size, width, batch_norm)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``[N, C, h, w]`` -> images ``[N, 3, H, W]`` in [0, 1]."""
        skips = []
        x = features
        for level, block in enumerate(self.down):
            if level > 0:
                x = nn.functional.max_pool2d(x, 2, ceil_mode=True)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


class ResidualBlock(nn.Module):
    """Two 3x3 convs (+BN) with an identity shortcut (a 1x1 projection when channels or stride change)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, batch_norm: bool = True) -> None:
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=not batch_norm), norm(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=not batch_norm), norm(out_ch),
        )
        self.shortcut = nn.Identity() if in_ch == out_ch and stride == 1 else nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=not batch_norm), norm(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update."""
        return self.relu(self.body(x) + self.shortcut(x))


class ResidualReconstructor(nn.Module):
    """ResRec: a conv stem and ``blocks`` residual blocks at feature resolution, then the image head."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], blocks: int = 4, width: float = 1.0,
                 batch_norm: bool = True) -> None:
        super().__init__()
        ch = scaled(128, width)
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, ch, batch_norm))
        self.blocks = nn.Sequential(*[ResidualBlock(ch, ch, 1, batch_norm) for _ in range(blocks)])
        self.head = image_head(ch, image_size, width, batch_norm)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``[N, C, h, w]`` -> images ``[N, 3, H, W]`` in [0, 1]."""
        return self.head(self.blocks(self.stem(features)))

