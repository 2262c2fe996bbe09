"""Defences by name: each :class:`Method` declares how it changes a run's config, which trainer trains
it, and what the phone does before and after O (its input and feature transforms).

A method is one module that builds a :class:`Method` and calls :func:`register_method` at import;
:mod:`deepobfuscator.methods` imports every built-in one. ``deepobf train``, ``deepobf baseline`` and
``deepobf sweep`` all train through :func:`deepobfuscator.methods.train_run`, which looks the method
up here, and every command that evaluates or deploys a run attaches the same transforms to its
:class:`~deepobfuscator.training.Modules` (:func:`deepobfuscator.methods.attach_transforms`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError, RunConfig
from ..registry import Registry, UnknownNameError
from ..training.modules import Transform
from ..training.trainer import Trainer


@dataclass(frozen=True)
class Method:
    """A defence: its config defaults and changes, its trainer, and what the phone applies before/after O."""

    name: str
    label: str  # display name in reports
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)  # the method's parameters, under ``baseline.*``
    configure: Callable[[RunConfig], None] = lambda cfg: None
    trainer_cls: type[Trainer] = Trainer
    # raw [0, 1] image -> what O sees; built from the config (fresh noise per call where it is noise)
    input_transform: Callable[[RunConfig], Transform] | None = None
    # O's output -> what is sent; read from the run directory, None while training has not fitted it yet
    feature_transform: Callable[[RunConfig, Path], Transform | None] | None = None
    uses_lambda: bool = False  # lambda1/lambda2 matter (adversarial stage)


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Make ``method`` available by its name (``method=NAME`` in configs, ``deepobf baseline NAME``)."""
    return METHODS.add(method.name, method, method.summary, replace=replace)


def get_method(name: str) -> Method:
    """The registered method ``name``; unknown names raise a ConfigError with a did-you-mean hint."""
    try:
        return METHODS.get(name)
    except UnknownNameError as exc:
        raise ConfigError(f"config method: {exc}") from exc


def configure(cfg: RunConfig, name: str | None = None) -> RunConfig:
    """Set ``cfg.method`` (to ``name`` if given), fill the method's defaults, apply its config changes."""
    method = get_method(name or cfg.method)
    cfg.method = method.name
    unknown = set(cfg.baseline) - set(method.defaults)
    if unknown:
        raise ConfigError(f"config baseline: {method.name} takes no parameter(s) {sorted(unknown)}"
                          f" (known: {sorted(method.defaults) or 'none'})")
    cfg.baseline = {**method.defaults, **cfg.baseline}
    method.configure(cfg)
    return cfg


def no_adversarial(cfg: RunConfig) -> None:
    """Config change of methods without an adversarial stage (stage 2 still trains diagnostic attackers)."""
    cfg.privacy.defend = "none"
    cfg.train.epochs_adversarial = 0
