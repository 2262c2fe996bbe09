"""The run directory: the only contract between `deepobf` commands.

``config.yaml`` (resolved config with provenance), ``split.json``, ``noise.png``,
``checkpoints/`` (``final.safetensors`` + resumable ``step-*`` dirs), ``metrics.jsonl``, ``train_summary.json``; later
commands add ``attack.json``, ``attack.md``, ``recon_grid.png`` and ``export/``.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .config import RunConfig, load_config
from .data import AttributeSpec, PreparedData, load_index, load_split, prepare_data
from .utils import atomic_write_bytes


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
    summary = property(lambda self: self.path / "train_summary.json")

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
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        atomic_write_bytes(self.noise, buf.getvalue())

    def read_noise(self) -> torch.Tensor:
        """The noise image as ``[1, 3, H, W]`` float in [0, 1]."""
        if not self.noise.is_file():
            raise RunError(f"{self.noise}: noise image missing")
        arr = np.asarray(Image.open(self.noise).convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0

    def read_summary(self) -> dict[str, Any]:
        """``train_summary.json`` (what training wrote at its end), or {} before the run has one."""
        if not self.summary.is_file():
            return {}
        try:
            return json.loads(self.summary.read_text())
        except json.JSONDecodeError as exc:
            raise RunError(f"{self.summary}: not valid JSON: {exc}") from exc

    def read_metrics(self) -> list[dict[str, Any]]:
        """All records of ``metrics.jsonl``."""
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]


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
