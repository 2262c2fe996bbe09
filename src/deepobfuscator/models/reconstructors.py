"""Adversary reconstructors: features -> image in [0, 1]. The attacker never sees pooling indices.

Every decoder here doubles its resolution by nearest upsampling followed by a 3x3 stride-1 convolution. That pair is
run as one stride-2 transposed convolution with a 4x4 kernel summed from the 3x3 one (:func:`nearest_up2_conv`): the
same function of the same parameters (equal to float rounding, gradients included), without the 4x-larger upsampled
map and with 16 instead of 36 multiply-adds per input pixel and channel pair. :class:`UpsampleSequential` applies it
where it is exact (a 2x nearest upsampling into such a convolution) and pays (at least ``MIN_FUSED_CHANNELS`` input
channels), and runs every other pair as written; its modules and state dict are those of a plain ``nn.Sequential``,
so fitted decoders load either way. :func:`plain_upsampling` runs everything as written (the reference).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import scaled

# k x d: which rows of a 3x3 kernel a 4x4 stride-2 transposed kernel sums (nearest 2x upsampling, then padding 1)
_UP2 = torch.tensor([[0., 0., 1.], [0., 1., 1.], [1., 1., 0.], [1., 0., 0.]])
_FUSE = {"enabled": True}
# below this many input channels the transposed convolution is slower on CPUs than upsampling and convolving
# (oneDNN, one thread, batch 64: 1 -> 32 channels at 16 -> 32 px 38 ms fused against 16 ms written out; 8 -> 32: 14
# against 21); a choice of speed only, both paths compute the same function
MIN_FUSED_CHANNELS = 8


@contextmanager
def plain_upsampling() -> Iterator[None]:
    """Run decoders as written (upsample, then convolve) inside the block: the reference for the fused path."""
    before = _FUSE["enabled"]
    _FUSE["enabled"] = False
    try:
        yield
    finally:
        _FUSE["enabled"] = before


def nearest_up2_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv2d(upsample_nearest_2x(x), weight, bias, padding=1)`` for a 3x3 ``weight [O, I, 3, 3]``, computed as
    one stride-2 transposed convolution of ``x`` (output ``[N, O, 2h, 2w]``)."""
    up = _UP2.to(dtype=weight.dtype, device=weight.device)
    kernel = torch.einsum("kd,oide,le->iokl", up, weight, up)  # [I, O, 4, 4], the transposed conv's layout
    return F.conv_transpose2d(x, kernel, bias, stride=2, padding=1)


def _as_conv3x3(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The ``conv2d`` weight and bias of a 3x3, stride-1, padding-1, ungrouped convolution (a stride-1 transposed
    one is the convolution with its kernel flipped and its channels swapped); None for anything else."""
    if type(layer) is nn.Conv2d:
        if (layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.groups, layer.padding_mode) != (
                (3, 3), (1, 1), (1, 1), (1, 1), 1, "zeros"):
            return None
        return layer.weight, layer.bias
    if type(layer) is nn.ConvTranspose2d:
        if (layer.kernel_size, layer.stride, layer.padding, layer.output_padding, layer.dilation, layer.groups) != (
                (3, 3), (1, 1), (1, 1), (0, 0), (1, 1), 1):
            return None
        return layer.weight.transpose(0, 1).flip(-1, -2), layer.bias
    return None


def _doubles(upsample: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``upsample`` is a nearest upsampling of ``x`` to exactly twice its height and width."""
    if type(upsample) is not nn.Upsample or upsample.mode != "nearest":
        return False
    h, w = x.shape[-2:]
    if upsample.size is not None:
        size = upsample.size if isinstance(upsample.size, tuple) else (upsample.size, upsample.size)
        return tuple(size) == (2 * h, 2 * w)
    scale = upsample.scale_factor
    scale = scale if isinstance(scale, tuple) else (scale, scale)
    return tuple(float(s) for s in scale) == (2.0, 2.0)


class UpsampleSequential(nn.Sequential):
    """``nn.Sequential`` that runs each 2x nearest upsampling followed by a 3x3 convolution as
    :func:`nearest_up2_conv` (same modules, same state dict, same function)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - nn.Sequential's contract
        layers = list(self)
        i = 0
        while i < len(layers):
            if (_FUSE["enabled"] and i + 1 < len(layers) and x.shape[1] >= MIN_FUSED_CHANNELS
                    and _doubles(layers[i], x) and (conv := _as_conv3x3(layers[i + 1])) is not None):
                x = nearest_up2_conv(x, *conv)
                i += 2
                continue
            x = layers[i](x)
            i += 1
        return x


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
        self.net = UpsampleSequential(
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
    return UpsampleSequential(
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
            x = up_concat_block(block, x, skip)
        return self.head(x)


def up_concat_block(block: nn.Sequential, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``block(cat([upsample_nearest(x, skip's size), skip]))``; when that upsampling doubles ``x`` and the block
    opens with a 3x3 convolution, the convolution is split over the two inputs and its upsampled half run as
    :func:`nearest_up2_conv` (the same function)."""
    conv = _as_conv3x3(block[0]) if _FUSE["enabled"] and x.shape[1] >= MIN_FUSED_CHANNELS else None
    if conv is None or tuple(skip.shape[-2:]) != (2 * x.shape[-2], 2 * x.shape[-1]):
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return block(torch.cat([x, skip], dim=1))
    weight, bias = conv
    split = x.shape[1]
    y = nearest_up2_conv(x, weight[:, :split], bias) + F.conv2d(skip, weight[:, split:], None, padding=1)
    return block[1:](y)


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

