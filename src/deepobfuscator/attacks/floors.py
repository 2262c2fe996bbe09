"""Floors: what an attacker gets without the defence's help. Every attack number is read against them.

- Label floor: balanced accuracy of the best predictor of a private attribute from the intended
  labels alone (computed on the evaluation split), since part of the private attribute is implied
  by the intended one.
- Oracle floor: the ``oracle`` attribute attacker (see :mod:`.attribute`) reads the deployed C's
  logits: what any representation serving the task must leak.
- Reconstruction floor: the best constant image (the mean face, the median face, or one optimised
  for MS-SSIM on the attackers' training images), scored like any reconstructor.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..progress import progress_bar
from ..data import AttributeSpec
from ..losses import reconstruction_loss
from ..metrics import majority_rate
from .base import AttackContext, AttackData, Evaluation, attacker_seed
from .features import FeatureSet
from .reconstruction import evaluate_reconstruction, from_uint8, score_images, to_uint8

CONSTANT_MODES = ("mean", "median", "msssim")


def larger_floor(entry: dict[str, Any]) -> float | None:
    """The floor a private attribute's best attacker is read against: the larger of its label floor and its oracle
    floor, both as measured at the entry's own repeat count m (C's answers averaged as the features are); None when
    neither was measured. ``entry`` is a privacy record of attack.json, at m = 1 or under ``repeated``."""
    values = [(entry.get(key) or {}).get("balanced_accuracy") for key in ("label_floor", "oracle_floor")]
    values = [float(v) for v in values if v is not None]
    return max(values) if values else None


def label_floor(private: np.ndarray, intended: np.ndarray) -> dict[str, Any]:
    """Best balanced accuracy of any rule predicting ``private`` labels ``[N]`` from intended labels ``[N, T]``.

    Balanced accuracy is a sum over cells of intended labels, so the best rule assigns each cell the class
    ``k`` with the largest share ``n(cell, k) / n_k`` of that class; classes absent from ``private`` are
    ignored (as scikit-learn's balanced accuracy does).
    """
    private = np.asarray(private).astype(np.int64)
    intended = np.asarray(intended).astype(np.int64).reshape(len(private), -1)
    classes, class_counts = np.unique(private, return_counts=True)
    if len(private) == 0:
        return {"balanced_accuracy": None, "accuracy": None, "majority_rate": None, "n": 0, "rule": {}}
    cells, cell_of = np.unique(intended, axis=0, return_inverse=True)
    cell_of = np.asarray(cell_of).reshape(-1)
    table = np.zeros((len(cells), len(classes)))
    for c_i, k_i in zip(cell_of, np.searchsorted(classes, private)):
        table[c_i, k_i] += 1
    share = table / class_counts[None, :]
    choice = share.argmax(axis=1)
    ba = float(share[np.arange(len(cells)), choice].sum() / len(classes))
    pred = classes[choice][cell_of]
    rule = {",".join(str(int(v)) for v in cell): int(classes[k]) for cell, k in zip(cells, choice)}
    return {"balanced_accuracy": round(ba, 6), "accuracy": round(float((pred == private).mean()), 6),
            "majority_rate": round(majority_rate(private), 6), "n": int(len(private)), "rule": rule}


def label_floors(test: FeatureSet, private_specs: list[AttributeSpec], task_specs: list[AttributeSpec]
                 ) -> dict[str, dict[str, Any]]:
    """:func:`label_floor` of every private attribute from every intended attribute labelled in ``test``."""
    names = [s.name for s in task_specs if s.name in test.attributes]
    if not names:
        return {}
    intended = np.stack([test.labels(n) for n in names], axis=1)
    return {spec.name: {**label_floor(test.labels(spec.name), intended), "from": names} for spec in private_specs}


def _images(features: FeatureSet, batch_size: int) -> np.ndarray:
    """All raw images of a set as uint8 ``[N, H, W, 3]`` (set order)."""
    return np.concatenate([to_uint8(features.image_tensor(np.arange(i, min(i + batch_size, len(features)))))
                           for i in range(0, len(features), batch_size)])


def mean_msssim(image: torch.Tensor, images: torch.Tensor, ctx: AttackContext) -> float:
    """Mean MS-SSIM of one image ``[1, 3, H, W]`` against each of ``images``."""
    out = []
    for i in range(0, len(images), ctx.settings.eval_batch_size):
        batch = images[i:i + ctx.settings.eval_batch_size]
        out.append(score_images(image.expand(len(batch), -1, -1, -1), batch, ctx)[0])
    return float(np.concatenate(out).mean())


def optimise_constant(train: torch.Tensor, start: torch.Tensor, ctx: AttackContext, seed: int) -> torch.Tensor:
    """One image ``[1, 3, H, W]`` maximising mean MS-SSIM to random batches of ``train`` images, from ``start``."""
    z = torch.logit(start.clamp(0.01, 0.99)).to(ctx.device).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=0.05)
    rng = np.random.default_rng(seed)
    s = ctx.settings
    for _ in progress_bar(range(s.constant_steps), desc="constant image", disable=not ctx.progress, leave=False):
        batch = train[rng.choice(len(train), size=min(s.batch_size, len(train)), replace=False)].to(ctx.device)
        image = torch.sigmoid(z)
        loss = reconstruction_loss(image.expand(len(batch), -1, -1, -1), batch, "msssim", ctx.msssim)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return torch.sigmoid(z).detach().cpu()


def best_constant(train: torch.Tensor, val: torch.Tensor, ctx: AttackContext, seed: int, mode: str
                  ) -> tuple[torch.Tensor, dict[str, Any]]:
    """The constant image of ``mode``: the mean or median of ``train``, or (``msssim``) the best by mean
    MS-SSIM on ``val`` among the mean face, the median face and an MS-SSIM-optimised image."""
    if mode not in CONSTANT_MODES:
        raise ValueError(f"constant image mode must be one of {', '.join(CONSTANT_MODES)}, got {mode!r}")
    mean = train.mean(0, keepdim=True)
    median = train.median(0, keepdim=True).values
    if mode == "mean":
        return mean, {"chosen": "mean"}
    if mode == "median":
        return median, {"chosen": "median"}
    candidates = {"mean": mean, "median": median, "optimised": optimise_constant(train, mean, ctx, seed)}
    scores = {name: mean_msssim(img, val, ctx) for name, img in candidates.items()}
    chosen = max(scores, key=lambda k: scores[k])
    return candidates[chosen], {"chosen": chosen, "val_ms_ssim": {k: round(v, 6) for k, v in scores.items()}}


class ConstantImage:
    """A reconstruction floor: the same image for every query, whatever the features."""

    kind = "reconstruction"
    floor = True

    def __init__(self, name: str, mode: str, description: str) -> None:
        self.name, self.mode, self.description = name, mode, description
        self.image: torch.Tensor | None = None

    def settings(self, ctx: AttackContext) -> dict[str, Any]:
        """Settings that change this floor."""
        s = ctx.settings
        return {"mode": self.mode, "max_train_images": s.max_train_images, "val_fraction": s.val_fraction,
                "steps": s.constant_steps if self.mode == "msssim" else None,
                "batch_size": s.batch_size if self.mode == "msssim" else None}

    def fit(self, data: AttackData, ctx: AttackContext, seed: int) -> dict[str, Any]:
        """Compute the constant image from the attackers' training images (choice on their validation part)."""
        bs = ctx.settings.eval_batch_size
        train = from_uint8(_images(data.train, bs))
        val = from_uint8(_images(data.val, bs)) if self.mode == "msssim" else train[:0]
        self.image, record = best_constant(train, val, ctx, attacker_seed(seed, self.name), self.mode)
        return {**record, "train_images": len(train), "val_images": len(val)}

    def evaluate(self, data: AttackData, ctx: AttackContext, seed: int) -> Evaluation:
        """Score the constant image as the reconstruction of every evaluation image."""
        if self.image is None:
            raise ValueError(f"attacker '{self.name}' is not fitted")
        image = self.image.to(ctx.device)
        return evaluate_reconstruction(lambda feats: image.expand(len(feats), -1, -1, -1), data, ctx,
                                       desc=f"evaluate {self.name}")

    def state(self) -> tuple[nn.Module, dict[str, Any]] | None:
        """The constant image as a parameter-only module, and its spec."""
        if self.image is None:
            return None
        holder = nn.Module()
        holder.register_buffer("image", self.image.clone())
        return holder, {"kind": self.kind, "constant": self.mode, "shape": list(self.image.shape)}
