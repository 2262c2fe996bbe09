"""Attribute-inference attackers: a registered feature classifier trained from scratch per private attribute
(BCE for binary, cross-entropy for multi-class attributes), and the evaluation shared with the deployed C."""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from ..progress import progress_bar

from ..data import AttributeSpec
from ..losses import attribute_loss, predictions, probabilities
from ..metrics import classification_report
from ..models import build_classifier
from .base import AttackContext, attacker_seed
from .features import FeatureSet


@torch.no_grad()
def predict_logits(model: nn.Module, features: FeatureSet, ctx: AttackContext) -> torch.Tensor:
    """Logits of ``model`` on every row of ``features``."""
    model.eval()
    out = [model(b.features.to(ctx.device)).float().cpu() for b in features.batches(ctx.settings.eval_batch_size)]
    return torch.cat(out)


def score_logits(logits: torch.Tensor, labels: np.ndarray, spec: AttributeSpec, n_boot: int, seed: int) -> dict[str, Any]:
    """Classification report of one attribute's logits against ``labels``."""
    pred = predictions(logits, [spec])[:, 0].numpy()
    scores = probabilities(logits, [spec])[0].numpy()
    return classification_report(labels, pred, scores, n_boot=n_boot, seed=seed)


def train_classifier(model: nn.Module, train: FeatureSet, spec: AttributeSpec, ctx: AttackContext, seed: int,
                     desc: str) -> dict[str, Any]:
    """Fit ``model`` on ``train`` features to predict ``spec`` (BCE or CE); return training stats."""
    s = ctx.settings
    labels = torch.from_numpy(train.labels(spec.name)).long()
    model.to(ctx.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    steps = s.attr_epochs * math.ceil(len(train) / s.batch_size)
    bar = progress_bar(total=steps, desc=desc, unit="batch", disable=not ctx.progress, leave=False)
    started, last = time.perf_counter(), []
    for epoch in range(s.attr_epochs):
        last = []
        for batch in train.batches(s.batch_size, shuffle=True, seed=seed, epoch=epoch):
            bar.update(1)
            if len(batch.rows) < 2:  # BatchNorm needs two samples
                continue
            target = labels[batch.rows].unsqueeze(1).to(ctx.device)
            loss = attribute_loss(model(batch.features.to(ctx.device)), target, [spec])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            last.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    model.eval()
    return {"epochs": s.attr_epochs, "train_images": len(train),
            "final_epoch_loss": float(np.mean(last)) if last else None,
            "seconds": round(time.perf_counter() - started, 3),
            "parameters": sum(p.numel() for p in model.parameters())}


class AttributeAttack:
    """One classifier architecture, trained from scratch for each private attribute."""

    kind = "attribute"
    trains = True

    def __init__(self, name: str, architecture: str, description: str) -> None:
        self.name, self.architecture, self.description = name, architecture, description

    def relevant_settings(self, ctx: AttackContext) -> dict[str, Any]:
        """Settings that change this attacker's result."""
        s = ctx.settings
        return {"architecture": self.architecture, "epochs": s.attr_epochs, "lr": s.lr, "batch_size": s.batch_size,
                "max_train_images": s.max_train_images, "bootstrap": s.bootstrap, "seed": s.seed}

    def attack(self, train: FeatureSet, test: FeatureSet, specs: list[AttributeSpec], ctx: AttackContext
               ) -> dict[str, dict[str, Any]]:
        """Train on ``train`` and score on ``test`` for each attribute of ``specs``."""
        out = {}
        m = ctx.cfg.model
        channels, h, w = train.features.shape[1:]
        for spec in specs:
            seed = attacker_seed(ctx.settings.seed, self.name, spec.name)
            torch.manual_seed(seed)
            model = build_classifier(self.architecture, channels, (h, w), spec.num_outputs, width=m.width,
                                     fc_width=m.fc_width, batch_norm=m.batch_norm, dropout=m.dropout)
            stats = train_classifier(model, train, spec, ctx, seed, desc=f"attack {self.name} {spec.name}")
            logits = predict_logits(model, test, ctx)
            report = score_logits(logits, test.labels(spec.name), spec, ctx.settings.bootstrap, seed)
            out[spec.name] = {**report, "training": stats}
        return out
