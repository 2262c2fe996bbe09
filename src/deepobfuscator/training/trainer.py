"""Algorithm 1 of the paper: pretrain O+C, pretrain AR+AC on frozen O, then the four-batch cycle.

Stage 3 cycles phases over consecutive batches:
  0. O  <- L(C) + lambda2 * (L(AR2) - L(AR1))      (defend against reconstruction)
  1. O  <- L(C) - lambda1 * L(AC)                   (defend against attribute inference)
  2. AR <- L(AR1), AC <- L(AC)                      (attackers catch up; O frozen)
  3. C  <- L(C)                                     (service classifier catches up; O frozen)
Each phase runs forward/backward only through what its update needs: modules that are not
updated are in eval mode with ``requires_grad=False`` and features are detached where O is fixed.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from ..progress import progress_bar, progress_write

from ..config import RunConfig
from ..data import Batch, PreparedData
from ..losses import (
    MSSSIMSettings, attribute_loss, ms_ssim, predictions, prediction_entropy_loss, reconstruction_loss,
    reconstruction_losses,
)
from ..runs import RunDir
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_modules
from .modules import Modules

STAGES = ("pretrain", "attacker", "adversarial")
PHASES_BY_DEFENCE = {"both": (0, 1, 2, 3), "reconstruction": (0, 2, 3), "attributes": (1, 2, 3), "none": (2, 3)}


class StopTraining(Exception):
    """Raised by a step callback to stop training early (used by tests to simulate a kill)."""


@dataclass
class Position:
    """Where training is: stage index, epoch within the stage, next batch within the epoch."""

    stage: int = 0
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    metrics_lines: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON form."""
        return dict(self.__dict__)


@dataclass
class GradSync:
    """Hook that averages gradients across data-parallel ranks before each optimiser step (no-op here)."""

    rank: int = 0
    world: int = 1

    def __call__(self, params: Iterable[nn.Parameter]) -> None:
        """Average ``params``' gradients across ranks."""

    def reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a tensor of statistics across ranks."""
        return values


@dataclass
class Trainer:
    """Runs the three stages for one run directory; resumable at any checkpoint."""

    cfg: RunConfig
    run: RunDir
    data: PreparedData
    modules: Modules
    msssim: MSSSIMSettings
    noise: torch.Tensor
    progress: bool = True
    device: str = "cpu"
    sync: GradSync = field(default_factory=GradSync)
    on_step: Callable[["Trainer", Position], None] | None = None
    input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    feature_transform: Callable[[torch.Tensor], torch.Tensor] | None = None  # applied to O's output (Hybrid)

    def __post_init__(self) -> None:
        t = self.cfg.train
        self.optimizers = {
            "obfuscator": torch.optim.Adam(self.modules.obfuscator.parameters(), t.lr, weight_decay=t.weight_decay),
            "classifier": torch.optim.Adam(self.modules.classifier.parameters(), t.lr, weight_decay=t.weight_decay),
            "reconstructor": torch.optim.Adam(self.modules.reconstructor.parameters(), t.lr_attacker),
            "adversary": torch.optim.Adam(self.modules.adversary.parameters(), t.lr_attacker),
        }
        self.noise = self.noise.to(self.device)
        self.task_specs, self.private_specs = self.data.task_specs, self.data.private_specs
        if self.cfg.privacy.defend not in PHASES_BY_DEFENCE:
            raise ValueError(f"privacy.defend must be one of {sorted(PHASES_BY_DEFENCE)}, got {self.cfg.privacy.defend!r}")
        base = PHASES_BY_DEFENCE[self.cfg.privacy.defend]
        extra = (2,) * max(0, self.cfg.privacy.attacker_steps - 1)
        self.phases = tuple(p for ph in base for p in ((ph,) + extra if ph == 2 else (ph,)))
        self.position = Position()
        self.has_private = bool(self.private_specs)

    # ----------------------------------------------------------------- plumbing
    def epochs(self, stage: int) -> int:
        """Configured epochs of stage ``stage``."""
        t = self.cfg.train
        return (t.epochs_pretrain, t.epochs_attacker, t.epochs_adversarial)[stage]

    def _update(self, names: tuple[str, ...], loss: torch.Tensor) -> None:
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        for name in names:
            self.sync(getattr(self.modules, name).parameters())
            self.optimizers[name].step()

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images as the obfuscator sees them (baselines may add noise here)."""
        return self.input_transform(images) if self.input_transform else images

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features as the deployed pipeline sends them: O(input_transform(images)), then feature_transform."""
        feats = self.modules.obfuscator(self.prepare_images(images))
        return self.feature_transform(feats) if self.feature_transform else feats

    def features(self, batch: Batch, grad: bool) -> torch.Tensor:
        """O(images); detached (and computed without a graph) when O is not being updated."""
        if grad:
            return self.encode(batch.images)
        with torch.no_grad():
            return self.encode(batch.images)

    # ----------------------------------------------------------------- steps
    def step_pretrain(self, batch: Batch, step: int) -> dict[str, float]:
        """Stage 1: O and C jointly on L(C)."""
        self.modules.set_trainable("obfuscator", "classifier")
        loss = attribute_loss(self.modules.classifier(self.features(batch, grad=True)), batch.task, self.task_specs)
        self._update(("obfuscator", "classifier"), loss)
        return {"L_C": loss.item()}

    def step_attackers(self, batch: Batch) -> dict[str, float]:
        """AR on L(AR1) and AC on L(AC), both on detached features of a fixed O."""
        self.modules.set_trainable("reconstructor", "adversary")
        feats = self.features(batch, grad=False)
        recon = self.modules.reconstructor(feats)
        l_ar1 = reconstruction_loss(recon, batch.images, self.cfg.privacy.reconstruction_loss, self.msssim)
        loss, out = l_ar1, {"L_AR1": l_ar1.item()}
        names: tuple[str, ...] = ("reconstructor",)
        if self.has_private:
            l_ac = attribute_loss(self.modules.adversary(feats), batch.private, self.private_specs)
            loss, names, out["L_AC"] = loss + l_ac, names + ("adversary",), l_ac.item()
        self._update(names, loss)
        return out

    def step_defend_reconstruction(self, batch: Batch) -> dict[str, float]:
        """Phase 0: O <- L(C) + lambda2 (L(AR2) - L(AR1)), C and AR fixed."""
        self.modules.set_trainable("obfuscator")
        feats = self.features(batch, grad=True)
        l_c = attribute_loss(self.modules.classifier(feats), batch.task, self.task_specs)
        recon = self.modules.reconstructor(feats)
        kind = self.cfg.privacy.reconstruction_loss
        l_ar1, l_ar2 = reconstruction_losses(recon, [batch.images, self.noise], kind, self.msssim)
        loss = l_c + self.cfg.privacy.lambda2 * (l_ar2 - l_ar1)
        self._update(("obfuscator",), loss)
        return {"L_C": l_c.item(), "L_AR1": l_ar1.item(), "L_AR2": l_ar2.item()}

    def step_defend_attributes(self, batch: Batch) -> dict[str, float]:
        """Phase 1: O <- L(C) - lambda1 L(AC) (or + lambda1 * negative entropy of AC), C and AC fixed."""
        self.modules.set_trainable("obfuscator")
        feats = self.features(batch, grad=True)
        l_c = attribute_loss(self.modules.classifier(feats), batch.task, self.task_specs)
        adv_logits = self.modules.adversary(feats)
        l_ac = attribute_loss(adv_logits, batch.private, self.private_specs)
        if self.cfg.privacy.attribute_objective == "negative_bce":
            loss = l_c - self.cfg.privacy.lambda1 * l_ac
        elif self.cfg.privacy.attribute_objective == "entropy":
            loss = l_c + self.cfg.privacy.lambda1 * prediction_entropy_loss(adv_logits, self.private_specs)
        else:
            raise ValueError(f"unknown privacy.attribute_objective {self.cfg.privacy.attribute_objective!r}")
        self._update(("obfuscator",), loss)
        return {"L_C": l_c.item(), "L_AC": l_ac.item()}

    def step_classifier(self, batch: Batch) -> dict[str, float]:
        """Phase 3: C <- L(C) on detached features."""
        self.modules.set_trainable("classifier")
        loss = attribute_loss(self.modules.classifier(self.features(batch, grad=False)), batch.task, self.task_specs)
        self._update(("classifier",), loss)
        return {"L_C": loss.item()}

    def step_cycle(self, batch: Batch, step: int) -> dict[str, float]:
        """Stage 3: the phase of this batch in the four-batch cycle."""
        phase = self.phases[step % len(self.phases)]
        if phase == 1 and not self.has_private:
            phase = 3
        fn = (self.step_defend_reconstruction, self.step_defend_attributes,
              lambda b: self.step_attackers(b), self.step_classifier)[phase]
        return {"phase": phase, **fn(batch)}

    def stage_step(self, stage: int) -> Callable[[Batch, int], dict[str, float]]:
        """The step function of ``stage``."""
        return (self.step_pretrain, lambda b, s: self.step_attackers(b), self.step_cycle)[stage]

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def validate(self, stage: int, split: str = "val") -> dict[str, Any]:
        """C accuracy per intended attribute, AC accuracy per private attribute, AR MS-SSIM."""
        self.modules.set_trainable()
        loader = self.data.loader(split, self.cfg.train.eval_batch_size, limit=self.cfg.train.max_val_images,
                                  rank=self.sync.rank, world=self.sync.world)
        n_task, n_priv = len(self.task_specs), len(self.private_specs)
        sums = torch.zeros(1 + n_task + n_priv + 1, dtype=torch.float64)
        for batch in loader.epoch(0):
            batch = batch.to(self.device)
            feats = self.encode(batch.images)
            sums[0] += len(batch.images)
            pred = predictions(self.modules.classifier(feats), self.task_specs)
            sums[1:1 + n_task] += (pred == batch.task).sum(0).double().cpu()
            if stage >= 1:
                if n_priv:
                    pred = predictions(self.modules.adversary(feats), self.private_specs)
                    sums[1 + n_task:1 + n_task + n_priv] += (pred == batch.private).sum(0).double().cpu()
                recon = self.modules.reconstructor(feats)
                sums[-1] += ms_ssim(recon, batch.images, self.msssim).sum().double().cpu()
        sums = self.sync.reduce_sum(sums)
        n = max(sums[0].item(), 1.0)
        out: dict[str, Any] = {"C_acc": {s.name: sums[1 + i].item() / n for i, s in enumerate(self.task_specs)}}
        if stage >= 1:
            out["AC_acc"] = {s.name: sums[1 + n_task + i].item() / n for i, s in enumerate(self.private_specs)}
            out["AR_msssim"] = sums[-1].item() / n
        return out

    # ----------------------------------------------------------------- loop
    def _log(self, record: dict[str, Any]) -> None:
        if self.sync.rank != 0:
            return
        with open(self.run.metrics, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.position.metrics_lines += 1

    def _checkpoint(self) -> None:
        if self.sync.rank != 0:
            return
        save_checkpoint(self.run.checkpoints, dict(self.modules.items()), self.optimizers, self.position.as_dict())

    def resume(self) -> bool:
        """Restore the latest checkpoint if there is one; returns True if it did."""
        ckpt = latest_checkpoint(self.run.checkpoints)
        if ckpt is None:
            return False
        state = load_checkpoint(ckpt, dict(self.modules.items()), self.optimizers)
        self.position = Position(**state)
        if self.run.metrics.is_file() and self.sync.rank == 0:  # drop records written after the checkpoint
            lines = self.run.metrics.read_text().splitlines(keepends=True)[: self.position.metrics_lines]
            self.run.metrics.write_text("".join(lines))
        return True

    def fit(self) -> dict[str, Any]:
        """Train from the current position to the end; write the final weights; return last metrics."""
        last: dict[str, Any] = {}
        pos = self.position
        t = self.cfg.train
        while pos.stage < len(STAGES):
            if pos.epoch >= self.epochs(pos.stage):
                pos.stage, pos.epoch, pos.step = pos.stage + 1, 0, 0
                continue
            loader = self.data.loader("train", t.batch_size, shuffle=True, seed=t.seed * 1000 + pos.stage,
                                      drop_last=True, rank=self.sync.rank, world=self.sync.world)
            step_fn = self.stage_step(pos.stage)
            name = STAGES[pos.stage]
            bar = progress_bar(total=len(loader), initial=pos.step, disable=not self.progress or self.sync.rank != 0,
                       desc=f"{name} {pos.epoch + 1}/{self.epochs(pos.stage)}", unit="batch", leave=False)
            started, steps_timed = time.perf_counter(), 0
            for batch in loader.epoch(pos.epoch, start=pos.step):
                losses = step_fn(batch.to(self.device), pos.step)
                pos.step += 1
                pos.global_step += 1
                steps_timed += 1
                bar.update(1)
                bar.set_postfix({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in losses.items()})
                if self.on_step:
                    self.on_step(self, pos)
                if t.checkpoint_every and pos.global_step % t.checkpoint_every == 0 and pos.step < len(loader):
                    self._checkpoint()
            seconds = time.perf_counter() - started
            bar.close()
            val = self.validate(pos.stage)
            last = {"stage": name, "epoch": pos.epoch + 1, "split": "val", "seconds": seconds,
                    "seconds_per_batch": seconds / max(steps_timed, 1), "batches": len(loader), **val}
            self._log(last)
            if self.progress and self.sync.rank == 0:
                progress_write(format_metrics(last))
            pos.epoch, pos.step = pos.epoch + 1, 0
            self._checkpoint()
        if self.sync.rank == 0:
            save_modules(dict(self.modules.items()), self.run.final,
                         metadata={"run": self.cfg.name, "method": self.cfg.method})
        return last


def format_metrics(rec: dict[str, Any]) -> str:
    """One human line for a metrics record."""
    parts = [f"[{rec['stage']} {rec['epoch']}] {rec['seconds']:.1f}s"]
    parts += [f"C {k}={v:.3f}" for k, v in rec.get("C_acc", {}).items()]
    parts += [f"AC {k}={v:.3f}" for k, v in rec.get("AC_acc", {}).items()]
    if "AR_msssim" in rec:
        parts.append(f"AR ms-ssim={rec['AR_msssim']:.3f}")
    return "  ".join(parts)


def noise_tensor(run: RunDir) -> torch.Tensor:
    """The run's saved noise image."""
    return run.read_noise()


def summary_path(run: RunDir) -> Path:
    """Where ``train`` writes its final summary."""
    return run.path / "train_summary.json"


def majority_rate(labels: np.ndarray) -> float:
    """Share of the most frequent class."""
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / counts.sum()) if len(counts) else float("nan")
