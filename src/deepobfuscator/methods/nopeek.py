"""**NoPeek** (Vepakomma et al., 2020): minimise distance correlation between raw images and features.

Stage 1 trains O+C on ``L(C) + weight * dCor(X, O(X))`` per batch, with X the flattened raw images
and O(X) the flattened features; there is no adversarial stage (stage 2 only trains the run's own
diagnostic attackers on the fixed O).
"""
from __future__ import annotations

from typing import Any

from ..config import RunConfig
from ..data import Batch
from ..dependence import distance_correlation
from ..losses import attribute_loss
from ..training.trainer import Trainer
from .params import MethodParams, param, search, validate_params
from .registry import Method, no_adversarial, register_method


class NoPeekParams(MethodParams):
    """NoPeek's parameters."""

    weight: float = param(1.0, "weight of the distance correlation between raw images and features", ge=0,
                          tune=search(0.1, 10.0, log=True))


class NoPeekTrainer(Trainer):
    """Stage 1 adds ``method.weight * dCor(raw images, features)`` to L(C)."""

    @classmethod
    def cache_signature(cls, cfg: RunConfig, stage: int) -> dict[str, Any]:
        """NoPeek's stage 1 differs from plain pretraining; so does everything after it."""
        return {"nopeek": dict(cfg.params)}

    def step_pretrain(self, batch: Batch, step: int) -> dict[str, float]:
        """O and C on L(C) + weight * dCor(X, O(X))."""
        self.modules.set_trainable("obfuscator", "classifier")
        feats = self.features(batch, grad=True)
        l_c = attribute_loss(self.modules.classifier(feats), batch.task, self.task_specs)
        dcor = distance_correlation(batch.images, feats)
        loss = l_c + validate_params(NoPeekParams, self.cfg.params, "nopeek").weight * dcor
        self._update(("obfuscator", "classifier"), loss)
        return {"L_C": l_c.item(), "dCor": dcor.item()}


NOPEEK = register_method(Method(
    "nopeek", "NoPeek", "O+C on L(C) + weight * distance correlation(raw image, features); no adversarial stage",
    params=NoPeekParams, configure=no_adversarial, trainer_cls=NoPeekTrainer))
