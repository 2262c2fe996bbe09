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

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..config import RunConfig
from ..data import AttributeSpec, Batch, BatchLoader, PreparedData
from ..losses import (
    MSSSIMSettings, attribute_defence_loss, attribute_loss, ms_ssim, predictions, reconstruction_loss,
    reconstruction_losses,
)
from ..runs import RunDir
from .modules import Modules
from .staged import GradSync, Position, StagedTrainer

STAGES = ("pretrain", "attacker", "adversarial")
PHASES_BY_DEFENCE = {"both": (0, 1, 2, 3), "reconstruction": (0, 2, 3), "attributes": (1, 2, 3), "none": (2, 3)}


@dataclass
class Trainer(StagedTrainer):
    """Runs the three stages of Algorithm 1 for one run directory; resumable at any checkpoint."""

    stages = STAGES

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

    def begin_epoch(self, stage: int) -> None:
        """``train.lr_drop_epochs``: O's and C's rate for this stage-1 epoch, :meth:`base_rate` or, in the last N
        epochs, ``lr_drop_factor`` times it."""
        t = self.cfg.train
        if stage != 0 or not t.lr_drop_epochs:
            return
        if t.lr_drop_epochs < 0 or not 0 < t.lr_drop_factor <= 1:
            raise ValueError(f"train.lr_drop_epochs must be >= 0 and train.lr_drop_factor in (0, 1], got "
                             f"{t.lr_drop_epochs} and {t.lr_drop_factor}")
        late = self.position.epoch >= self.epochs(0) - t.lr_drop_epochs
        self.set_rate(self.base_rate() * (t.lr_drop_factor if late else 1.0))

    def base_rate(self) -> float:
        """O's and C's learning rate at the current position before any step decay: the run's ``train.lr`` (a method
        may lower it from some epoch on; the decay then divides that rate)."""
        return self.cfg.train.lr

    def set_rate(self, rate: float) -> None:
        """O's and C's learning rate from now on (the attackers keep theirs)."""
        for name in ("obfuscator", "classifier"):
            for group in self.optimizers[name].param_groups:
                group["lr"] = rate

    @classmethod
    def resolve_at_creation(cls, cfg: RunConfig, task_specs: list[AttributeSpec]) -> None:
        """Settings a method chooses once the run's intended attributes are known (e.g. from their classes), filled
        into ``cfg`` before ``config.yaml`` is written so it records what ran; none by default."""

    # ----------------------------------------------------------------- plumbing
    def module_dict(self) -> dict[str, nn.Module]:
        """O, C, AR and AC by name."""
        return dict(self.modules.items())

    def epochs(self, stage: int) -> int:
        """Configured epochs of stage ``stage``."""
        t = self.cfg.train
        return (t.epochs_pretrain, t.epochs_attacker, t.epochs_adversarial)[stage]

    def train_loader(self, stage: int) -> BatchLoader:
        """This rank's shuffled training batches of ``stage`` (seeded per stage)."""
        t = self.cfg.train
        return self.data.loader("train", t.batch_size, shuffle=True, seed=t.seed * 1000 + stage, drop_last=True,
                                rank=self.sync.rank, world=self.sync.world)

    def checkpoint_every(self) -> int:
        """``train.checkpoint_every`` steps between mid-epoch checkpoints."""
        return self.cfg.train.checkpoint_every

    def epoch_record(self, stage: int, seconds: float, steps: int, batches: int,
                     val: dict[str, Any]) -> dict[str, Any]:
        """The metrics.jsonl record of one finished epoch (with seconds per batch)."""
        return {"stage": STAGES[stage], "epoch": self.position.epoch + 1, "split": "val", "seconds": seconds,
                "seconds_per_batch": seconds / max(steps, 1), "batches": batches, **val}

    def format_record(self, record: dict[str, Any]) -> str:
        """One human line for a metrics record."""
        return format_metrics(record)

    def final_metadata(self) -> dict[str, str]:
        """Run name and method, stored with the final weights."""
        return {"run": self.cfg.name, "method": self.cfg.method}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features as the deployed pipeline sends them (:meth:`Modules.encode`: the method's transforms around O)."""
        return self.modules.encode(images)

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
        loss = attribute_defence_loss(l_c, adv_logits, l_ac, self.private_specs, self.cfg.privacy.attribute_objective,
                                      self.cfg.privacy.lambda1)
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


def format_metrics(rec: dict[str, Any]) -> str:
    """One human line for a metrics record."""
    parts = [f"[{rec['stage']} {rec['epoch']}] {rec['seconds']:.1f}s"]
    if "warm_acc" in rec:  # a warm epoch trains O's front with an auxiliary head; C has not trained yet
        parts += [f"warm-up head {k}={v:.3f}" for k, v in rec["warm_acc"].items()] + ["(C not trained yet)"]
    else:
        parts += [f"C {k}={v:.3f}" for k, v in rec.get("C_acc", {}).items()]
    parts += [f"AC {k}={v:.3f}" for k, v in rec.get("AC_acc", {}).items()]
    if "AR_msssim" in rec:
        parts.append(f"AR ms-ssim={rec['AR_msssim']:.3f}")
    if "deployed" in rec:  # the end of a stage that chose its epoch by validation
        parts.append(f"-> deploying epoch {rec['deployed']['epoch']} (validation {rec['deployed']['val_utility']:.3f})")
    return "  ".join(parts)
