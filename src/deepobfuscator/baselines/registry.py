"""Defences by name: each entry adjusts a RunConfig and names the trainer and transforms it needs.

``deepobf baseline NAME`` and ``deepobf sweep`` look methods up here; the attack suite's
``obfuscate()`` calls :func:`input_transform` and :func:`feature_transform` so that attacks see
exactly what the defence sends.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..config import ConfigError, RunConfig
from ..methods import hardened
from ..training.trainer import Trainer
from .hybrid import STATE_FILE as HYBRID_STATE, HybridTrainer, PCALaplace
from .noise import InputNoiseTrainer, gaussian_from_config, laplace_from_config
from .nopeek import NoPeekTrainer

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A defence: how it changes the config, how it trains, what the phone applies before/after O."""

    name: str
    label: str  # display name in reports
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)  # baseline.* parameters
    configure: Callable[[RunConfig], None] = lambda cfg: None
    trainer_cls: type[Trainer] = Trainer
    input_transform: Callable[[RunConfig], Transform] | None = None
    load_state: Callable[[Path], nn.Module] | None = None  # extra per-run state (e.g. Hybrid's PCA)
    uses_lambda: bool = False  # lambda1/lambda2 matter (adversarial stage)


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add (or replace) a method."""
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``; unknown names raise a ConfigError with a suggestion."""
    if name not in METHODS:
        hint = difflib.get_close_matches(name, list(METHODS), n=1)
        raise ConfigError(f"unknown method/baseline '{name}' (known: {', '.join(sorted(METHODS))})"
                          + (f"; did you mean '{hint[0]}'?" if hint else ""))
    return METHODS[name]


def configure(cfg: RunConfig, name: str | None = None) -> RunConfig:
    """Set ``cfg.method`` (to ``name`` if given), fill baseline defaults, apply the method's changes."""
    method = get_method(name or cfg.method)
    cfg.method = method.name
    unknown = set(cfg.baseline) - set(method.defaults)
    if unknown:
        raise ConfigError(f"config baseline: {method.name} takes no parameter(s) {sorted(unknown)}"
                          f" (known: {sorted(method.defaults) or 'none'})")
    cfg.baseline = {**method.defaults, **cfg.baseline}
    method.configure(cfg)
    return cfg


def trainer_class(cfg: RunConfig) -> type[Trainer]:
    """The trainer of the run's method (plain Algorithm 1 for methods not registered here)."""
    return METHODS[cfg.method].trainer_cls if cfg.method in METHODS else Trainer


def input_transform(cfg: RunConfig) -> Transform | None:
    """What the phone does to the raw [0, 1] image before O (None: nothing)."""
    method = METHODS.get(cfg.method)
    return method.input_transform(cfg) if method and method.input_transform else None


def attach_run_state(run_path: Path, cfg: RunConfig, modules: Any) -> None:
    """Load a method's extra state from a run directory onto ``modules.transform`` (no-op for most)."""
    method = METHODS.get(cfg.method)
    if method and method.load_state:
        modules.transform = method.load_state(Path(run_path))


def feature_transform(modules: Any) -> Transform | None:
    """What the phone does to O's output before sending it (None: nothing)."""
    return getattr(modules, "transform", None)


def apply_pipeline_transforms(cfg: RunConfig, modules: Any, images: torch.Tensor) -> torch.Tensor:
    """O's input transform, O, then the feature transform: the features the deployed pipeline sends."""
    before = input_transform(cfg)
    feats = modules.obfuscator(before(images) if before else images)
    after = feature_transform(modules)
    return after.to(feats.device)(feats) if after is not None else feats


# --------------------------------------------------------------------------- the methods
def _no_adversarial(cfg: RunConfig) -> None:
    cfg.privacy.defend = "none"
    cfg.train.epochs_adversarial = 0


def _hybrid(cfg: RunConfig) -> None:
    cfg.privacy.defend = "none"  # stage 3 only retrains C (epochs_adversarial epochs)


def _pan(cfg: RunConfig) -> None:
    cfg.privacy.reconstruction_loss = "mse"


register_method(Method(
    "deepobfuscator", "DeepObfuscator", "Algorithm 1: adversarial training against reconstruction and attributes",
    uses_lambda=True))
register_method(Method(
    "encoder", "Encoder", "O+C trained on L(C) only (no privacy): the no-defence reference",
    configure=_no_adversarial))
register_method(Method(
    "noisy", "Noisy", "Gaussian noise (sigma in 0-255 units) on raw images; O+C trained on noisy images",
    defaults={"sigma": 40.0, "clip": True}, configure=_no_adversarial, trainer_cls=InputNoiseTrainer,
    input_transform=gaussian_from_config))
register_method(Method(
    "dp", "DP", "Laplace mechanism per pixel (pixels in [0, 1], sensitivity 1, scale 1/epsilon); O+C on noisy images",
    defaults={"epsilon": 0.5, "sensitivity": 1.0, "clip": False}, configure=_no_adversarial,
    trainer_cls=InputNoiseTrainer, input_transform=laplace_from_config))
register_method(Method(
    "hybrid", "Hybrid", "Encoder features -> PCA fitted on train -> Laplace noise per coefficient; C retrained",
    defaults={"epsilon": 0.5, "sensitivity": 1.0, "n_components": 64, "clip_percentile": 1.0,
              "max_fit_images": 4000},
    configure=_hybrid, trainer_cls=HybridTrainer, load_state=lambda path: PCALaplace.load(path / HYBRID_STATE)))
register_method(Method(
    "pan", "PAN", "Algorithm 1 with pixel-MSE reconstruction terms (paper section 5.3)",
    configure=_pan, uses_lambda=True))
register_method(Method(
    "nopeek", "NoPeek", "O+C on L(C) + weight * distance correlation(raw image, features); no adversarial stage",
    defaults={"weight": 1.0}, configure=_no_adversarial, trainer_cls=NoPeekTrainer))
register_method(Method(
    "hardened", "Hardened", "Noisy k-channel bottleneck + within-class dependence penalty + restarted adversary "
    "ensemble + audit-chosen checkpoint (issue 13)",
    defaults=hardened.DEFAULTS, configure=hardened.configure, trainer_cls=hardened.HardenedTrainer, uses_lambda=True))
