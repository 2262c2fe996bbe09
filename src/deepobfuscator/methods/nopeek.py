"""**NoPeek** (Vepakomma et al., 2020): minimise distance correlation between raw images and features.

Stage 1 trains O+C on ``L(C) + weight * dCor(X, O(X))`` per batch, with X the flattened raw images
and O(X) the flattened features; there is no adversarial stage (stage 2 only trains the run's own
diagnostic attackers on the fixed O).
"""
from __future__ import annotations

from typing import Any

import torch

from ..config import RunConfig
from ..data import Batch
from ..losses import attribute_loss
from ..training.trainer import Trainer
from .registry import Method, no_adversarial, register_method


def _centred_distances(x: torch.Tensor) -> torch.Tensor:
    """Double-centred pairwise Euclidean distance matrix of the rows of ``x`` ``[N, D]``."""
    sq = x.pow(2).sum(1)
    # squared distances, then a tiny floor inside the root: the gradient at zero distance stays finite
    d = torch.sqrt((sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp(min=0.0) + 1e-12)
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation dCor(x, z) in [0, 1] of two batches (rows flattened)."""
    if x.shape[0] != z.shape[0]:
        raise ValueError(f"distance_correlation: batch sizes differ ({x.shape[0]} vs {z.shape[0]})")
    a = _centred_distances(x.reshape(len(x), -1).double())
    b = _centred_distances(z.reshape(len(z), -1).double())
    dcov_xz = (a * b).mean().clamp(min=0.0)
    dvar = ((a * a).mean() * (b * b).mean()).clamp(min=1e-18)
    return torch.sqrt(dcov_xz / torch.sqrt(dvar) + 1e-12).to(z.dtype)


class NoPeekTrainer(Trainer):
    """Stage 1 adds ``baseline.weight * dCor(raw images, features)`` to L(C)."""

    @classmethod
    def cache_signature(cls, cfg: RunConfig, stage: int) -> dict[str, Any]:
        """NoPeek's stage 1 differs from plain pretraining; so does everything after it."""
        return {"nopeek": dict(cfg.baseline)}

    def step_pretrain(self, batch: Batch, step: int) -> dict[str, float]:
        """O and C on L(C) + weight * dCor(X, O(X))."""
        self.modules.set_trainable("obfuscator", "classifier")
        feats = self.features(batch, grad=True)
        l_c = attribute_loss(self.modules.classifier(feats), batch.task, self.task_specs)
        dcor = distance_correlation(batch.images, feats)
        loss = l_c + float(self.cfg.baseline.get("weight", 1.0)) * dcor
        self._update(("obfuscator", "classifier"), loss)
        return {"L_C": l_c.item(), "dCor": dcor.item()}


NOPEEK = register_method(Method(
    "nopeek", "NoPeek", "O+C on L(C) + weight * distance correlation(raw image, features); no adversarial stage",
    defaults={"weight": 1.0}, configure=no_adversarial, trainer_cls=NoPeekTrainer))
