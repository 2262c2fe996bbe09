"""The run directory: the only contract between `deepobf` commands.

``config.yaml`` (resolved config with provenance), ``split.json``, ``noise.png``,
``checkpoints/`` (``final.safetensors`` + resumable ``step-*`` dirs), ``metrics.jsonl``; later
commands add ``attack.json``, ``attack.md``, ``recon_grid.png`` and ``export/``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .config import RunConfig, load_config, save_config
from .data import AttributeSpec, PreparedData, load_index, load_split, prepare_data, save_split
from .losses import MSSSIMSettings, make_noise_image, resolve_msssim
from .utils import atomic_write_bytes

if TYPE_CHECKING:
    from .training.modules import Modules


class RunError(RuntimeError):
    """A run directory is missing, incomplete or inconsistent."""


@dataclass
class RunDir:
    """Paths of a run directory and readers for what other commands wrote."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    config = property(lambda self: self.path / "config.yaml")
    split = property(lambda self: self.path / "split.json")
    noise = property(lambda self: self.path / "noise.png")
    checkpoints = property(lambda self: self.path / "checkpoints")
    final = property(lambda self: self.path / "checkpoints" / "final.safetensors")
    metrics = property(lambda self: self.path / "metrics.jsonl")

    def exists(self) -> bool:
        """True if a config has been written here."""
        return self.config.is_file()

    def is_complete(self) -> bool:
        """True once training wrote its final weights."""
        return self.final.is_file()

    def read_config(self) -> RunConfig:
        """The resolved run config."""
        if not self.config.is_file():
            raise RunError(f"{self.path}: not a run directory (no config.yaml)")
        return load_config(self.config)

    def write_noise(self, image: np.ndarray) -> None:
        """Save the fixed noise image as PNG (lossless)."""
        import io

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        atomic_write_bytes(self.noise, buf.getvalue())

    def read_noise(self) -> torch.Tensor:
        """The noise image as ``[1, 3, H, W]`` float in [0, 1]."""
        if not self.noise.is_file():
            raise RunError(f"{self.noise}: noise image missing")
        arr = np.asarray(Image.open(self.noise).convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0

    def read_metrics(self) -> list[dict[str, Any]]:
        """All records of ``metrics.jsonl``."""
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]


def init_run(run: RunDir, cfg: RunConfig, progress: bool = True) -> tuple[PreparedData, MSSSIMSettings]:
    """Create (or re-open) a run: write config, split and noise image once; return its data."""
    settings = resolve_msssim(cfg.msssim, cfg.data.image_size)
    if run.exists():
        data, _ = open_run_data(run, cfg, progress=progress)
        return data, settings
    from . import __version__
    from .utils import git_commit

    index = load_index(cfg.data.dataset, cfg.data.root, cfg.data.max_images, cfg.data.cache_dir)
    data, split = prepare_data(cfg.data, index=index, progress=progress)
    run.path.mkdir(parents=True, exist_ok=True)  # only once the data is known good: a typo leaves no directory
    cfg.data.root = str(index.root)
    from .training.modules import feature_shape

    cfg.meta.update({"version": __version__, "commit": git_commit(), "msssim": settings.as_dict(),
                     "feature_shape": list(feature_shape(cfg)), "split_source": split["source"],
                     "task_specs": [spec_to_dict(s) for s in data.task_specs],
                     "private_specs": [spec_to_dict(s) for s in data.private_specs],
                     "split_sizes": {k: len(split[k]) for k in ("train", "val", "test")}})
    save_split(split, run.split)
    run.write_noise(make_noise_image(cfg.data.image_size, cfg.privacy.noise_seed, cfg.privacy.noise_std))
    save_config(cfg, run.config)
    return data, settings


def open_run_data(run: RunDir, cfg: RunConfig | None = None, progress: bool = True,
                  root: str | None = None) -> tuple[PreparedData, RunConfig]:
    """The run's dataset with its recorded split (or, with ``root``, another dataset root, freshly split)."""
    cfg = cfg or run.read_config()
    if root is not None:
        data_cfg = type(cfg.data)(**{**cfg.data.__dict__, "root": str(root)})
        data, _ = prepare_data(data_cfg, progress=progress)
        return data, cfg
    index = load_index(cfg.data.dataset, cfg.data.root, cfg.data.max_images, cfg.data.cache_dir)
    split = json.loads(run.split.read_text()) if run.split.is_file() else None
    if split is None:
        raise RunError(f"{run.split}: split file missing")
    load_split(run.split, index)  # validates the fingerprint
    data, _ = prepare_data(cfg.data, split=split, progress=progress, index=index)
    return data, cfg


def spec_to_dict(spec: AttributeSpec) -> dict[str, Any]:
    """JSON form of an attribute spec."""
    return {"name": spec.name, "num_classes": spec.num_classes,
            "classes": list(spec.classes) if spec.classes else None}


def run_specs(cfg: RunConfig) -> tuple[list[AttributeSpec], list[AttributeSpec]]:
    """Intended and private attribute specs recorded in a run's config."""
    if "task_specs" not in cfg.meta:
        raise RunError("config.yaml lacks meta.task_specs (was it written by deepobf train?)")

    def build(items: list[dict]) -> list[AttributeSpec]:
        return [AttributeSpec(d["name"], int(d["num_classes"]), tuple(d["classes"]) if d.get("classes") else None)
                for d in items]

    return build(cfg.meta["task_specs"]), build(cfg.meta["private_specs"])


def load_trained(run: RunDir, device: str = "cpu", cfg: RunConfig | None = None) -> tuple[RunConfig, "Modules"]:
    """The run's config and its final modules (all four), in eval mode on ``device``."""
    from .training.checkpoint import load_modules
    from .training.modules import build_modules

    cfg = cfg or run.read_config()
    if not run.final.is_file():
        raise RunError(f"{run.path}: training has not finished (no {run.final.relative_to(run.path)})")
    task_specs, private_specs = run_specs(cfg)
    modules = build_modules(cfg, task_specs, private_specs)
    load_modules(dict(modules.items()), run.final)
    modules.to(device)
    modules.set_trainable()
    from .baselines.registry import attach_run_state  # some defences keep extra state (Hybrid's PCA)

    attach_run_state(run.path, cfg, modules)
    return cfg, modules
