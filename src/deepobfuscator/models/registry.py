"""Build modules by name so configs and `--attackers` look them up instead of growing if-chains."""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..registry import Registry

from .heads import LinearProbe, ResNetHead
from .reconstructors import MirrorReconstructor, ResidualReconstructor, UNetReconstructor
from .vgg import Obfuscator, VGGClassifier

# name -> factory(in_channels, feature_hw, num_outputs, width, fc_width, batch_norm, dropout)
CLASSIFIERS: Registry[Callable[..., nn.Module]] = Registry("classifier")
# name -> factory(in_channels, feature_hw, image_size, width, batch_norm)
RECONSTRUCTORS: Registry[Callable[..., nn.Module]] = Registry("reconstructor")


def register_classifier(name: str, description: str = "") -> Callable:
    """Decorator adding a feature-classifier factory."""
    return CLASSIFIERS.register(name, description)


def register_reconstructor(name: str, description: str = "") -> Callable:
    """Decorator adding a feature-to-image reconstructor factory."""
    return RECONSTRUCTORS.register(name, description)


@register_classifier("vgg", "VGG16 blocks 3-5 + FC layers (the paper's C and AC)")
def _vgg(in_channels: int, feature_hw: tuple[int, int], num_outputs: int, width: float = 1.0,
         fc_width: int | None = None, batch_norm: bool = True, dropout: float = 0.5) -> nn.Module:
    return VGGClassifier(in_channels, feature_hw, num_outputs, width, fc_width, batch_norm, dropout)


@register_reconstructor("mirror", "mirror of O (the paper's AR)")
def _mirror(in_channels: int, feature_hw: tuple[int, int], image_size: tuple[int, int], width: float = 1.0,
            batch_norm: bool = True) -> nn.Module:
    return MirrorReconstructor(in_channels, image_size, width, batch_norm)


@register_reconstructor("urec1", "U-Net-style decoder, depth 1")
def _urec1(in_channels: int, feature_hw: tuple[int, int], image_size: tuple[int, int], width: float = 1.0,
           batch_norm: bool = True) -> nn.Module:
    return UNetReconstructor(in_channels, image_size, depth=1, width=width, batch_norm=batch_norm)


@register_reconstructor("urec2", "U-Net-style decoder, depth 2")
def _urec2(in_channels: int, feature_hw: tuple[int, int], image_size: tuple[int, int], width: float = 1.0,
           batch_norm: bool = True) -> nn.Module:
    return UNetReconstructor(in_channels, image_size, depth=2, width=width, batch_norm=batch_norm)


@register_reconstructor("resrec", "residual decoder, 4 blocks")
def _resrec(in_channels: int, feature_hw: tuple[int, int], image_size: tuple[int, int], width: float = 1.0,
            batch_norm: bool = True) -> nn.Module:
    return ResidualReconstructor(in_channels, image_size, blocks=4, width=width, batch_norm=batch_norm)


@register_classifier("resnet", "small ResNet head")
def _resnet(in_channels: int, feature_hw: tuple[int, int], num_outputs: int, width: float = 1.0,
            fc_width: int | None = None, batch_norm: bool = True, dropout: float = 0.5) -> nn.Module:
    return ResNetHead(in_channels, num_outputs, width, batch_norm, dropout)


@register_classifier("linear", "linear probe")
def _linear(in_channels: int, feature_hw: tuple[int, int], num_outputs: int, width: float = 1.0,
            fc_width: int | None = None, batch_norm: bool = True, dropout: float = 0.5) -> nn.Module:
    return LinearProbe(in_channels, num_outputs)


def build_classifier(name: str, in_channels: int, feature_hw: tuple[int, int], num_outputs: int, **kw) -> nn.Module:
    """A registered feature classifier."""
    return CLASSIFIERS.get(name)(in_channels, feature_hw, num_outputs, **kw)


def build_reconstructor(name: str, in_channels: int, feature_hw: tuple[int, int], image_size: tuple[int, int],
                        **kw) -> nn.Module:
    """A registered reconstructor."""
    return RECONSTRUCTORS.get(name)(in_channels, feature_hw, image_size, **kw)


def build_obfuscator(width: float, batch_norm: bool = True) -> Obfuscator:
    """The VGG16-front obfuscator O."""
    return Obfuscator(width, batch_norm)
