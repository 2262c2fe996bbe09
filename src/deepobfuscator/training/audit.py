"""Checkpoint choice by an audit, not by the co-trained adversary (the ``hardened`` defence's fourth mechanism).

At the end of an epoch a fresh linear probe and a fresh small CNN (fixed budget) are trained from scratch to
predict each private attribute from the sent features of train-split images (a fresh noise draw every
epoch, as an eavesdropper collecting traffic would get) and scored by balanced accuracy on validation
images. The *audit leakage* is the best of them. :func:`select_epoch` then picks the epoch with the lowest
audit leakage among those whose utility stays within ``max_utility_drop`` of the reference (stage 1's).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..data import PreparedData
from ..data.index import AttributeSpec
from ..losses import attribute_loss, predictions
from ..metrics import balanced_accuracy

Encode = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AuditSettings:
    """Budget of the audit attackers."""

    train_images: int = 2000
    val_images: int = 800
    epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    eval_split: str = "val"  # the benchmark scores a bigger audit on "test"


def small_cnn(channels: int, num_outputs: int, width: int = 32) -> nn.Module:
    """The audit's small CNN: two 3x3 conv layers, global average pool, linear."""
    return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_outputs))


def linear_probe(in_features: int, num_outputs: int) -> nn.Module:
    """The audit's linear attacker on the flattened features (every position, not pooled)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_outputs))


@torch.no_grad()
def _encode_split(encode: Encode, data: PreparedData, split: str, limit: int, batch_size: int,
                  device: str) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    for batch in data.loader(split, batch_size, limit=limit).epoch(0):
        feats.append(encode(batch.images.to(device)).float())
        labels.append(batch.private.to(device))
    return torch.cat(feats), torch.cat(labels)


def audit_leakage(encode: Encode, data: PreparedData, specs: Sequence[AttributeSpec], settings: AuditSettings,
                  device: str = "cpu") -> dict[str, Any]:
    """Balanced accuracy on ``settings.eval_split`` of fresh linear and small-CNN attackers per private attribute,
    trained on train-split features; ``leakage`` = the best attacker per attribute, averaged over attributes."""
    if not specs:
        return {"leakage": None}
    torch.manual_seed(settings.seed)
    val_x, val_y = _encode_split(encode, data, settings.eval_split, settings.val_images, 256, device)
    shape = tuple(val_x.shape[1:])
    n_out = sum(s.num_outputs for s in specs)
    models = {"linear": linear_probe(int(np.prod(shape)), n_out), "cnn": small_cnn(shape[0], n_out)}
    optims = {k: torch.optim.Adam(m.parameters(), settings.lr) for k, m in models.items()}
    for m in models.values():
        m.to(device)
    for _ in range(settings.epochs):  # a fresh draw of the sent features on every epoch
        x, y = _encode_split(encode, data, "train", settings.train_images, 256, device)
        order = torch.randperm(len(x))
        for start in range(0, len(x) - 1, settings.batch_size):
            rows = order[start:start + settings.batch_size]
            if len(rows) < 2:
                continue
            for name, model in models.items():
                model.train()
                loss = attribute_loss(model(x[rows]), y[rows], list(specs))
                optims[name].zero_grad(set_to_none=True)
                loss.backward()
                optims[name].step()
    out: dict[str, Any] = {}
    with torch.no_grad():
        for name, model in models.items():
            model.eval()
            pred = predictions(model(val_x), list(specs)).cpu().numpy()
            truth = val_y.cpu().numpy()
            out[name] = {s.name: balanced_accuracy(truth[:, i], pred[:, i]) for i, s in enumerate(specs)}
    per_attr = {s.name: max(out[k][s.name] for k in models) for s in specs}
    out["leakage"] = float(np.mean(list(per_attr.values())))
    return out


def select_epoch(history: Sequence[dict[str, Any]], reference_utility: float, max_utility_drop: float) -> dict[str, Any]:
    """The candidate (``{"epoch", "utility", "leakage", ...}``) with the lowest leakage among those with utility
    >= reference - max_utility_drop (ties: higher utility, then earlier); if none qualifies, the most useful one."""
    if not history:
        raise ValueError("select_epoch: no audited epochs to choose from")
    floor = reference_utility - max_utility_drop
    eligible = [h for h in history if h["utility"] >= floor - 1e-12 and h.get("leakage") is not None]
    if eligible:
        best = min(eligible, key=lambda h: (h["leakage"], -h["utility"]))
        return {**best, "rule": f"lowest audit leakage with utility >= {floor:.4f}", "eligible": len(eligible)}
    best = max(history, key=lambda h: h["utility"])
    return {**best, "rule": f"no epoch kept utility >= {floor:.4f}: the most useful one", "eligible": 0}
