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

from ..config import ConfigError, RunConfig
from ..training.trainer import Trainer
from .registry import Method, no_adversarial, register_method


def laplace_like(x: torch.Tensor, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Laplace(0, ``scale``) noise shaped like ``x`` (inverse CDF of a uniform draw)."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 0.5
    return -scale * torch.sign(u) * torch.log1p(-2.0 * u.abs().clamp(max=0.5 - 1e-7))


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


def _positive(params: dict[str, Any], key: str, method: str) -> float:
    try:
        value = float(params[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"config.yaml baseline.{key}: {method} needs a number, got {params.get(key)!r}") from exc
    if value <= 0:
        raise ConfigError(f"config.yaml baseline.{key}: {method} needs a positive value, got {value}")
    return value


def gaussian_from_config(cfg: RunConfig) -> GaussianPixelNoise:
    """The Noisy transform of a run (``baseline.sigma`` in 0-255 units)."""
    return GaussianPixelNoise(_positive(cfg.baseline, "sigma", "noisy") / 255.0, bool(cfg.baseline.get("clip", True)))


def laplace_from_config(cfg: RunConfig) -> LaplacePixelMechanism:
    """The DP transform of a run (``baseline.epsilon``, ``baseline.sensitivity`` in [0, 1] units)."""
    return LaplacePixelMechanism(_positive(cfg.baseline, "epsilon", "dp"),
                                 _positive(cfg.baseline, "sensitivity", "dp"), bool(cfg.baseline.get("clip", False)))


class InputNoiseTrainer(Trainer):
    """Algorithm 1's stages 1-2 on noisy inputs (the method's input transform on ``modules``): the noise is the
    only defence (no adversarial stage)."""

    @classmethod
    def cache_signature(cls, cfg: RunConfig, stage: int) -> dict[str, Any]:
        """What besides the config's shared fields shapes stages up to ``stage`` (for the pretrain cache)."""
        return {"input_noise": cfg.method, "baseline": dict(cfg.baseline)}


NOISY = register_method(Method(
    "noisy", "Noisy", "Gaussian noise (sigma in 0-255 units) on raw images; O+C trained on noisy images",
    defaults={"sigma": 40.0, "clip": True}, configure=no_adversarial, trainer_cls=InputNoiseTrainer,
    input_transform=gaussian_from_config))
DP = register_method(Method(
    "dp", "DP", "Laplace mechanism per pixel (pixels in [0, 1], sensitivity 1, scale 1/epsilon); O+C on noisy images",
    defaults={"epsilon": 0.5, "sensitivity": 1.0, "clip": False}, configure=no_adversarial,
    trainer_cls=InputNoiseTrainer, input_transform=laplace_from_config))
