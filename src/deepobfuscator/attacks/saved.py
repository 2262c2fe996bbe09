"""Fitted attackers kept on disk, so that what an eavesdropper recovers can be shown for a new image.

`deepobf attack` saves every learned attacker right after fitting it, in its work directory
``RUN/attack/<tag>/fitted/``: ``<name>.safetensors`` (the weights) and ``<name>.json`` (the build
spec: which registered model factory and which arguments rebuild the module, which attacker and
attribute it is, and the attack settings it was fitted with). :func:`load_attackers` rebuilds the
attackers of a run's latest attack (``RUN/attack.json``) beside their test-split metrics from it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..models import build_classifier, build_reconstructor
from ..registry import Registry
from ..runs import RunError
from ..training.checkpoint import load_modules, save_modules
from ..utils import atomic_write_json

FITTED_DIR = "fitted"
SPEC_VERSION = 1

# factory name in a build spec -> the registered builder it calls with the spec's architecture and args
MODEL_FACTORIES: Registry[Callable[..., nn.Module]] = Registry("attacker model factory")
MODEL_FACTORIES.add("reconstructor", build_reconstructor, "features -> image (deepobfuscator.models registry)")
MODEL_FACTORIES.add("classifier", build_classifier, "features -> attribute logits (deepobfuscator.models registry)")


def build_spec(factory: str, architecture: str, args: dict[str, Any], **about: Any) -> dict[str, Any]:
    """A JSON-ready description that :func:`rebuild` turns back into the (untrained) module."""
    MODEL_FACTORIES.get(factory)
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
    return {"spec_version": SPEC_VERSION, "factory": factory, "architecture": architecture, "args": plain, **about}


def rebuild(spec: dict[str, Any]) -> nn.Module:
    """The module a build spec describes, freshly initialised."""
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["args"].items()}
    return MODEL_FACTORIES.get(spec["factory"])(spec["architecture"], **args)


def take_fitted(attacker: Any) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    """The modules ``attacker`` fitted in its last call (name -> (module, build spec)), handed over once."""
    fitted = getattr(attacker, "fitted", None) or {}
    if hasattr(attacker, "fitted"):
        attacker.fitted = {}
    return dict(fitted)


def _file_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if not stem or stem.startswith("."):
        raise ValueError(f"attacker name {name!r} does not make a file name")
    return stem


def save_attacker(work_dir: Path, name: str, module: nn.Module, spec: dict[str, Any]) -> Path:
    """Write ``module``'s weights and its build spec under ``work_dir/fitted/``; return the weights' path."""
    folder = Path(work_dir) / FITTED_DIR
    stem = _file_stem(name)
    weights = folder / f"{stem}.safetensors"
    save_modules({"model": module}, weights)
    atomic_write_json(folder / f"{stem}.json", {**spec, "name": name})
    return weights


def load_attacker(work_dir: Path, name: str) -> tuple[nn.Module, dict[str, Any]]:
    """One saved attacker (eval mode, on CPU) and its build spec."""
    folder = Path(work_dir) / FITTED_DIR
    stem = _file_stem(name)
    spec_path, weights = folder / f"{stem}.json", folder / f"{stem}.safetensors"
    try:
        spec = json.loads(spec_path.read_text())
    except FileNotFoundError:
        raise RunError(f"{spec_path}: no saved attacker '{name}'") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{spec_path}: not valid JSON: {exc}") from None
    for key in ("factory", "architecture", "args"):
        if key not in spec:
            raise RunError(f"{spec_path}: build spec lacks '{key}'")
    module = rebuild(spec)
    load_modules({"model": module}, weights)
    module.eval().requires_grad_(False)
    return module, spec


@dataclass
class FittedAttacker:
    """A saved attacker, rebuilt, with its metrics on the attack's evaluation split."""

    name: str  # file key: the attacker, or "<attacker>.<attribute>" for attribute attackers
    attacker: str
    kind: str  # reconstruction | attribute
    attribute: str | None
    module: nn.Module
    spec: dict[str, Any]
    metrics: dict[str, Any]  # attack.json's per-attacker entry (ms_ssim / balanced_accuracy, majority_rate, ...)


@dataclass
class RunAttackers:
    """The fitted attackers of a run's latest attack, best first."""

    attack_json: Path
    split: str
    eval_images: int | None
    reconstructors: list[FittedAttacker] = field(default_factory=list)  # best test MS-SSIM first
    attributes: dict[str, list[FittedAttacker]] = field(default_factory=dict)  # per private attribute, best first
    best_reconstructor: str | None = None  # attack.json's best overall (may be a non-learned attacker)
    unsaved: list[str] = field(default_factory=list)  # in attack.json without matching saved weights (e.g. inversion)

    def __bool__(self) -> bool:
        return bool(self.reconstructors or any(self.attributes.values()))


def _work_dir(run_dir: Path, result: dict[str, Any], where: Path) -> Path:
    recorded = result.get("work_dir")
    if not recorded:
        raise RunError(f"{where}: no 'work_dir' recorded")
    local = Path(run_dir) / "attack" / Path(recorded).name  # the run directory may have been moved or copied
    return local if local.is_dir() else Path(recorded)


def _stored_settings(work: Path, attacker: str) -> Any:
    try:
        return json.loads((work / f"{attacker}.json").read_text()).get("settings")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _load_matching(work: Path, name: str, attacker: str, unsaved: list[str]) -> tuple[nn.Module, dict] | None:
    """The saved attacker if its weights exist and were fitted with the settings of the stored result."""
    if not (work / FITTED_DIR / f"{_file_stem(name)}.safetensors").is_file():
        unsaved.append(name)
        return None
    module, spec = load_attacker(work, name)
    if spec.get("settings") is not None and spec["settings"] != _stored_settings(work, attacker):
        unsaved.append(name)
        return None
    return module, spec


def load_attackers(run_dir: Path) -> RunAttackers | None:
    """The fitted attackers of the run's latest attack (``RUN/attack.json``); None if it was never attacked."""
    where = Path(run_dir) / "attack.json"
    try:
        result = json.loads(where.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise RunError(f"{where}: not valid JSON: {exc}") from None
    work = _work_dir(Path(run_dir), result, where)
    recon = result.get("reconstruction") or {}
    out = RunAttackers(where, str(result.get("split", "test")), result.get("eval_images"),
                       best_reconstructor=recon.get("best_attacker"))
    for attacker, metrics in (recon.get("per_attacker") or {}).items():
        loaded = _load_matching(work, attacker, attacker, out.unsaved)
        if loaded:
            out.reconstructors.append(FittedAttacker(attacker, attacker, "reconstruction", None, *loaded, metrics))
    out.reconstructors.sort(key=lambda a: -(a.metrics.get("ms_ssim") or 0.0))
    for attribute, summary in (result.get("privacy") or {}).items():
        fitted = []
        for attacker, metrics in (summary.get("per_attacker") or {}).items():
            loaded = _load_matching(work, f"{attacker}.{attribute}", attacker, out.unsaved)
            if loaded:
                fitted.append(FittedAttacker(f"{attacker}.{attribute}", attacker, "attribute", attribute, *loaded,
                                             metrics))
        fitted.sort(key=lambda a: -(a.metrics.get("balanced_accuracy") or 0.0))
        out.attributes[attribute] = fitted
    return out
