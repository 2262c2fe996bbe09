"""Fitted attackers kept on disk, so that what an eavesdropper recovers can be shown for a new image.

`deepobf attack` hands every learned attacker to :func:`save_attacker` right after fitting it, as
``(work_dir, name, module, spec)`` with the attacker's ``state()``:

- a reconstructor: its module and ``{"kind": "reconstruction", "model": BUILD}``;
- an attribute attacker: an ``nn.ModuleDict`` with one model per private attribute and
  ``{"kind": "attribute", "attributes": {ATTRIBUTE: BUILD}, "through_classifier": false}``;

where ``BUILD`` says which registered model factory and arguments rebuild the untrained model
(:func:`deepobfuscator.attacks.heads.build_from_spec`). Files: ``RUN/attack/<tag>/fitted/<name>.safetensors`` and
``<name>.json``. :func:`load_attackers` rebuilds the attackers of a run's latest attack
(``RUN/attack.json``) beside their metrics on its evaluation split; floors (attackers that see no
features, or C's outputs instead of the features) are not eavesdroppers and are left out.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from ..runs import RunError
from ..training.checkpoint import load_modules, save_modules
from ..training.precision import set_precision
from ..utils import atomic_write_bytes, atomic_write_json
from .heads import build_from_spec

FITTED_DIR = "fitted"


def rebuild(spec: dict[str, Any]) -> nn.Module:
    """The untrained module an attacker's state spec describes (a model, or a ModuleDict per attribute)."""
    if spec.get("kind") == "reconstruction" and "model" in spec:
        return build_from_spec(spec["model"])
    if spec.get("kind") == "attribute" and "attributes" in spec:
        return nn.ModuleDict({name: build_from_spec(build) for name, build in spec["attributes"].items()})
    raise ValueError(f"a {spec.get('kind')!r} spec without its model build ('model' or 'attributes'); "
                     "written by another version of deepobf attack?")


def _file_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if not stem or stem.startswith("."):
        raise ValueError(f"attacker name {name!r} does not make a file name")
    return stem


def save_attacker(work_dir: Path, name: str, module: nn.Module, spec: dict[str, Any]) -> Path:
    """Write a fitted attacker's weights and its spec under ``work_dir/fitted/``; return the weights' path."""
    folder = Path(work_dir) / FITTED_DIR
    stem = _file_stem(name)
    weights = folder / f"{stem}.safetensors"
    save_modules({"model": module}, weights)
    atomic_write_json(folder / f"{stem}.json", {**spec, "name": name})
    return weights


def load_attacker(work_dir: Path, name: str) -> tuple[nn.Module, dict[str, Any]]:
    """One saved attacker (eval mode, no gradients) and its spec."""
    folder = Path(work_dir) / FITTED_DIR
    stem = _file_stem(name)
    spec_path, weights = folder / f"{stem}.json", folder / f"{stem}.safetensors"
    try:
        spec = json.loads(spec_path.read_text())
    except FileNotFoundError:
        raise RunError(f"{spec_path}: no saved attacker '{name}'") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{spec_path}: not valid JSON: {exc}") from None
    try:
        module = rebuild(spec)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{spec_path}: cannot rebuild the attacker: {exc}") from None
    load_modules({"model": module}, weights)
    module.eval().requires_grad_(False)
    for part in module.values() if isinstance(module, nn.ModuleDict) else [module]:  # one model per attribute
        set_precision(part, spec.get("amp", "none"))  # the precision it was fitted and scored in (absent: float32)
    return module, spec


def read_fitted(work_dir: Path, name: str) -> tuple[nn.Module, dict[str, Any]]:
    """A saved attacker's module and spec for hooks: rebuilt when its spec says how, else a plain module holding the
    saved tensors as buffers (an attacker registered outside the package may save any state)."""
    try:
        return load_attacker(work_dir, name)
    except RunError:
        folder = Path(work_dir) / FITTED_DIR
        stem = _file_stem(name)
        spec = json.loads((folder / f"{stem}.json").read_text())
        holder = nn.Module()
        for key, value in load_file(str(folder / f"{stem}.safetensors")).items():
            holder.register_buffer(key.removeprefix("model.").replace(".", "_"), value)
        return holder, spec


def publish_attacker(work_dir: Path, stem: str, name: str) -> bool:
    """Copy the saved attacker ``stem`` (e.g. one seed's ``vgg.s0``) to ``name`` (what `deepobf inspect` reads);
    False when ``stem`` saved nothing."""
    folder = Path(work_dir) / FITTED_DIR
    source = folder / f"{_file_stem(stem)}.safetensors"
    if not source.is_file():
        return False
    spec = json.loads((folder / f"{_file_stem(stem)}.json").read_text())
    atomic_write_bytes(folder / f"{_file_stem(name)}.safetensors", source.read_bytes())
    atomic_write_json(folder / f"{_file_stem(name)}.json", {**spec, "name": name})
    return True


@dataclass
class FittedAttacker:
    """A saved attacker's model for one target, rebuilt, with its metrics on the attack's evaluation split."""

    attacker: str
    kind: str  # reconstruction | attribute
    attribute: str | None
    module: nn.Module  # features -> image in [0, 1] (reconstruction) or logits of ``attribute``
    build: dict[str, Any]  # the model's build spec
    metrics: dict[str, Any]  # attack.json's per-attacker entry (ms_ssim / balanced_accuracy, majority_rate, ...)


@dataclass
class RunAttackers:
    """The fitted attackers of a run's latest attack, best first."""

    attack_json: Path
    split: str
    eval_images: int | None
    reconstructors: list[FittedAttacker] = field(default_factory=list)  # best evaluation MS-SSIM first
    attributes: dict[str, list[FittedAttacker]] = field(default_factory=dict)  # per private attribute, best first
    best_reconstructor: str | None = None  # attack.json's best overall (may be one that saves nothing)
    unsaved: list[str] = field(default_factory=list)  # in attack.json without matching saved weights (e.g. inversion)
    repeated: dict[str, Any] = field(default_factory=dict)  # attack.json's averaged-query headlines ("8", "inf")
    problems: list[str] = field(default_factory=list)  # saved attackers that could not be read (file and reason)

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


def _saved(work: Path, attacker: str, out: RunAttackers) -> tuple[nn.Module, dict[str, Any]] | None:
    """The saved attacker if its weights exist, can be read and, where its spec records them, were fitted with
    the settings of the stored result (an attacker refitted since, e.g. by an attack written elsewhere with
    --out, is stale). Anything else is listed in ``out.unsaved`` (unreadable files also in ``out.problems``)."""
    if not (work / FITTED_DIR / f"{_file_stem(attacker)}.safetensors").is_file():
        out.unsaved.append(attacker)
        return None
    try:
        module, spec = load_attacker(work, attacker)
    except RunError as exc:  # e.g. written by another version of deepobf attack: re-attack with --retrain
        out.unsaved.append(attacker)
        out.problems.append(str(exc))
        return None
    if spec.get("settings") is not None and spec["settings"] != _stored_settings(work, attacker):
        out.unsaved.append(attacker)
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
                       best_reconstructor=recon.get("best_attacker"), repeated=result.get("repeated") or {})
    for name, metrics in (recon.get("per_attacker") or {}).items():
        if metrics.get("floor"):
            continue  # sees no features: a reference point, not an eavesdropper
        saved = _saved(work, name, out)
        if saved:
            module, spec = saved
            out.reconstructors.append(FittedAttacker(name, "reconstruction", None, module, spec["model"], metrics))
    out.reconstructors.sort(key=lambda a: -(a.metrics.get("ms_ssim") or 0.0))
    loaded: dict[str, tuple[nn.Module, dict[str, Any]] | None] = {}
    for attribute, summary in (result.get("privacy") or {}).items():
        fitted = []
        for name, metrics in (summary.get("per_attacker") or {}).items():
            if metrics.get("floor"):
                continue  # reads C's outputs (or only labels), not the intercepted features
            if name not in loaded:
                loaded[name] = _saved(work, name, out)
            saved = loaded[name]
            if saved and attribute in saved[1].get("attributes", {}) and not saved[1].get("through_classifier"):
                module, spec = saved
                fitted.append(FittedAttacker(name, "attribute", attribute, module[attribute],
                                             spec["attributes"][attribute], metrics))
        fitted.sort(key=lambda a: -(a.metrics.get("balanced_accuracy") or 0.0))
        out.attributes[attribute] = fitted
    return out
