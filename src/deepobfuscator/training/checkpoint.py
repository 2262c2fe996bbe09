"""Checkpoints: module weights in safetensors, optimiser/RNG state loadable with weights_only=True.

Each checkpoint is a directory ``checkpoints/step-NNNNNNNN/``; ``checkpoints/latest.json`` names
the newest complete one and is replaced atomically, so a run killed while writing keeps its
previous checkpoint.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..utils import atomic_write_bytes, atomic_write_json


def module_tensors(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Flatten state dicts as ``name.param`` -> contiguous CPU tensor."""
    out = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            out[f"{name}.{key}"] = value.detach().cpu().contiguous()
    return out


def save_modules(modules: dict[str, nn.Module], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write modules to one safetensors file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(module_tensors(modules), str(tmp), metadata=metadata or {})
    tmp.replace(path)


def file_metadata(path: Path) -> dict[str, str]:
    """The string metadata a safetensors file was written with (:func:`save_modules`' ``metadata``)."""
    with safe_open(str(path), "pt") as handle:
        return dict(handle.metadata() or {})


def load_modules(modules: dict[str, nn.Module], path: Path, strict: bool = True) -> None:
    """Load weights written by :func:`save_modules` into ``modules`` (those present in the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    tensors = load_file(str(path))
    for name, module in modules.items():
        prefix = f"{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not state:
            if strict:
                raise KeyError(f"{path}: no weights for module '{name}'")
            continue
        module.load_state_dict(state, strict=True)


def save_checkpoint(ckpt_dir: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    state: dict[str, Any], keep: int = 1) -> Path:
    """Write a resumable checkpoint and point ``latest.json`` at it; prune older ones."""
    ckpt_dir = Path(ckpt_dir)
    name = f"step-{int(state['global_step']):08d}"
    target = ckpt_dir / name
    tmp = ckpt_dir / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_modules(modules, tmp / "modules.safetensors")
    buf = io.BytesIO()
    torch.save({"optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "torch_rng": torch.get_rng_state()}, buf)
    atomic_write_bytes(tmp / "optim.pt", buf.getvalue())
    atomic_write_json(tmp / "state.json", state)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    atomic_write_json(ckpt_dir / "latest.json", {"checkpoint": name, **state})
    old = sorted(p for p in ckpt_dir.glob("step-*") if p.name != name)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return target


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    pointer = Path(ckpt_dir) / "latest.json"
    if not pointer.is_file():
        return None
    target = Path(ckpt_dir) / json.loads(pointer.read_text())["checkpoint"]
    return target if (target / "state.json").is_file() else None


def load_checkpoint(path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """Restore modules, optimisers and the torch RNG; return the saved training state. Modules and optimisers named in
    ``optional`` may be missing from the checkpoint (one written before they were checkpointed): they keep their
    state."""
    path = Path(path)
    load_modules({k: m for k, m in modules.items() if k not in optional}, path / "modules.safetensors")
    load_modules({k: m for k, m in modules.items() if k in optional}, path / "modules.safetensors", strict=False)
    extra = torch.load(path / "optim.pt", weights_only=True)
    for key, opt in optimizers.items():
        if key in optional and key not in extra["optimizers"]:
            continue
        opt.load_state_dict(extra["optimizers"][key])
    torch.set_rng_state(extra["torch_rng"])
    return json.loads((path / "state.json").read_text())
