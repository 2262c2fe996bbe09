"""The deployed pipeline of a run: its method's input transform -> O -> its method's feature transform.

Training, attacks, export, serving and inspection all get a run's modules with these transforms set
on :class:`~deepobfuscator.training.Modules` (``modules.encode(images)`` is what the phone sends), so no
defence can be evaluated differently from how it was trained and deployed.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..config import RunConfig
from ..runs import RunDir, RunError, run_specs
from ..training.checkpoint import load_modules
from ..training.modules import Modules, build_modules
from .registry import get_method


def attach_transforms(cfg: RunConfig, modules: Modules, run_path: Path, device: str = "cpu",
                      required: bool = False) -> Modules:
    """Set the run method's input and feature transforms on ``modules`` (``required``: its fitted state must exist)."""
    method = get_method(cfg.method)
    modules.input_transform = method.input_transform(cfg) if method.input_transform else None
    feature = method.feature_transform(cfg, Path(run_path)) if method.feature_transform else None
    if method.feature_transform and feature is None and required:
        raise RunError(f"{run_path}: the {method.name} feature transform was never fitted (was the run trained to the end?)")
    if isinstance(feature, nn.Module):
        feature = feature.to(device).eval()
    modules.feature_transform = feature
    return modules


def load_trained(run: RunDir, device: str = "cpu", cfg: RunConfig | None = None) -> tuple[RunConfig, Modules]:
    """The run's config and its final modules (all four, eval mode, on ``device``) with the method's transforms."""
    cfg = cfg or run.read_config()
    if not run.final.is_file():
        raise RunError(f"{run.path}: training has not finished (no {run.final.relative_to(run.path)})")
    task_specs, private_specs = run_specs(cfg)
    modules = build_modules(cfg, task_specs, private_specs)
    load_modules(dict(modules.items()), run.final)
    modules.to(device)
    modules.set_trainable()
    attach_transforms(cfg, modules, run.path, device, required=True)
    return cfg, modules
