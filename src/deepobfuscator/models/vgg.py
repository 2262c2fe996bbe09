"""The VGG16 split of the paper (Table 1): obfuscator O = blocks 1-2, classifier C = blocks 3-5 + FCs."""
from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def scaled(channels: int, width: float) -> int:
    """Channels at width multiplier ``width`` (at least 4)."""
    return max(4, int(round(channels * width)))


def conv_block(in_ch: int, widths: tuple[int, ...], width: float, batch_norm: bool) -> tuple[nn.Sequential, int]:
    """A VGG block: 3x3 conv (+BN) + ReLU per entry, then 2x2 max-pool."""
    layers: list[nn.Module] = []
    for c in widths:
        out_ch = scaled(c, width)
        layers.append(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
        in_ch = out_ch
    layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers), in_ch


class Obfuscator(nn.Module):
    """O: VGG16 blocks 1-2 with batch norm. Takes [0, 1] images; normalises inside."""

    def __init__(self, width: float = 1.0, batch_norm: bool = True) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        block1, ch = conv_block(3, VGG16_BLOCKS[0], width, batch_norm)
        block2, ch = conv_block(ch, VGG16_BLOCKS[1], width, batch_norm)
        self.features = nn.Sequential(block1, block2)
        self.out_channels = ch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> features [N, 128w, H/4, W/4]."""
        return self.features((images - self.mean) / self.std)

    @staticmethod
    def feature_hw(image_size: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of O's output for an input of ``image_size`` (two floor-halvings)."""
        return image_size[0] // 2 // 2, image_size[1] // 2 // 2


class VGGClassifier(nn.Module):
    """C (and by default AC): VGG16 blocks 3-5, two FC layers, one output per logit."""

    def __init__(self, in_channels: int, feature_hw: tuple[int, int], num_outputs: int, width: float = 1.0,
                 fc_width: int | None = None, batch_norm: bool = True, dropout: float = 0.5) -> None:
        super().__init__()
        blocks, ch = [], in_channels
        for widths in VGG16_BLOCKS[2:]:
            block, ch = conv_block(ch, widths, width, batch_norm)
            blocks.append(block)
        self.features = nn.Sequential(*blocks)
        h, w = feature_hw
        for _ in range(3):
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"feature map {feature_hw} is too small for three more VGG pools")
        fc = fc_width or scaled(4096, width)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(ch * h * w, fc), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc, num_outputs),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> logits ``[N, num_outputs]`` (sigmoid/softmax applied by losses and metrics)."""
        return self.head(self.features(features))
