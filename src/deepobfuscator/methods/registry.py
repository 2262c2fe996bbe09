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
from .params import MethodParams, NoParams, format_params, search_space, validate_params


@dataclass(frozen=True)
class Method:
    """A defence: its config defaults and changes, its trainer, and what the phone applies before/after O."""

    name: str
    label: str  # display name in reports
    summary: str
    params: type[MethodParams] = NoParams  # the method's typed parameters (config.yaml: under ``method:``)
    configure: Callable[[RunConfig], None] = lambda cfg: None
    trainer_cls: type[Trainer] = Trainer
    # raw [0, 1] image -> what O sees; built from the config (fresh noise per call where it is noise)
    input_transform: Callable[[RunConfig], Transform] | None = None
    # O's output -> what is sent; read from the run directory, None while training has not fitted it yet
    feature_transform: Callable[[RunConfig, Path], Transform | None] | None = None
    uses_lambda: bool = False  # lambda1/lambda2 matter (adversarial stage)
    # config fields besides the parameters that `deepobf tune` may search: dotted key -> search spec (see params.search)
    tunable_config: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        """The parameters' defaults."""
        return self.params().model_dump()

    def search_space(self) -> dict[str, dict[str, Any]]:
        """What `deepobf tune` searches: ``method.NAME`` for parameters, dotted config keys for the rest."""
        return {**{f"method.{k}": v for k, v in search_space(self.params).items()}, **self.tunable_config}

    def help(self) -> str:
        """The ``--method-help`` listing."""
        text = format_params(self.name, self.summary, self.params)
        if self.tunable_config:
            text += "\nalso tuned: " + ", ".join(f"{k} {v.get('low')}..{v.get('high')}" if "low" in v
                                                 else f"{k} {v.get('choices')}" for k, v in self.tunable_config.items())
        return text


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
    """Set ``cfg.method`` (to ``name`` if given), validate its typed parameters (defaults filled; unknown or ill-typed
    keys raise a ConfigError naming the key), apply its config changes."""
    method = get_method(name or cfg.method)
    cfg.method = method.name
    cfg.params = validate_params(method.params, cfg.params, method.name).model_dump()
    method.configure(cfg)
    cfg.model.classifier = cfg.model.classifier_name()  # recorded in config.yaml: the method's or the paper's C
    return cfg


def no_adversarial(cfg: RunConfig) -> None:
    """Config change of methods without an adversarial stage (stage 2 still trains the run's diagnostic attackers).

    The epochs a schedule gives the adversarial stage, and the attacker stage's beyond one, go to stage 1: a schedule
    written for the paper's method (celeba-cpu's 4/2/6) trains an Encoder, Noisy, DP, NoPeek or `hardened` run for as
    many epochs (11/1/0), so a reference is never compared with a defence that trained three times as long. A
    schedule without adversarial epochs is kept (idempotent: configure runs again on resume)."""
    t = cfg.train
    if t.epochs_adversarial > 0:
        t.epochs_pretrain += t.epochs_adversarial + max(0, t.epochs_attacker - 1)
        t.epochs_adversarial, t.epochs_attacker = 0, min(t.epochs_attacker, 1)
    cfg.privacy.defend = "none"
