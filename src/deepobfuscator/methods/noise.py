"""Input-noise baselines: **Noisy** (Gaussian pixel noise) and **DP** (Laplace mechanism on pixels).

Both perturb the raw image in [0, 1] before O, in training, validation and every attack, with fresh
noise per image and per release; the service's O and C are trained on the noisy images.

* Noisy: ``x + N(0, (sigma/255)^2)`` per pixel and channel, ``sigma`` in 0-255 units (paper: 40),
  then clipped to [0, 1] (``clip``, on by default, as an 8-bit image would be).
* DP: each pixel value is clipped to [0, 1], so one pixel's L1 sensitivity is 1; the Laplace
  mechanism releases ``x + Lap(b)`` with ``b = sensitivity / epsilon`` (``sensitivity`` = 1 in [0, 1]
  units = 255 grey levels). This is epsilon-DP per pixel value (pixel-level), *not* per image: an
  image-level guarantee would need an L1 sensitivity of ``3*H*W``. The output is not clipped by
  default (``clip: false``; clipping would be post-processing and keep the guarantee).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import RunConfig
from ..models.factorised import laplace_like
from ..training.trainer import Trainer
from .params import MethodParams, param, search, validate_params
from .registry import Method, no_adversarial, register_method


@dataclass(frozen=True)
class GaussianPixelNoise:
    """Noisy: ``clip(x + N(0, sigma^2))`` with ``sigma`` in [0, 1] units."""

    sigma: float
    clip: bool = True

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Noisy copy of ``images`` (NCHW in [0, 1])."""
        out = images + torch.randn_like(images) * self.sigma
        return out.clamp(0.0, 1.0) if self.clip else out


@dataclass(frozen=True)
class LaplacePixelMechanism:
    """DP: per-pixel Laplace mechanism on pixels clipped to [0, 1]; ``scale = sensitivity / epsilon``."""

    epsilon: float
    sensitivity: float = 1.0
    clip: bool = False

    @property
    def scale(self) -> float:
        """The Laplace scale b."""
        return self.sensitivity / self.epsilon

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """One epsilon-DP release (per pixel value) of ``images``."""
        out = images.clamp(0.0, 1.0)
        out = out + laplace_like(out, self.scale)
        return out.clamp(0.0, 1.0) if self.clip else out


class NoisyParams(MethodParams):
    """Noisy's parameters."""

    sigma: float = param(40.0, "Gaussian std in 0-255 pixel units (paper: 40)", gt=0, tune=search(5.0, 80.0, log=True))
    clip: bool = param(True, "clip the noisy image to [0, 1], as an 8-bit image would be")


class DPParams(MethodParams):
    """DP's parameters."""

    epsilon: float = param(0.5, "privacy budget per pixel value (Laplace scale sensitivity / epsilon)", gt=0,
                           tune=search(0.1, 2.0, log=True))
    sensitivity: float = param(1.0, "L1 sensitivity of one pixel value in [0, 1] units", gt=0)
    clip: bool = param(False, "clip the released image to [0, 1] (post-processing: keeps the guarantee)")


def gaussian_from_config(cfg: RunConfig) -> GaussianPixelNoise:
    """The Noisy transform of a run (``method.sigma`` in 0-255 units)."""
    p = validate_params(NoisyParams, cfg.params, "noisy")
    return GaussianPixelNoise(p.sigma / 255.0, p.clip)


def laplace_from_config(cfg: RunConfig) -> LaplacePixelMechanism:
    """The DP transform of a run (``method.epsilon``, ``method.sensitivity`` in [0, 1] units)."""
    p = validate_params(DPParams, cfg.params, "dp")
    return LaplacePixelMechanism(p.epsilon, p.sensitivity, p.clip)


class InputNoiseTrainer(Trainer):
    """Algorithm 1's stages 1-2 on noisy inputs (the method's input transform on ``modules``): the noise is the
    only defence (no adversarial stage)."""

    @classmethod
    def cache_signature(cls, cfg: RunConfig, stage: int) -> dict[str, Any]:
        """What besides the config's shared fields shapes stages up to ``stage`` (for the pretrain cache)."""
        return {"input_noise": cfg.method, "baseline": dict(cfg.params)}


NOISY = register_method(Method(
    "noisy", "Noisy", "Gaussian noise (sigma in 0-255 units) on raw images; O+C trained on noisy images",
    params=NoisyParams, configure=no_adversarial, trainer_cls=InputNoiseTrainer,
    input_transform=gaussian_from_config))
DP = register_method(Method(
    "dp", "DP", "Laplace mechanism per pixel (pixels in [0, 1], sensitivity 1, scale 1/epsilon); O+C on noisy images",
    params=DPParams, configure=no_adversarial,
    trainer_cls=InputNoiseTrainer, input_transform=laplace_from_config))
