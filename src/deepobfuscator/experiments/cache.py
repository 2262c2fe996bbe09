"""Pretrain cache: runs whose first stages are configured identically share one trained copy of them.

After stage 1 (O+C on L(C)) and after stage 2 (AR+AC on the fixed O) the trainer's end-of-stage
checkpoint is copied to ``CACHE/<key>/``; ``key`` hashes every config field that can influence those
stages (everything except fields listed in :data:`LATER_ONLY`) plus the trainer's
``cache_signature`` (input noise, NoPeek weight, Hybrid PCA...). A new run with the same key starts
from a copy of that checkpoint (weights, optimiser and RNG state, metrics lines), exactly as if it had
been resumed there, and records ``pretrain_cache.json``. Trainer classes that do not declare a
``cache_signature`` (other than the plain :class:`Trainer`) are never cached.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import RunConfig
from ..runs import RunDir
from ..training.checkpoint import latest_checkpoint
from ..training.trainer import Trainer
from ..utils import atomic_write_json, atomic_write_text

_ALWAYS = ("name", "method", "meta", "baseline", "data.cache_dir", "train.checkpoint_every", "train.threads",
           "train.epochs_adversarial", "privacy.defend", "privacy.lambda1", "privacy.lambda2",
           "privacy.attribute_objective", "privacy.noise_seed", "privacy.noise_std")
# stage index -> config fields that cannot influence the run up to the end of that stage
LATER_ONLY: dict[int, tuple[str, ...]] = {
    0: _ALWAYS + ("msssim", "privacy.reconstruction_loss", "train.epochs_attacker", "train.lr_attacker"),
    1: _ALWAYS,
}


def _drop(raw: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.get(part, {})
    node.pop(leaf, None)


def signature(trainer_cls: type, cfg: RunConfig, stage: int) -> dict[str, Any] | None:
    """What a trainer class adds to the stage key; None if the class cannot be cached."""
    base = getattr(trainer_cls, "base_trainer", trainer_cls)
    fn = getattr(base, "cache_signature", None)
    if fn is not None:
        return dict(fn(cfg, stage))  # {} declares the stage identical to plain Algorithm 1's
    return {} if base is Trainer else None


def stage_key(cfg: RunConfig, stage: int, trainer_cls: type = Trainer) -> str | None:
    """Hash of everything that shapes the run up to the end of ``stage`` (0 or 1); None if uncacheable."""
    sig = signature(trainer_cls, cfg, stage)
    if sig is None or stage not in LATER_ONLY:
        return None
    raw = copy.deepcopy(cfg.to_dict())
    for dotted in LATER_ONLY[stage]:
        _drop(raw, dotted)
    blob = json.dumps({"config": raw, "stage": stage, "signature": sig, "version": __version__},
                      sort_keys=True, default=str)
    return f"stage{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


class PretrainCache:
    """A directory of end-of-stage checkpoints shared between runs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def wrap(self, trainer_cls: type[Trainer]) -> type[Trainer]:
        """A subclass of ``trainer_cls`` that stores its end-of-stage checkpoints here."""
        cache = self

        class CachingTrainer(trainer_cls):  # type: ignore[misc, valid-type]
            base_trainer = trainer_cls

            def _checkpoint(self) -> None:
                super()._checkpoint()
                cache.store(self)

        CachingTrainer.__name__ = CachingTrainer.__qualname__ = f"Caching{trainer_cls.__name__}"
        return CachingTrainer

    def store(self, trainer: Trainer) -> Path | None:
        """Copy the trainer's checkpoint if it marks the end of stage 1 or 2 and is not cached yet."""
        pos = trainer.position
        if trainer.sync.rank != 0 or pos.step != 0 or pos.stage not in LATER_ONLY:
            return None
        if pos.epoch != trainer.epochs(pos.stage) or pos.epoch == 0:
            return None
        key = stage_key(trainer.cfg, pos.stage, type(trainer))
        ckpt = latest_checkpoint(trainer.run.checkpoints)
        if key is None or ckpt is None or (self.root / key).is_dir():
            return None
        # a folder of this process's own, renamed into place in one step: concurrent workers never see (or remove)
        # each other's partial copies, and the first to finish wins
        tmp = self.root / f".{key}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
        tmp.mkdir(parents=True)
        shutil.copytree(ckpt, tmp / "checkpoint")
        lines = trainer.run.metrics.read_text().splitlines(keepends=True) if trainer.run.metrics.is_file() else []
        atomic_write_text(tmp / "metrics.jsonl", "".join(lines[: pos.metrics_lines]))
        atomic_write_json(tmp / "info.json", {"key": key, "stage": pos.stage, "checkpoint": ckpt.name,
                                              "state": pos.as_dict(), "source_run": str(trainer.run.path)})
        try:
            tmp.rename(self.root / key)
        except OSError:  # another worker stored the same stage first
            shutil.rmtree(tmp, ignore_errors=True)
        return self.root / key

    def restore(self, trainer: Trainer) -> int | None:
        """Start a fresh run from the latest cached stage matching it; return that stage (or None)."""
        run: RunDir = trainer.run
        if latest_checkpoint(run.checkpoints) is not None:
            return None
        for stage in sorted(LATER_ONLY, reverse=True):
            key = stage_key(trainer.cfg, stage, type(trainer))
            entry = self.root / key if key else None
            if entry is None or not (entry / "info.json").is_file():
                continue
            info = json.loads((entry / "info.json").read_text())
            run.checkpoints.mkdir(parents=True, exist_ok=True)
            target = run.checkpoints / info["checkpoint"]
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(entry / "checkpoint", target)
            atomic_write_text(run.metrics, (entry / "metrics.jsonl").read_text())
            atomic_write_json(run.checkpoints / "latest.json", {"checkpoint": info["checkpoint"], **info["state"]})
            atomic_write_json(run.path / "pretrain_cache.json", {"restored_stage": stage, "key": key,
                                                                 "source_run": info["source_run"]})
            trainer.resume()
            return stage
        return None
